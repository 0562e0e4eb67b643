"""Mixed precision (SOLVER.AMP): bfloat16 on the CPU through mxnet.contrib.amp.

amp.init changes MXNet for the whole process and cannot be undone, so every test that starts
AMP runs train.py in a subprocess; the tests here that stay in-process never call amp.init."""
import json
import os
import subprocess
import sys

import mxnet as mx
import pytest

from conftest import TINY_OVERRIDES
from reid_baseline.engine.amp import (
    CountingLossScaler,
    init_amp,
    loss_scaler_state,
    restore_loss_scaler,
)
from reid_baseline.engine.checkpoint import last_checkpoint
from reid_baseline.engine.devices import DeviceError
from reid_baseline.engine.run_folder import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _parameter_with_gradient(value):
    param = mx.gluon.Parameter("w", shape=(3,))
    param.initialize(ctx=mx.cpu())
    param.grad()[:] = value
    return param


def test_the_loss_scaler_counts_skipped_steps_and_halves_the_scale_on_overflow():
    scaler = CountingLossScaler()
    assert not scaler.has_overflow([_parameter_with_gradient(1.0)])
    assert scaler.has_overflow([_parameter_with_gradient(float("inf"))])
    assert scaler.has_overflow([_parameter_with_gradient(float("nan"))])
    assert scaler.skipped == 2
    assert scaler._next_loss_scale == 2.0 ** 16 / 4  # halved once per skipped step


def test_loss_scaler_state_round_trips_through_json():
    trainer = mx.gluon.Trainer([_parameter_with_gradient(1.0)], "adam")
    trainer._amp_loss_scaler = CountingLossScaler()
    trainer._amp_loss_scaler.has_overflow([_parameter_with_gradient(float("inf"))])
    state = json.loads(json.dumps(loss_scaler_state(trainer)))
    fresh = mx.gluon.Trainer([_parameter_with_gradient(1.0)], "adam")
    fresh._amp_loss_scaler = CountingLossScaler()
    restore_loss_scaler(fresh, state, "checkpoint")
    assert loss_scaler_state(fresh) == {"loss_scale": 2.0 ** 16, "next_loss_scale": 2.0 ** 15,
                                        "unskipped": 0, "skipped": 1}


@pytest.mark.parametrize("mode, ctx, needs", [("float16", [mx.cpu()], "needs GPUs"),
                                              ("bfloat16", [mx.gpu(0)], "CPU only")])
def test_amp_type_and_device_mismatch_is_an_error_before_amp_starts(make_tiny_cfg, tmp_path,
                                                                      mode, ctx, needs):
    cfg = make_tiny_cfg(tmp_path, "SOLVER.AMP", mode)
    with pytest.raises(DeviceError, match=needs):
        init_amp(cfg, ctx)


def _train(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "train.py")] + list(args),
                          capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, OMP_NUM_THREADS="2"))


@pytest.mark.slow
@pytest.mark.timeout(600)  # bfloat16 is emulated on CPUs without native support
def test_bfloat16_training_learns_and_resume_restores_the_loss_scale(toy_market_root, tmp_path):
    run = str(tmp_path / "run")
    common = TINY_OVERRIDES + ["DATASETS.ROOT", toy_market_root, "OUTPUT_DIR", run,
                               "SOLVER.AMP", "bfloat16", "SOLVER.EVAL_PERIOD", "2",
                               "SOLVER.WARMUP_EPOCHS", "0"]  # learns in 2 epochs: kept short
    done = _train(*common + ["SOLVER.MAX_EPOCHS", "2"])
    assert done.returncode == 0, done.stderr[-3000:]
    rows = read_metrics(run)
    assert rows[-1]["loss"] < rows[0]["loss"] and rows[-1]["amp_skipped_steps"] == 0
    assert rows[-1]["rank1"] > 3 * 2.3  # chance Rank-1 on the toy set is 2.3%
    # A scale no fresh scaler has: after resuming, the next checkpoint must carry it on.
    state_path = os.path.join(last_checkpoint(run), "state.json")
    with open(state_path) as f:
        state = json.load(f)
    assert state["loss_scaler"]["loss_scale"] == 2.0 ** 16
    state["loss_scaler"].update(loss_scale=1024.0, next_loss_scale=1024.0)
    with open(state_path, "w") as f:
        json.dump(state, f)
    resumed = _train(*common + ["SOLVER.MAX_EPOCHS", "3", "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    with open(os.path.join(last_checkpoint(run), "state.json")) as f:
        assert json.load(f)["loss_scaler"]["loss_scale"] == 1024.0
    assert [r["epoch"] for r in read_metrics(run)] == [1, 2, 3]


def test_distances_stay_float32_after_amp_rewrote_mxnets_operators():
    code = ("import numpy as np\n"
            "from reid_baseline.engine.amp import init_amp\n"
            "from reid_baseline.config import load_config\n"
            "from reid_baseline.evaluation.distances import compute_distance\n"
            "import mxnet as mx\n"
            "init_amp(load_config(None, ['SOLVER.AMP', 'bfloat16', 'GPUS', '[]']), [mx.cpu()])\n"
            "rng = np.random.RandomState(0)\n"
            "q, g = rng.rand(5, 64).astype('f'), rng.rand(9, 64).astype('f')\n"
            "ref = np.sqrt(((q[:, None].astype('d') - g[None]) ** 2).sum(-1))\n"
            "print(np.abs(compute_distance(q, g, 'euclidean') - ref).max())\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout.split()[-1]) < 1e-4  # bfloat16 would be off by about 1e-2
