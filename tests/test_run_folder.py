"""reid_baseline.engine.run_folder: the run's files, what a stopped write leaves, and what a resume
may change."""
import os

import mxnet as mx
import pytest

from reid_baseline.config import load_config
from reid_baseline.engine import checkpoint, loop, run_folder
from reid_baseline.errors import OutputError, RunDirError


def _cfg(run_dir, *overrides):
    return load_config(None, ["OUTPUT_DIR", str(run_dir), "GPUS", "[]"] + list(overrides))


def _started_run(run_dir, *overrides):
    """A run folder as training leaves it after one epoch (config.yaml, one metrics row)."""
    cfg = _cfg(run_dir, *overrides)
    run_folder.open_run_folder(cfg, resume=False)
    run_folder.write_metrics_row(str(run_dir), {"epoch": 1, "loss": 2.0})
    return cfg


def test_metrics_rows_append_replace_and_truncate(tmp_path):
    run = str(tmp_path)
    assert run_folder.read_metrics(run) == []
    for epoch in (1, 2, 3):
        run_folder.write_metrics_row(run, {"epoch": epoch, "loss": 1.0 / epoch})
    run_folder.write_metrics_row(run, {"epoch": 3, "loss": 0.3, "rank1": 50.0}, replace_last=True)
    run_folder.write_metrics_row(run, {"epoch": 4, "loss": 0.25}, replace_last=True)  # a new epoch
    assert [r.get("rank1") for r in run_folder.read_metrics(run)] == [None, None, 50.0, None]
    run_folder.keep_metrics_until(run, 2)
    assert (tmp_path / "metrics.jsonl").read_text() == (
        '{"epoch": 1, "loss": 1.0}\n{"epoch": 2, "loss": 0.5}\n')
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"note": "a line of mine"}\n')  # a user's line is never dropped
    with pytest.raises(OutputError, match="metrics.jsonl exists and is not a file the package"):
        run_folder.write_metrics_row(run, {"epoch": 3, "loss": 0.3})
    assert "a line of mine" in (tmp_path / "metrics.jsonl").read_text()


def test_which_changes_a_resume_allows():
    saved = _cfg("runs/a")
    changes, refused = run_folder.config_differences(saved, _cfg(
        "runs/a", "SOLVER.BATCH_SIZE", "16", "SOLVER.EVAL_PERIOD", "5", "SOLVER.MAX_EPOCHS", "90",
        "DATALOADER.NUM_WORKERS", "0", "SOLVER.KEEP_CHECKPOINTS", "0", "SOLVER.LOG_PERIOD", "7",
        "SOLVER.TENSORBOARD", "True", "INPUT.PAD", "0", "GPUS", "auto",
        "DATASETS.ROOT", "data/other"))
    assert changes["SOLVER.BATCH_SIZE"] == (32, 16) and changes["GPUS"] == ([], "auto")
    # Another data folder may hold other people under the same labels: refused.
    assert sorted(refused) == ["DATASETS.ROOT", "INPUT.PAD", "SOLVER.BATCH_SIZE"]
    # Two devices instead of one halve each device's BatchNorm batch, unless groups fix it.
    assert run_folder.config_differences(saved, _cfg("runs/a", "GPUS", "[0, 1]"))[1] == ["GPUS"]
    assert run_folder.config_differences(
        _cfg("runs/a", "MODEL.BN_GROUP_SIZE", "8"),
        _cfg("runs/a", "MODEL.BN_GROUP_SIZE", "8", "GPUS", "[0, 1]"))[1] == []
    # A setting newer than the run's config.yaml counts as its default.
    older = {k: v for k, v in saved.items() if k != "SOLVER"}
    older["SOLVER"] = {k: v for k, v in saved.SOLVER.items() if k != "TENSORBOARD"}
    assert run_folder.config_differences(older, saved) == ({}, [])


def test_a_new_run_never_replaces_a_users_file_in_its_folder(tmp_path):
    from conftest import package_png
    (tmp_path / "curves.png").write_bytes(b"my own picture")
    with pytest.raises(OutputError, match="run file .*curves.png exists and is not a file the "
                       "package wrote"):
        run_folder.open_run_folder(_cfg(tmp_path), resume=False)
    assert (tmp_path / "curves.png").read_bytes() == b"my own picture"
    assert not (tmp_path / "config.yaml").exists()
    package_png(tmp_path / "curves.png")  # the package's own (an earlier attempt's) is fine
    run_folder.open_run_folder(_cfg(tmp_path), resume=False)


