"""Training never loses finished work and never saves a broken model."""
import math
import os
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest

from reid_baseline import errors
from reid_baseline.engine import hooks, loop, run_folder
from reid_baseline.engine.checkpoint import CheckpointError, last_checkpoint, list_checkpoints

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _epochs(run_dir):
    return [r["epoch"] for r in run_folder.read_metrics(str(run_dir))]


def _params(path):
    return {k: v.asnumpy() for k, v in mx.nd.load(str(path)).items()}


@pytest.mark.slow
def test_an_evaluation_error_keeps_the_epochs_checkpoint_and_its_training_metrics(
        make_small_cfg, tmp_path, monkeypatch):
    def broken_evaluation(*args, **kwargs):
        raise RuntimeError("evaluation failed")

    monkeypatch.setattr(hooks, "evaluate_retrieval", broken_evaluation)
    cfg = make_small_cfg(tmp_path, "SOLVER.MAX_EPOCHS", "2", "SOLVER.EVAL_PERIOD", "1")
    with pytest.raises(RuntimeError, match="evaluation failed"):
        loop.train(cfg)
    assert last_checkpoint(str(tmp_path)).endswith("epoch_0001")
    assert run_folder.read_metrics(str(tmp_path))[0]["loss"] > 0
    monkeypatch.undo()
    assert [r["epoch"] for r in loop.train(cfg, resume=True)] == [2]
    assert _epochs(tmp_path) == [1, 2] and "rank1" in run_folder.read_metrics(str(tmp_path))[1]


@pytest.mark.slow
def test_a_run_stopped_before_its_first_checkpoint_restarts_with_resume(make_small_cfg, tmp_path):
    cfg = make_small_cfg(tmp_path, "SOLVER.MAX_EPOCHS", "1")
    loop.train(cfg)
    for name in list_checkpoints(str(tmp_path)) + ["last"]:  # as if killed before the first save
        path = tmp_path / "checkpoints" / name
        os.system("rm -rf '%s'" % path)
    os.remove(tmp_path / "model_final.params")
    with pytest.raises(errors.RunDirError, match="already holds a run: continue it with --resume"):
        loop.train(cfg)
    assert [r["epoch"] for r in loop.train(cfg, resume=True)] == [1]
    assert _epochs(tmp_path) == [1]  # the earlier row was replaced, not repeated
    assert "no checkpoint in" in (tmp_path / "train.log").read_text()


@pytest.mark.slow
def test_resume_passes_over_a_damaged_checkpoint_and_drops_the_later_metrics_rows(
        make_small_cfg, tmp_path):
    cfg = make_small_cfg(tmp_path, "SOLVER.MAX_EPOCHS", "2", "SOLVER.KEEP_CHECKPOINTS", "0")
    loop.train(cfg)
    assert list_checkpoints(str(tmp_path)) == ["epoch_0001", "epoch_0002"]
    os.remove(tmp_path / "model_final.params")  # a run stopped before its final params
    damaged = tmp_path / "checkpoints" / "epoch_0002" / "model.params"
    damaged.write_bytes(damaged.read_bytes()[:1000])
    os.makedirs(tmp_path / "checkpoints" / "epoch_0002.damaged")  # from an earlier resume
    assert [r["epoch"] for r in loop.train(cfg, resume=True)] == [2]
    assert _epochs(tmp_path) == [1, 2]
    log = (tmp_path / "train.log").read_text()
    assert "epoch_0002 is damaged: model.params has 1000 bytes" in log
    assert "resumed from %s at epoch 2" % (tmp_path / "checkpoints" / "epoch_0001") in log
    assert os.path.isfile(tmp_path / "checkpoints" / "epoch_0002.damaged2" / "model.params")
    assert list_checkpoints(str(tmp_path))[-1] == "epoch_0002"


