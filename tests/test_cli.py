"""Command lines: options anywhere among the overrides, --ablation, one-line errors with exit
status 2, and a demo that never deletes a file it did not write."""
import importlib.util
import os
import subprocess
import sys

import pytest

from reid_baseline.cli import build_parser, config_from_args, run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = os.path.join(ROOT, "configs", "demo_toy.yml")


def _script(*args):
    """Run a repository script (path relative to ROOT) and return the finished process."""
    return subprocess.run([sys.executable] + [os.path.join(ROOT, args[0])] + list(args[1:]),
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, OMP_NUM_THREADS="2"))


def _one_error_line(proc, message):
    """The process failed with exit status 2 and printed exactly `error: message`."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == ["error: " + message]


def _train_args(argv):
    parser = build_parser("train")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    return args, config_from_args(args)


@pytest.mark.parametrize("argv", [
    ["--config", TOY, "SOLVER.MAX_EPOCHS", "2", "--resume"],
    ["--resume", "SOLVER.MAX_EPOCHS", "2", "--config", TOY],
    ["SOLVER.MAX_EPOCHS", "2", "--config", TOY, "--resume"],
    ["--config", TOY, "INPUT.PAD", "0", "--resume", "SOLVER.MAX_EPOCHS", "2"],
])
def test_options_may_come_before_between_or_after_the_overrides(argv):
    args, cfg = _train_args(argv)
    assert args.resume is True and cfg.SOLVER.MAX_EPOCHS == 2
    assert cfg.DATASETS.ROOT == "data/toy_market1501"  # --config was applied too


def test_ablation_option_applies_only_the_knobs_of_the_file():
    _, cfg = _train_args(["--config", TOY, "--ablation",
                          os.path.join(ROOT, "configs", "ablations", "no_pad_crop.yml")])
    assert cfg.INPUT.PAD == 0 and cfg.INPUT.HEIGHT == 128
    assert cfg.OUTPUT_DIR == os.path.join("runs/demo_toy_ablations", "no_pad_crop")


def test_negative_override_value_reaches_the_range_check():
    proc = _script("train.py", "--config", TOY, "SOLVER.BASE_LR", "-1", "--resume")
    _one_error_line(proc, "SOLVER.BASE_LR must be > 0, got -1.0")


def test_out_of_range_input_size_is_one_line_not_a_worker_traceback():
    proc = _script("train.py", "--config", TOY, "INPUT.HEIGHT", "0")
    _one_error_line(proc, "INPUT.HEIGHT must be >= 16, got 0")


def test_unknown_option_is_an_error_not_an_override():
    proc = _script("train.py", "--config", TOY, "SOLVER.MAX_EPOCHS", "2", "--resmue")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "train.py: error: unknown option --resmue"


def test_help_lists_the_options_and_the_overrides():
    proc = _script("train.py", "--help")
    assert proc.returncode == 0
    for word in ("--config", "--ablation", "--gpus", "--resume", "KEY VALUE"):
        assert word in proc.stdout


def test_a_failed_file_operation_is_one_line_naming_the_path(capsys):
    def main():
        raise PermissionError(13, "Permission denied", "/runs/x/model_final.params")

    with pytest.raises(SystemExit) as exit_:
        run(main)
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "error: Permission denied: /runs/x/model_final.params\n"


def test_prepare_script_user_error_exits_2_with_one_line(tmp_path):
    missing = str(tmp_path / "nothere.zip")
    proc = _script(os.path.join("scripts", "prepare_dataset.py"), "market1501", "--out",
                   str(tmp_path), "--zip", missing)
    _one_error_line(proc, "%s: zip file does not exist" % missing)


def _demo_module():
    spec = importlib.util.spec_from_file_location("demo", os.path.join(ROOT, "scripts", "demo.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _package_checkpoint(run_dir, epoch):
    """A checkpoint folder as save_checkpoint writes it (files and state.json digests)."""
    import hashlib
    import json
    folder = run_dir / "checkpoints" / ("epoch_%04d" % epoch)
    folder.mkdir(parents=True)
    files = {}
    for name in ("model.params", "optimizer.nd"):
        data = ("%s of epoch %d" % (name, epoch)).encode()
        (folder / name).write_bytes(data)
        files[name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (folder / "state.json").write_text(json.dumps({
        "epoch": epoch, "interrupted": False, "learning_rate": 0.1, "loss_scaler": None,
        "optimizer": {"layout": []}, "files": files}))
    (run_dir / "checkpoints" / "last").write_text("epoch_%04d\n" % epoch)
    return folder


def test_demo_removes_only_the_package_files_of_an_earlier_run(tmp_path):
    from reid_baseline.config import load_config
    from reid_baseline.errors import RunDirError
    from reid_baseline.fileio import write_output

    demo = _demo_module()
    run_dir = tmp_path / "run"
    cfg = load_config(TOY, ["OUTPUT_DIR", str(run_dir)])
    demo.claim_output_dir(cfg)  # a new folder is created, marked as a demo run's
    assert sorted(os.listdir(run_dir)) == sorted([demo.DEMO_MARKER, ".reid_baseline_outputs.json"])
    for name in ("config.yaml", "metrics.jsonl", "model_final.params", "results.json",
                 "results_dukemtmc.json", "cmc.png", "model.onnx"):
        write_output(str(run_dir / name), name)  # the package's own files
    (run_dir / "ranklists").mkdir()
    write_output(str(run_dir / "ranklists" / "worst_01_query00003.png"), "png")
    (run_dir / "ranklists" / "my_pick.png").write_text("mine")
    (run_dir / "notes.txt").write_text("mine")
    (run_dir / "results_mine.json").write_text("mine")
    _package_checkpoint(run_dir, 20)
    demo.claim_output_dir(cfg)
    # the run's files and evaluations go; an exported model, the user's files stay
    left = {os.path.relpath(os.path.join(d, f), run_dir) for d, _, fs in os.walk(run_dir)
            for f in fs if f != ".reid_baseline_outputs.json"}
    assert left == {"model.onnx", "notes.txt", "results_mine.json", demo.DEMO_MARKER,
                    os.path.join("ranklists", "my_pick.png")}
    from reid_baseline.fileio import written_outputs
    assert set(written_outputs(str(run_dir))) == {"model.onnx", demo.DEMO_MARKER}

    # a user's file under a name the demo writes, or in its checkpoints: refused, nothing removed
    write_output(str(run_dir / "metrics.jsonl"), "rows")
    (run_dir / "config.yaml").write_text("mine")
    with pytest.raises(RunDirError, match="%s is not a file the package wrote" % (
            run_dir / "config.yaml")):
        demo.claim_output_dir(cfg)
    assert (run_dir / "metrics.jsonl").is_file()
    os.remove(run_dir / "config.yaml")
    folder = _package_checkpoint(run_dir, 5)
    (folder / "optimizer.nd").write_bytes(b"changed")  # no longer what state.json records
    with pytest.raises(RunDirError, match="%s is not a checkpoint file" % folder):
        demo.claim_output_dir(cfg)
    assert (run_dir / "metrics.jsonl").is_file() and folder.is_dir()
    (run_dir / "config.yaml").write_text("mine")
    demo.claim_output_dir(cfg, overwrite=True)  # the user asked for it
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "config.yaml").exists()
    assert (run_dir / "notes.txt").read_text() == "mine"


def test_demo_never_removes_a_run_it_did_not_start(tmp_path):
    from reid_baseline.config import load_config
    from reid_baseline.errors import RunDirError
    from reid_baseline.fileio import write_output

    demo = _demo_module()
    run_dir = tmp_path / "market1501"  # a run train.py wrote: the package's files, no marker
    run_dir.mkdir()
    for name in ("config.yaml", "metrics.jsonl", "model_final.params"):
        write_output(str(run_dir / name), name)
    _package_checkpoint(run_dir, 20)
    before = sorted(os.listdir(run_dir))
    cfg = load_config(TOY, ["OUTPUT_DIR", str(run_dir)])
    for overwrite in (False, True):
        with pytest.raises(RunDirError, match="holds a run that the demo did not start"):
            demo.claim_output_dir(cfg, overwrite)
    assert sorted(os.listdir(run_dir)) == before
    assert (run_dir / "model_final.params").read_text() == "model_final.params"


def test_demo_refuses_a_users_file_under_its_names_before_any_work(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "results.json").write_text("n")
    data = tmp_path / "toy"
    proc = _script(os.path.join("scripts", "demo.py"), "OUTPUT_DIR", str(mine),
                   "DATASETS.ROOT", str(data))
    _one_error_line(proc, "OUTPUT_DIR %s: %s is not a file the package wrote (or was changed "
                          "since) and a demo run writes that name; move it away or pass "
                          "--overwrite" % (mine, mine / "results.json"))
    assert (mine / "results.json").read_text() == "n" and os.listdir(mine) == ["results.json"]
    assert not data.exists()  # refused before generating the toy set


@pytest.mark.timeout(900)
@pytest.mark.slow
def test_a_demo_rerun_keeps_the_users_files(small_toy_root, tmp_path, monkeypatch, capsys):
    import json

    from conftest import TINY_OVERRIDES, run_script
    run_dir = tmp_path / "demo"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("my notes")
    (run_dir / "model.onnx").write_bytes(b"my exported model")
    tiny = TINY_OVERRIDES + ["DATASETS.ROOT", small_toy_root, "OUTPUT_DIR", run_dir,
                             "SOLVER.MAX_EPOCHS", "2", "SOLVER.EVAL_PERIOD", "0"]
    for _ in range(2):  # a first run beside the user's files, then a re-run over its own
        code, out, err = run_script(monkeypatch, capsys, "scripts/demo.py", *tiny)
        assert code == 0, err
        assert (run_dir / "notes.txt").read_text() == "my notes"
        assert (run_dir / "model.onnx").read_bytes() == b"my exported model"
        # one checkpoint kept (configs/demo_toy.yml), one run's rows
        assert sorted(os.listdir(run_dir / "checkpoints")) == ["epoch_0002", "last"]
        rows = (run_dir / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(r)["epoch"] for r in rows] == [1, 2]
    assert "replacing the previous demo run" in out
    assert json.loads((run_dir / "results.json").read_text())["num_query"] > 0


@pytest.mark.slow
def test_demo_config_error_is_one_line(tmp_path):
    proc = _script(os.path.join("scripts", "demo.py"), "OUTPUT_DIR", str(tmp_path / "run"),
                   "SOLVER.BASE_LR", "-1")
    _one_error_line(proc, "SOLVER.BASE_LR must be > 0, got -1.0")
    assert not (tmp_path / "run").exists()


def test_file_names_that_are_not_utf8_print_without_an_error(capsysbinary):
    name = os.fsdecode(b"skipped p\xff.jpg")
    run(lambda: print(name))
    assert capsysbinary.readouterr().out == b"skipped p\xff.jpg\n"