def test_resume_with_a_changed_recipe_is_an_error_listing_each_difference(tmp_path):
    _started_run(tmp_path)
    before = (tmp_path / "config.yaml").read_text()
    changed = _cfg(tmp_path, "SOLVER.BATCH_SIZE", "16", "SOLVER.BASE_LR", "0.001",
                   "SOLVER.EVAL_PERIOD", "2")
    with pytest.raises(RunDirError) as info:
        run_folder.open_run_folder(changed, resume=True)
    message = str(info.value)
    assert "SOLVER.BATCH_SIZE: 32 -> 16" in message and "SOLVER.BASE_LR: 0.00035 -> 0.001" in message
    assert "EVAL_PERIOD" not in message and "\n" not in message
    assert (tmp_path / "config.yaml").read_text() == before
    assert not (tmp_path / "config_changes.jsonl").exists()


def test_resume_with_safe_changes_records_them_and_keeps_the_history(tmp_path):
    _started_run(tmp_path)
    run_folder.open_run_folder(_cfg(tmp_path, "SOLVER.EVAL_PERIOD", "2"), resume=True)
    second = _cfg(tmp_path, "SOLVER.EVAL_PERIOD", "2", "SOLVER.MAX_EPOCHS", "100",
                  "DATALOADER.NUM_WORKERS", "0")
    run_folder.open_run_folder(second, resume=True)
    run_folder.open_run_folder(second, resume=True)  # no change: nothing recorded
    history = run_folder.read_config_changes(str(tmp_path))
    assert [entry["changes"] for entry in history] == [
        {"SOLVER.EVAL_PERIOD": {"old": 0, "new": 2}},
        {"SOLVER.MAX_EPOCHS": {"old": 80, "new": 100}, "DATALOADER.NUM_WORKERS": {"old": 4, "new": 0}}]
    assert all(entry["logged_epochs"] == 1 and entry["time"] for entry in history)
    assert load_config(str(tmp_path / "config.yaml")) == second  # evaluate.py reads it
    log = (tmp_path / "train.log").read_text()
    assert "resumed with SOLVER.MAX_EPOCHS: 80 -> 100" in log


def test_temporaries_of_stopped_writes_are_tidied_and_nothing_else(tmp_path):
    ckpts = tmp_path / "checkpoints"
    for folder in ("epoch_0001", "epoch_0002.tmp", "epoch_0003_interrupted.tmp", "epoch_0001.old",
                   "epoch_0004.old"):
        os.makedirs(ckpts / folder)
        (ckpts / folder / "model.params").write_bytes(folder.encode())
    for name in ("checkpoints/last.tmp", "checkpoints/last.tmp4242", "metrics.jsonl.tmp17",
                 "config.yaml.tmp3", "model_final.params.tmp9", "notes.tmp",
                 "checkpoints/mine.tmp", "metrics.jsonl"):
        (tmp_path / name).write_text("x")
    tidied = checkpoint.remove_stale_checkpoint_temporaries(str(tmp_path))
    tidied += run_folder.remove_stale_run_temporaries(str(tmp_path))
    assert len(tidied) == 9
    # epoch_0004.old had been moved aside before its replacement was in place: put back.
    assert (ckpts / "epoch_0004" / "model.params").read_bytes() == b"epoch_0004.old"
    assert (ckpts / "epoch_0001" / "model.params").read_bytes() == b"epoch_0001"
    assert sorted(os.listdir(ckpts)) == ["epoch_0001", "epoch_0004", "mine.tmp"]
    assert sorted(os.listdir(tmp_path)) == ["checkpoints", "metrics.jsonl", "notes.tmp"]


def test_curves_of_a_run_without_epochs_is_one_error_naming_it(tmp_path):
    with pytest.raises(RunDirError, match="no finished epoch in the run folder %s" % tmp_path):
        run_folder.write_run_curves(str(tmp_path))
    with pytest.raises(RunDirError, match="run folder %s does not exist" % (tmp_path / "none")):
        run_folder.write_run_curves(str(tmp_path / "none"))