@pytest.mark.slow
def test_every_checkpoint_damaged_is_an_error_not_a_silent_restart(make_small_cfg, tmp_path):
    cfg = make_small_cfg(tmp_path, "SOLVER.MAX_EPOCHS", "1")
    loop.train(cfg)
    os.remove(tmp_path / "model_final.params")  # a run stopped before its final params
    (tmp_path / "checkpoints" / "epoch_0001" / "state.json").write_text('{"epoch": 1, "opti')
    with pytest.raises(CheckpointError, match="every checkpoint in .* is damaged"):
        loop.train(cfg, resume=True)


@pytest.mark.slow
def test_weights_broken_by_the_last_step_are_never_saved(make_small_cfg, tmp_path, monkeypatch):
    real_average = loop._average_running_stats
    epochs_done = []

    def break_weights_in_epoch_2(net, ctx):  # runs after an epoch's last optimizer step
        real_average(net, ctx)
        epochs_done.append(1)
        if len(epochs_done) == 2:
            net.classifier.weight.data()[0, 0] = float("nan")

    monkeypatch.setattr(loop, "_average_running_stats", break_weights_in_epoch_2)
    cfg = make_small_cfg(tmp_path, "SOLVER.MAX_EPOCHS", "2")
    first = os.path.join(str(tmp_path), "checkpoints", "epoch_0001")
    with pytest.raises(errors.TrainingDiverged, match="weights became non-finite after 2 epochs.*"
                       "classifier.weight.*resume from %s with --resume" % first):
        loop.train(cfg)
    assert list_checkpoints(str(tmp_path)) == ["epoch_0001"]
    assert not os.path.exists(tmp_path / "model_final.params")


@pytest.mark.slow
def test_an_exploding_loss_stops_the_run_before_anything_is_saved(make_tiny_cfg, tmp_path):
    # Adam at 1e6: the loss reaches ~1e14 without becoming NaN.
    cfg = make_tiny_cfg(tmp_path, "SOLVER.MAX_EPOCHS", "2", "SOLVER.BASE_LR", "1e6")
    with pytest.raises(errors.TrainingDiverged, match="training collapsed: mean loss .* at epoch 1, "
                       "iteration 4 exceeds SOLVER.COLLAPSE_FACTOR x ln.classes. = 10.4.*no "
                       "checkpoint was saved yet"):
        loop.train(cfg)
    assert list_checkpoints(str(tmp_path)) == []
    assert not os.path.exists(tmp_path / "model_final.params")


def test_collapse_guard_threshold(make_tiny_cfg, tmp_path):
    guard = loop.DivergenceGuard(make_tiny_cfg(tmp_path), 32, str(tmp_path))
    limit = 3 * math.log(32)  # 10.397
    guard.check(limit - 0.01, 0, 1)
    for bad in (limit + 0.01, float("inf"), float("nan")):
        with pytest.raises(errors.TrainingDiverged):
            guard.check(bad, 0, 1)
    off = loop.DivergenceGuard(make_tiny_cfg(tmp_path, "SOLVER.COLLAPSE_FACTOR", "0"), 32, str(tmp_path))
    off.check(1e30, 0, 1)
    with pytest.raises(errors.TrainingDiverged, match="became nan"):
        off.check(float("nan"), 0, 1)


@pytest.mark.slow
def test_the_same_config_gives_the_same_run_with_loader_workers_and_after_resume(make_small_cfg, tmp_path):
    """Shuffle and augmentation depend on (seed, epoch, image) only."""
    straight = make_small_cfg(tmp_path / "a", "SOLVER.MAX_EPOCHS", "2", "DATALOADER.NUM_WORKERS", "2")
    loop.train(straight)
    split = make_small_cfg(tmp_path / "b", "SOLVER.MAX_EPOCHS", "1")
    loop.train(split)
    split = make_small_cfg(tmp_path / "b", "SOLVER.MAX_EPOCHS", "2")
    loop.train(split, resume=True)
    a, b = _params(tmp_path / "a" / "model_final.params"), _params(tmp_path / "b" / "model_final.params")
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert run_folder.read_metrics(str(tmp_path / "a"))[1]["loss"] == run_folder.read_metrics(str(tmp_path / "b"))[1]["loss"]


