"""Multi-machine training (SOLVER.KVSTORE dist_sync), run as real jobs of MXNet's parameter
server on this machine: scheduler, server and workers started by scripts/launch_local.py."""
import json
import os
import re
import signal
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon

from conftest import TINY_OVERRIDES
from reid_baseline.config import ConfigError, load_config
from reid_baseline.data.loader import EpochShuffleSampler, build_train_loader
from reid_baseline.environment import check_launcher_env, launcher_worker_count

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = [sys.executable, os.path.join(ROOT, "scripts", "launch_local.py")]
TRAIN = [sys.executable, os.path.join(ROOT, "train.py")]
JOB_ENV = dict(os.environ, OMP_NUM_THREADS="1")  # two workers share the machine's cores
LAUNCHER_ENV = {"DMLC_ROLE": "worker", "DMLC_PS_ROOT_URI": "127.0.0.1", "DMLC_PS_ROOT_PORT": "9000",
                "DMLC_NUM_SERVER": "1", "DMLC_NUM_WORKER": "2"}


def _started_by(pid):
    """(pid, start time) of every live process whose parent is `pid`, from /proc."""
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                children.append((int(entry), fields[19]))
    return children


def _stop_job(proc, grace=30):
    """Test cleanup (in `finally`): stop a launch_local job still running and everything it
    started. The launcher stops its job on SIGTERM; the processes it started (each in its own
    process group) are killed if still there, checked by start time so no other is."""
    if proc.poll() is not None:
        return
    started = _started_by(proc.pid)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for pid, start in started:
        try:
            with open("/proc/%d/stat" % pid) as f:
                same = f.read().rsplit(")", 1)[1].split()[19] == start
            if same:
                os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass


def _run_job(command, timeout=240):
    """Run a command to its end (a CompletedProcess-like result); the job is stopped in any
    case, also when the test fails or times out."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=ROOT, env=JOB_ENV)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(command, proc.returncode, out, "")
    finally:
        _stop_job(proc)


def _launch(overrides, workers=2, timeout=240):
    return _run_job(LAUNCH + ["--workers", str(workers), "--servers", "1", "--"] + TRAIN
                    + overrides, timeout)


def test_shards_are_disjoint_equal_slices_of_the_one_process_batches():
    one = EpochShuffleSampler(70, seed=3, batch_size=8)
    shards = [EpochShuffleSampler(70, seed=3, batch_size=8, num_shards=2, shard=r) for r in (0, 1)]
    for sampler in [one] + shards:
        sampler.epoch = 4
    keys = list(one)
    assert len(keys) == len(one) == 64 and all(4 * 70 <= k < 5 * 70 for k in keys)
    parts = [list(s) for s in shards]
    assert [len(p) for p in parts] == [len(s) for s in shards] == [32, 32]
    # batch b of one process = worker 0's batch b followed by worker 1's
    for b in range(8):
        assert keys[8 * b:8 * b + 8] == parts[0][4 * b:4 * b + 4] + parts[1][4 * b:4 * b + 4]
    shards[0].epoch = 5
    assert set(shards[0]) != {k + 70 for k in parts[0]}  # reshuffled every epoch


def test_launcher_environment_checks():
    assert launcher_worker_count("dist_sync", LAUNCHER_ENV) == 2
    assert launcher_worker_count("device", LAUNCHER_ENV) == 1
    assert launcher_worker_count("dist_sync", {}) == 1  # e.g. evaluate.py on a dist run's config
    check_launcher_env("dist_device_sync", LAUNCHER_ENV)
    check_launcher_env("device", {})
    env = dict(LAUNCHER_ENV, DMLC_PS_ROOT_PORT="")
    with pytest.raises(ConfigError, match="DMLC_PS_ROOT_PORT is not set.*launch_local.py --workers 2"):
        check_launcher_env("dist_sync", env)
    with pytest.raises(ConfigError, match="one of 2 workers .* SOLVER.KVSTORE is device"):
        check_launcher_env("device", LAUNCHER_ENV)
    with pytest.raises(ConfigError, match="DMLC_NUM_WORKER must be a number >= 1"):
        check_launcher_env("dist_sync", dict(LAUNCHER_ENV, DMLC_NUM_WORKER="two"))


def test_the_global_batch_is_split_over_workers_and_devices(monkeypatch):
    for key, value in LAUNCHER_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DMLC_NUM_WORKER", "3")
    with pytest.raises(ConfigError, match=r"SOLVER.BATCH_SIZE \(32, the global batch\) must be "
                       r"divisible by the 3 workers x 1 devices"):
        load_config(None, ["SOLVER.KVSTORE", "dist_sync"])
    monkeypatch.setenv("DMLC_NUM_WORKER", "2")
    with pytest.raises(ConfigError, match=r"BN_GROUP_SIZE \(16\) must divide the per-device batch "
                       r"\(SOLVER.BATCH_SIZE 32 / 2 workers x 2 devices = 8\)"):
        load_config(None, ["SOLVER.KVSTORE", "dist_sync", "GPUS", "[0, 1]", "MODEL.BN_GROUP_SIZE", "16"])
    assert load_config(None, ["MODEL.BN_GROUP_SIZE", "16"]).MODEL.BN_GROUP_SIZE == 16  # device: 1 worker


@pytest.mark.slow
def test_dist_sync_without_the_launcher_is_a_one_line_error(tmp_path):
    env = {k: v for k, v in JOB_ENV.items() if not k.startswith("DMLC_")}
    proc = subprocess.run(TRAIN + ["SOLVER.KVSTORE", "dist_sync", "OUTPUT_DIR", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: SOLVER.KVSTORE dist_sync makes this process one worker")
    assert "scripts/launch_local.py --workers 2" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not os.listdir(tmp_path)  # nothing started


@pytest.fixture(scope="module")
def tiny_train_set(tmp_path_factory):
    """36 training images: one batch of 32 per epoch."""
    from reid_baseline.data.toy.market1501 import make_toy_market1501
    return make_toy_market1501(str(tmp_path_factory.mktemp("toy36")), num_train_ids=4, num_test_ids=4,
                               cameras_per_id=(3, 3), num_distractors=4, num_junk=2, seed=1)["root"]


@pytest.mark.timeout(900)
@pytest.mark.slow
def test_one_step_of_two_workers_equals_one_process_on_the_whole_batch(tiny_train_set, tmp_path):
    """2 workers x 16 images vs an independent one-process computation on the same 32: the
    gradients of the two halves (each half its own BatchNorm batch, as on its worker) summed
    and normalised by 32, one SGD step; BatchNorm running statistics averaged over the halves.
    SGD, not Adam: Adam's first step moves every weight by +-lr whatever the gradient's size,
    so float rounding in near-zero gradients would move some weights by 2 lr either way."""
    overrides = TINY_OVERRIDES + [
        "DATASETS.ROOT", tiny_train_set, "MODEL.BN_GROUP_SIZE", "0", "SOLVER.MAX_EPOCHS", "1",
        "SOLVER.WARMUP_EPOCHS", "0", "SOLVER.STEPS", "[]", "SOLVER.OPTIMIZER", "sgd",
        "SOLVER.MOMENTUM", "0.0", "SOLVER.WEIGHT_DECAY", "0.0", "SOLVER.BASE_LR", "0.01"]
    run = _launch(overrides + ["OUTPUT_DIR", str(tmp_path / "dist"), "SOLVER.KVSTORE", "dist_sync"])
    assert run.returncode == 0, run.stdout[-3000:]
    got = mx.nd.load(str(tmp_path / "dist" / "model_final.params"))

    from reid_baseline.data.datasets import build_datasets
    from reid_baseline.engine.loop import seed_everything
    from reid_baseline.modeling.network import build_model
    cfg = load_config(None, overrides + ["OUTPUT_DIR", str(tmp_path / "one")])
    dataset = build_datasets(cfg)
    loader = build_train_loader(cfg, dataset.train)
    loader.set_epoch(0)
    (data, label), = list(loader)
    seed_everything(cfg.SOLVER.SEED)  # as engine.train: the same initial weights
    start = build_model(cfg, dataset.num_train_pids, [mx.cpu()])
    with autograd.record():
        start(data[:16])  # completes the deferred shapes; no backward: nothing changes
    start.save_parameters(str(tmp_path / "start.params"))
    grads, stats = [], []
    for half in (slice(0, 16), slice(16, 32)):
        net = build_model(cfg, dataset.num_train_pids, [mx.cpu()])
        net(data[half])
        net.load_parameters(str(tmp_path / "start.params"))
        with autograd.record():
            loss = gluon.loss.SoftmaxCrossEntropyLoss()(net(data[half])[0], label[half])
        loss.backward()
        params = net._collect_params_with_prefix()
        grads.append({k: p.grad().asnumpy() for k, p in params.items() if p.grad_req != "null"})
        stats.append({k: p.data().asnumpy() for k, p in params.items() if p.grad_req == "null"})
    initial = mx.nd.load(str(tmp_path / "start.params"))
    assert set(got) == set(initial)
    for name in got:
        if name in grads[0]:
            expected = initial[name].asnumpy() - 0.01 * (grads[0][name] + grads[1][name]) / 32
        else:
            expected = (stats[0][name] + stats[1][name]) / 2
        np.testing.assert_allclose(got[name].asnumpy(), expected, rtol=0, atol=1e-5, err_msg=name)
    assert np.abs(got["classifier.weight"].asnumpy() - initial["classifier.weight"].asnumpy()).max() > 1e-4


@pytest.fixture(scope="module")
def two_worker_run(make_tiny_cfg, toy_market_root, tmp_path_factory):
    """2 workers, 1 server, 2 epochs on the toy set, evaluated at the end: (run dir, process)."""
    run_dir = str(tmp_path_factory.mktemp("dist_run"))
    overrides = TINY_OVERRIDES + ["DATASETS.ROOT", toy_market_root, "OUTPUT_DIR", run_dir,
                                  "SOLVER.KVSTORE", "dist_sync", "SOLVER.EVAL_PERIOD", "2"]
    return run_dir, overrides, _launch(overrides + ["SOLVER.MAX_EPOCHS", "2"])


@pytest.mark.slow
def test_two_workers_train_with_one_writer(two_worker_run):
    from reid_baseline.data.datasets import build_datasets
    from reid_baseline.evaluation.evaluator import record_ids
    from reid_baseline.evaluation.protocol import chance_rank1
    run_dir, overrides, proc = two_worker_run
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert sorted(os.listdir(run_dir)) == [".reid_baseline.lock", ".reid_baseline_outputs.json",
                                           "checkpoints", "config.yaml", "curves.png", "metrics.jsonl",
                                           "model_final.params", "train.log", "worker_1.log"]
    assert sorted(os.listdir(os.path.join(run_dir, "checkpoints"))) == ["epoch_0001", "epoch_0002", "last"]
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    assert [r["epoch"] for r in records] == [1, 2] and "rank1" in records[1]
    dataset = build_datasets(load_config(None, overrides))
    (q_pids, q_cams), (g_pids, g_cams) = record_ids(dataset.query), record_ids(dataset.gallery)
    chance = 100 * chance_rank1(q_pids, g_pids, q_cams, g_cams)  # 2.3 on this set
    assert records[1]["rank1"] > 10 * chance
    worker_log = open(os.path.join(run_dir, "worker_1.log")).read()
    assert "worker 1 of 2" in worker_log and "epoch 2:" in worker_log
    assert "worker 0 of 2" in open(os.path.join(run_dir, "train.log")).read()
    # Both workers logged the same (global) training figures.
    loss = re.search(r"epoch 2: lr \S+, loss (\S+)", worker_log).group(1)
    assert "loss %s" % loss in open(os.path.join(run_dir, "train.log")).read()


@pytest.mark.timeout(1200)
@pytest.mark.slow
def test_resume_of_a_two_worker_run_continues_at_the_next_epoch(two_worker_run, tmp_path):
    import shutil

    run_dir, overrides, first = two_worker_run
    assert first.returncode == 0
    copy = str(tmp_path / "copy")  # the shared run folder stays as the other tests read it
    shutil.copytree(run_dir, copy)
    proc = _run_job(LAUNCH + ["--workers", "2", "--"] + TRAIN + ["--resume"] + overrides
                    + ["OUTPUT_DIR", copy, "SOLVER.MAX_EPOCHS", "3", "SOLVER.EVAL_PERIOD", "0"])
    assert proc.returncode == 0, proc.stdout[-3000:]
    with open(os.path.join(copy, "metrics.jsonl")) as f:
        assert [json.loads(line)["epoch"] for line in f] == [1, 2, 3]
    assert "resumed from %s at epoch 3" % os.path.join(copy, "checkpoints", "epoch_0002") in proc.stdout
    assert open(os.path.join(copy, "worker_1.log")).read().count("resumed from") == 1
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        assert [json.loads(line)["epoch"] for line in f] == [1, 2]  # the original untouched


@pytest.mark.timeout(600)
@pytest.mark.slow
def test_a_killed_worker_stops_the_job_and_is_named(small_toy_root, tmp_path):
    proc = subprocess.Popen(LAUNCH + ["--workers", "2", "--grace", "5", "--"] + TRAIN + TINY_OVERRIDES + [
        "DATASETS.ROOT", small_toy_root, "OUTPUT_DIR", str(tmp_path), "SOLVER.KVSTORE", "dist_sync",
        "SOLVER.MAX_EPOCHS", "20"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        cwd=ROOT, env=JOB_ENV)
    try:
        lines = []
        for line in proc.stdout:  # wait until both workers train
            lines.append(line)
            if "distributed training" in line:
                break
        pid = int(re.search(r"worker 1 \(pid (\d+)\)", "".join(lines)).group(1))
        os.kill(pid, signal.SIGKILL)
        # The job stops by itself (a generous bound: 20 epochs would take many minutes).
        rest, _ = proc.communicate(timeout=180)
        assert proc.returncode == 1
        assert "launch_local: worker 1 (pid %d) was killed by signal SIGKILL; stopped the 3 " \
               "other processes of the job" % pid in rest
        assert "epoch 20:" not in "".join(lines) + rest  # stopped, not trained to the end
    finally:
        _stop_job(proc)