@pytest.mark.timeout(900)
@pytest.mark.slow
def test_ctrl_c_while_a_checkpoint_is_written_keeps_the_metrics_and_no_temporaries(
        make_small_cfg, tmp_path, monkeypatch):
    real_save = mx.nd.save
    stopped = []

    def ctrl_c_in_the_second_checkpoint(path, data):
        if "epoch_0002.tmp" in path and not stopped:
            stopped.append(path)
            raise KeyboardInterrupt
        real_save(path, data)

    monkeypatch.setattr(checkpoint.mx.nd, "save", ctrl_c_in_the_second_checkpoint)
    cfg = make_small_cfg(tmp_path, "SOLVER.MAX_EPOCHS", "3")
    with pytest.raises(KeyboardInterrupt):
        loop.train(cfg)
    assert stopped, "the checkpoint write was not reached"
    assert [r["epoch"] for r in run_folder.read_metrics(str(tmp_path))] == [1, 2]
    leftovers = [os.path.join(d, n) for d, dirs, files in os.walk(str(tmp_path))
                 for n in dirs + files if ".tmp" in n or n.endswith(".old")]
    assert leftovers == []
    assert checkpoint.list_checkpoints(str(tmp_path)) == ["epoch_0001", "epoch_0002_interrupted"]
    monkeypatch.undo()
    assert [r["epoch"] for r in loop.train(cfg, resume=True)] == [3]
    assert [r["epoch"] for r in run_folder.read_metrics(str(tmp_path))] == [1, 2, 3]
    log = (tmp_path / "train.log").read_text()
    assert "resumed from %s at epoch 3" % (tmp_path / "checkpoints" / "epoch_0002_interrupted") in log


def test_train_keeps_a_users_config_and_metrics_lines(make_tiny_cfg, tmp_path, monkeypatch,
                                                      capsys):
    from conftest import run_script
    from reid_baseline.config import save_config
    run = tmp_path / "run"
    run.mkdir()
    config = str(tmp_path / "tiny.yml")
    save_config(make_tiny_cfg(run, "SOLVER.MAX_EPOCHS", "1"), config)
    (run / "config.yaml").write_text("# my hand-written notes\n")
    code, out, err = run_script(monkeypatch, capsys, "train.py", "--config", config)
    assert code == 2 and len(err.splitlines()) == 1 and "--overwrite" not in err
    assert "run file %s exists" % (run / "config.yaml") in err
    assert (run / "config.yaml").read_text() == "# my hand-written notes\n"
    (run / "config.yaml").unlink()
    (run / "metrics.jsonl").write_text('{"note": "mine"}\n')
    code, out, err = run_script(monkeypatch, capsys, "train.py", "--config", config)
    assert code == 2 and "run file %s exists" % (run / "metrics.jsonl") in err
    assert (run / "metrics.jsonl").read_text() == '{"note": "mine"}\n'


def test_resume_without_the_runs_config_is_refused(tmp_path):
    _started_run(tmp_path)
    (tmp_path / "config.yaml").unlink()
    with pytest.raises(RunDirError) as info:
        run_folder.open_run_folder(_cfg(tmp_path, "SOLVER.BATCH_SIZE", "16"), resume=True)
    assert str(info.value) == ("--resume: the run's %s is missing, so there is nothing to "
                               "compare this config with; restore it, or train into another "
                               "OUTPUT_DIR" % (tmp_path / "config.yaml"))


def test_resume_and_plot_run_keep_a_users_curves(tmp_path, monkeypatch, capsys):
    from conftest import run_script
    _started_run(tmp_path)
    (tmp_path / "curves.png").write_bytes(b"my own picture")
    with pytest.raises(OutputError, match="curves.png exists"):
        run_folder.open_run_folder(_cfg(tmp_path), resume=True)
    code, out, err = run_script(monkeypatch, capsys, "scripts/plot_run.py", str(tmp_path))
    assert code == 2 and err.splitlines() == [
        "error: curves.png %s exists and is not a file the package wrote (or was changed "
        "since); choose another name or pass --overwrite" % (tmp_path / "curves.png")]
    assert (tmp_path / "curves.png").read_bytes() == b"my own picture"
    code, out, err = run_script(monkeypatch, capsys, "scripts/plot_run.py", str(tmp_path),
                                "--overwrite")
    assert code == 0, err
    code, out, err = run_script(monkeypatch, capsys, "scripts/plot_run.py", str(tmp_path))
    assert code == 0, err  # now the package's own


@pytest.mark.timeout(120)
def test_a_run_folder_another_process_writes_is_refused_naming_it(make_tiny_cfg, tmp_path):
    from conftest import lock_held_by_another_process
    cfg = make_tiny_cfg(tmp_path, "SOLVER.MAX_EPOCHS", "1")
    with lock_held_by_another_process(tmp_path) as pid:
        with pytest.raises(RunDirError, match=r"OUTPUT_DIR %s is being written by another "
                           r"process \(PID %d\)" % (tmp_path, pid)):
            loop.train(cfg)
    assert not (tmp_path / "config.yaml").exists()