@pytest.mark.slow
def test_an_output_dir_that_cannot_be_created_is_one_line(make_tiny_cfg, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    cfg = make_tiny_cfg(blocker / "run", "SOLVER.MAX_EPOCHS", "1")
    with pytest.raises(errors.RunDirError, match="OUTPUT_DIR .*a_file/run cannot be written"):
        loop.train(cfg)
    config = tmp_path / "tiny.yml"
    config.write_text(cfg.dump())
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--config", str(config)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "cannot be written" in proc.stderr


@pytest.mark.slow
def test_a_collapse_late_in_an_epoch_is_not_diluted_by_its_healthy_start(
        make_small_cfg, small_toy, tmp_path, monkeypatch):
    softmax_ce = loop.gluon.loss.SoftmaxCrossEntropyLoss()  # made before the patch below
    calls = []
    steps = small_toy["train_images"] // 32  # 3 at batch 32
    assert steps == 3

    class LateCollapse(loop.gluon.HybridBlock):
        """The real loss, times 5 from the epoch's last iteration (3) on."""

        def hybrid_forward(self, F, pred, label):
            calls.append(1)
            return softmax_ce(pred, label) * (5.0 if len(calls) >= steps else 1.0)

    monkeypatch.setattr(loop.gluon.loss, "SoftmaxCrossEntropyLoss", LateCollapse)
    # Reads at iterations 2 and 3 (SOLVER.LOG_PERIOD 2, and the last): the last window is
    # iteration 3 alone, mean ~12.4 > 3 ln 12 = 7.45, while the epoch's mean, ~5.8, would pass.
    with pytest.raises(errors.TrainingDiverged, match="epoch 1, iteration 3 exceeds"):
        loop.train(make_small_cfg(tmp_path, "SOLVER.MAX_EPOCHS", "1", "SOLVER.LOG_PERIOD", "2"))
    assert list_checkpoints(str(tmp_path)) == []


def _failing_writes(run_dir, monkeypatch, target):
    """Make every write to `target` (train.log or metrics.jsonl) fail as on a full disk."""
    class FullDisk:
        def __init__(self, real):
            self.real = real

        def write(self, text):
            raise OSError(28, "No space left on device")

        def writelines(self, lines):
            raise OSError(28, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.real.close()

        def __getattr__(self, name):
            return getattr(self.real, name)

    if target == "train.log":
        real_setup = run_folder.setup_logging

        def setup(folder):
            real_setup(folder)
            for handler in run_folder.logger.handlers:
                if isinstance(handler, run_folder.logging.FileHandler):
                    handler.stream = FullDisk(handler.stream)
        monkeypatch.setattr(run_folder, "setup_logging", setup)
    else:
        real_open = open

        def full_open(path, *args, **kwargs):
            f = real_open(path, *args, **kwargs)
            mode = args[0] if args else kwargs.get("mode", "r")
            writes = any(c in mode for c in "wax+")  # reading the rows back still works
            return FullDisk(f) if writes and os.path.basename(str(path)).startswith(target) else f
        monkeypatch.setattr("builtins.open", full_open)


@pytest.mark.parametrize("target", ["train.log", "metrics.jsonl"])
@pytest.mark.slow
def test_a_full_disk_under_the_log_or_the_metrics_is_one_line(make_small_cfg, tmp_path, monkeypatch, target):
    _failing_writes(str(tmp_path), monkeypatch, target)
    with pytest.raises((errors.RunDirError, errors.OutputError),
                       match="cannot write %s: .*No space left on device"
                       % os.path.join(str(tmp_path), target)):
        loop.train(make_small_cfg(tmp_path, "SOLVER.MAX_EPOCHS", "1"))
