"""Command lines: options anywhere among the overrides, --ablation, one-line errors with exit
status 2, and a demo that never deletes a folder it did not write."""
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


def test_demo_replaces_only_a_folder_that_holds_its_marker(tmp_path):
    from reid_baseline.errors import RunDirError

    demo = _demo_module()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes").write_text("n")
    with pytest.raises(RunDirError, match="pick another OUTPUT_DIR or remove it by hand"):
        demo.claim_output_dir(str(mine))
    assert (mine / "notes").read_text() == "n" and sorted(os.listdir(mine)) == ["notes"]

    run_dir = tmp_path / "run"
    demo.claim_output_dir(str(run_dir))  # a new folder is created and marked
    (run_dir / "model_final.params").write_text("old")
    demo.claim_output_dir(str(run_dir))  # an earlier demo run is replaced
    assert os.listdir(run_dir) == [demo.MARKER]

    empty = tmp_path / "empty"
    empty.mkdir()
    demo.claim_output_dir(str(empty))  # an existing empty folder is fine to use
    assert os.listdir(empty) == [demo.MARKER]


def test_demo_refuses_a_folder_it_did_not_write_before_any_work(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes").write_text("n")
    data = tmp_path / "toy"
    proc = _script(os.path.join("scripts", "demo.py"), "OUTPUT_DIR", str(mine),
                   "DATASETS.ROOT", str(data))
    _one_error_line(proc, "OUTPUT_DIR %s is not empty and is not an earlier demo run: pick "
                          "another OUTPUT_DIR or remove it by hand" % mine)
    assert (mine / "notes").read_text() == "n" and sorted(os.listdir(mine)) == ["notes"]
    assert not data.exists()  # refused before generating the toy set


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
