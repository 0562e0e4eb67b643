"""Ablation studies: the write-up's classes, the report, and a tiny study that runs,
skips its finished runs on a second call and resumes an interrupted run."""
import importlib.util
import json
import os

import matplotlib.image
import mxnet as mx
import pytest

from conftest import TINY_OVERRIDES
from reid_baseline import errors
from reid_baseline.ablation import study as ablation
from reid_baseline.ablation.report import build_report, effect_class, render_markdown
from reid_baseline.config import ConfigError, load_config, save_config
from reid_baseline.engine import loop, run_folder
from reid_baseline.evaluation import evaluator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ABLATIONS = os.path.join(ROOT, "configs", "ablations")
NO_PAD_CROP, NO_TEST_FLIP, RELU, NO_WARMUP = (
    os.path.join(ABLATIONS, name + ".yml")
    for name in ("no_pad_crop", "no_test_flip", "relu_feature", "no_warmup"))


@pytest.mark.parametrize("gain, label", [
    (0.0, "no change"), (0.49, "small gain"), (-0.49, "small loss"),
    (0.5, "medium gain"), (-0.5, "medium loss"),  # 0.5 is medium
    (93.1 - 92.6, "medium gain"),  # 0.5000000000000142 in floats: still exactly the bound
    (2.0, "medium gain"), (-2.0, "medium loss"),  # 2 is medium too
    (2.01, "large gain"), (-2.01, "large loss"),
    (2.5, "large gain"),  # removing the trick cost 2.5 points (base - ablation): a large gain
])
def test_the_write_ups_classes_and_their_bounds(gain, label):
    assert effect_class(gain)["label"] == label
    assert effect_class(gain)["resolved"] is None  # no spread measured


def test_a_gain_below_the_spread_is_not_resolved():
    assert effect_class(-1.0, spread=1.2)["label"] == "medium loss, not resolved"
    assert effect_class(-1.0, spread=1.0)["label"] == "medium loss"  # equal: resolved
    assert effect_class(2.5, spread=0.3)["resolved"] is True


def _tiny(root, *more):
    return TINY_OVERRIDES + ["DATASETS.ROOT", root] + list(more)


def test_plan_gives_each_repeat_its_seed_and_folder_and_refuses_bad_studies(tmp_path):
    study = ablation.plan_study(None, [NO_PAD_CROP], repeats=2, out=str(tmp_path))
    assert [(r.name, r.seed) for r in study.runs] == [
        ("recipe", 613), ("recipe", 614), ("no_pad_crop", 613), ("no_pad_crop", 614)]
    assert study.runs[3].cfg.OUTPUT_DIR == os.path.join(str(tmp_path), "no_pad_crop", "seed614")
    assert study.runs[3].cfg.SOLVER.SEED == 614 and study.runs[3].cfg.INPUT.PAD == 0
    assert study.runs[1].cfg.INPUT.PAD == 10 and study.changes["no_pad_crop"] == {"INPUT.PAD": 0}
    with pytest.raises(ConfigError, match="no_pad_crop changes nothing"):
        ablation.plan_study(None, [NO_PAD_CROP], overrides=["INPUT.PAD", "0"])
    with pytest.raises(ConfigError, match="no_pad_crop given twice"):
        ablation.plan_study(None, [NO_PAD_CROP, NO_PAD_CROP])
    with pytest.raises(ConfigError, match="--repeats must be >= 1"):
        ablation.plan_study(None, [NO_PAD_CROP], repeats=0)


def test_a_run_folder_trained_with_another_config_is_refused(tmp_path):
    run = ablation.plan_study(None, [NO_PAD_CROP], out=str(tmp_path)).runs[0]
    os.makedirs(run.cfg.OUTPUT_DIR)
    save_config(load_config(None, ["GPUS", "[0]", "OUTPUT_DIR", "elsewhere"]),
                os.path.join(run.cfg.OUTPUT_DIR, "config.yaml"))
    ablation.check_run_folders([run])  # another device or folder name: the same run
    # Two devices to one changes the BatchNorm batches: refused here as --resume refuses it.
    save_config(load_config(None, ["GPUS", "[0,1]"]),
                os.path.join(run.cfg.OUTPUT_DIR, "config.yaml"))
    with pytest.raises(ConfigError, match=r"trained with GPUS = \[0, 1\], the study asks for"):
        ablation.check_run_folders([run])
    save_config(load_config(None, ["INPUT.WIDTH", "64"]),
                os.path.join(run.cfg.OUTPUT_DIR, "config.yaml"))
    with pytest.raises(ConfigError, match="trained with INPUT.WIDTH = 64, the study asks for 128"):
        ablation.check_run_folders([run])


def test_results_files_count_only_when_complete(tmp_path):
    path = str(tmp_path / "results.json")
    assert ablation.read_results(path) is None
    evaluator.save_results({"rank1": 90.0, "mAP_trapezoid": 80.0}, path)  # no mAP_noninterp
    assert ablation.read_results(path) is None
    from reid_baseline.fileio import write_output
    write_output(path, '{"rank1": 90.0, "mAP_trapezoid": 80.0, "mAP_noninterp"', True)  # cut
    assert ablation.read_results(path) is None
    evaluator.save_results({"rank1": 90.0, "mAP_trapezoid": 80.0, "mAP_noninterp": 81.0}, path)
    assert ablation.read_results(path)["mAP_noninterp"] == 81.0


def _done(rank1, map_trapezoid):
    return {"status": "trained", "error": None, "results": {
        "rank1": rank1, "mAP_trapezoid": map_trapezoid, "mAP_noninterp": map_trapezoid + 1}}


def test_report_on_hand_made_results(tmp_path):
    study = ablation.plan_study(None, [NO_PAD_CROP, RELU, NO_WARMUP], repeats=2,
                                out=str(tmp_path))
    outcomes = {("recipe", 613): _done(90.0, 80.0), ("recipe", 614): _done(91.0, 80.4),
                ("no_pad_crop", 613): _done(87.0, 76.0), ("no_pad_crop", 614): _done(88.0, 76.4),
                ("relu_feature", 613): _done(90.0, 80.2), ("relu_feature", 614): _done(90.2, 80.2),
                ("no_warmup", 613): _done(92.5, 79.0),
                ("no_warmup", 614): {"status": "failed", "results": None,
                                     "error": "TrainingDiverged: loss became nan"}}
    report = build_report(study, outcomes)
    base = report["configs"][0]["summary"]
    assert base["rank1"]["mean"] == 90.5 and base["rank1"]["spread"] == 1.0
    assert base["mAP_noninterp"]["mean"] == pytest.approx(81.2)
    pad, relu, warmup = report["effects"]
    # Removing pad-crop cost 90.5 - 87.5 = 3 points (> the spread 1.0): a large gain, as the
    # write-up and the reference code (+2.6) say.
    assert pad["rank1"]["gain"] == 3.0 and pad["rank1"]["label"] == "large gain"
    assert pad["mAP_trapezoid"]["label"] == "large gain"  # 80.2 - 76.2 = 4
    assert pad["agrees_writeup"] is True and pad["agrees_reference"] is True
    # 90.5 - 90.1 = 0.4 < the base's spread 1.0: not resolved, so no agreement either way.
    assert relu["rank1"]["label"] == "small gain, not resolved"
    assert relu["agrees_writeup"] is None and relu["agrees_reference"] is None
    # The failed repeat leaves one run: no spread measured, -2.0 is a medium loss, which
    # disagrees with the write-up's small gain.
    assert warmup["rank1"]["gain"] == -2.0 and warmup["rank1"]["resolved"] is None
    assert warmup["rank1"]["label"] == "medium loss" and warmup["agrees_writeup"] is False
    assert report["failed"] == ["no_warmup seed 614: TrainingDiverged: loss became nan"]
    text = render_markdown(report)
    assert "| recipe | (the base) | 2 of 2 | 90.5 (spread 1.0, 2 runs) |" in text
    assert "| no_warmup | `SOLVER.WARMUP_EPOCHS: 0` | 1 of 2 | 92.5 |" in text
    assert "| no_pad_crop | zero-pad 10 + random crop | +3.0 large gain |" in text
    assert "| +0.4 small gain, not resolved |" in text
    assert "small gain ✗" in text and "large gain ✓" in text


@pytest.fixture(scope="module")
def tiny_study(small_toy_root, tmp_path_factory):
    """Base + 2 ablations, 1 epoch each, on the small toy set: (out, report)."""
    out = str(tmp_path_factory.mktemp("study"))
    report = ablation.run_study(None, [RELU, NO_TEST_FLIP], 1, out,
                                _tiny(small_toy_root, "SOLVER.MAX_EPOCHS", "1"))
    return out, report


@pytest.mark.slow
def test_a_tiny_study_runs_end_to_end(tiny_study):
    out, report = tiny_study
    assert [r["status"] for c in report["configs"] for r in c["runs"]] == ["trained"] * 3
    results = {c: ablation.read_results(os.path.join(out, c, "seed613", "results.json"))
               for c in ("recipe", "relu_feature", "no_test_flip")}
    for effect in report["effects"]:
        for metric in ("rank1", "mAP_trapezoid", "mAP_noninterp"):
            gain = results["recipe"][metric] - results[effect["ablation"]][metric]
            assert effect[metric]["gain"] == pytest.approx(gain, abs=1e-6)
    with open(os.path.join(out, "report.json")) as f:
        assert json.load(f)["effects"] == report["effects"]
    assert "| no_test_flip | `TEST.FLIP_FEATURES: false` | 1 of 1 |" in open(
        os.path.join(out, "report.md"), encoding="utf-8").read()
    assert matplotlib.image.imread(os.path.join(out, "report.png")).shape[2] in (3, 4)
    # The base and each ablation share their seed: an evaluation-only ablation trained the very
    # same network as the base.
    base, same = (mx.nd.load(os.path.join(out, c, "seed613", "model_final.params"))
                  for c in ("recipe", "no_test_flip"))
    assert all((base[k] == same[k]).asnumpy().all() for k in base)


def test_a_second_call_skips_the_finished_runs(tiny_study, small_toy_root, monkeypatch):
    out, first = tiny_study

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished run was trained or evaluated again")

    monkeypatch.setattr(loop, "train", must_not_run)
    monkeypatch.setattr(evaluator, "evaluate_params", must_not_run)
    again = ablation.run_study(None, [RELU, NO_TEST_FLIP], 1, out,
                               _tiny(small_toy_root, "SOLVER.MAX_EPOCHS", "1"))
    assert [r["status"] for c in again["configs"] for r in c["runs"]] == ["finished earlier"] * 3
    assert again["effects"] == first["effects"] and again["failed"] == []


@pytest.mark.timeout(900)
@pytest.mark.slow
def test_an_interrupted_run_is_resumed(small_toy_root, tmp_path, monkeypatch):
    run = ablation.plan_study(None, [NO_TEST_FLIP], 1, str(tmp_path), _tiny(
        small_toy_root, "SOLVER.MAX_EPOCHS", "2", "SOLVER.WARMUP_EPOCHS", "1",
        "SOLVER.STEPS", "[2]")).runs[0]
    real_epoch, epochs = loop._train_epoch, []

    def ctrl_c_in_epoch_2(*args, **kwargs):
        epochs.append(1)
        if len(epochs) == 2:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(loop, "_train_epoch", ctrl_c_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        ablation.run_one(run)
    first = run_folder.read_metrics(run.cfg.OUTPUT_DIR)
    assert [r["epoch"] for r in first] == [1]
    monkeypatch.undo()
    outcome = ablation.run_one(run)
    assert outcome["status"] == "resumed" and outcome["results"]["rank1"] > 0
    metrics = run_folder.read_metrics(run.cfg.OUTPUT_DIR)
    assert [r["epoch"] for r in metrics] == [1, 2] and metrics[0] == first[0]  # not retrained
    assert "resumed from" in open(os.path.join(run.cfg.OUTPUT_DIR, "train.log")).read()


def test_a_failed_run_is_reported_the_others_go_on_and_the_command_fails(
        small_toy_root, tmp_path, monkeypatch, capsys):
    def fake_train(cfg, resume=False):
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
        if "no_warmup" in cfg.OUTPUT_DIR:
            raise errors.TrainingDiverged("training loss became nan at epoch 1, iteration 4")
        open(os.path.join(cfg.OUTPUT_DIR, "model_final.params"), "w").close()

    monkeypatch.setattr(loop, "train", fake_train)
    monkeypatch.setattr(evaluator, "evaluate_params", lambda cfg, params: {
        "rank1": 50.0, "mAP_trapezoid": 40.0, "mAP_noninterp": 41.0})
    spec = importlib.util.spec_from_file_location(
        "run_ablations", os.path.join(ROOT, "scripts", "run_ablations.py"))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    with pytest.raises(SystemExit) as stop:
        script.main(["--base", os.path.join(ROOT, "configs", "demo_toy.yml"), "--configs",
                     NO_WARMUP, NO_PAD_CROP, "DATASETS.ROOT", small_toy_root,
                     "--out", str(tmp_path)])
    assert "1 run(s) failed" in str(stop.value.code)  # a message: exit status 1
    report = json.load(open(tmp_path / "report.json"))
    assert [r["status"] for c in report["configs"] for r in c["runs"]] == [
        "trained", "failed", "trained"]
    assert report["failed"] == ["no_warmup seed 613: TrainingDiverged: training loss became "
                                "nan at epoch 1, iteration 4"]
    assert "## Failed runs" in (tmp_path / "report.md").read_text(encoding="utf-8")


def test_own_data_list_is_accepted_as_train_accepts_it(tmp_path, monkeypatch):
    """DATASETS.NAME folder with DATASETS.ROOT a CSV list: the study checks the data the way
    training loads it (no "no such folder"), and a missing root is the loader's own error."""
    from reid_baseline.data.datasets import build_datasets
    from reid_baseline.data.toy import make_toy_dataset
    from reid_baseline.errors import DatasetError

    make_toy_dataset("folder", str(tmp_path / "own"), seed=1, num_train_ids=4, num_test_ids=3,
                     images_per_id_per_camera=1)
    csv_root = str(tmp_path / "own" / "list.csv")
    trained = []

    def fake_train(cfg, resume=False):
        build_datasets(cfg)  # what loop.train loads first
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
        open(os.path.join(cfg.OUTPUT_DIR, "model_final.params"), "w").close()
        trained.append(cfg.OUTPUT_DIR)

    monkeypatch.setattr(loop, "train", fake_train)
    monkeypatch.setattr(evaluator, "evaluate_params", lambda cfg, params: {
        "rank1": 50.0, "mAP_trapezoid": 40.0, "mAP_noninterp": 41.0})
    base = os.path.join(ROOT, "configs", "demo_toy.yml")
    report = ablation.run_study(base, [NO_PAD_CROP], out=str(tmp_path / "study"),
                                overrides=["DATASETS.NAME", "folder", "DATASETS.ROOT", csv_root])
    assert report["failed"] == [] and len(trained) == 2
    missing = str(tmp_path / "own" / "nothere.csv")
    with pytest.raises(DatasetError) as info:
        ablation.run_study(base, [NO_PAD_CROP], out=str(tmp_path / "study2"),
                           overrides=["DATASETS.NAME", "folder", "DATASETS.ROOT", missing])
    with pytest.raises(DatasetError) as by_train:
        build_datasets(load_config(base, ["DATASETS.NAME", "folder", "DATASETS.ROOT", missing]))
    assert str(info.value) == str(by_train.value) == "%s: no such folder or CSV list file" % missing
    assert not os.path.exists(str(tmp_path / "study2"))


def test_a_study_keeps_a_users_report_files(tmp_path, monkeypatch):
    from reid_baseline.errors import OutputError
    from reid_baseline.fileio import write_output
    monkeypatch.setattr(loop, "train", lambda cfg, resume=False: pytest.fail("trained"))
    out = tmp_path / "study"
    out.mkdir()
    base = os.path.join(ROOT, "configs", "demo_toy.yml")
    for name in ("report.md", "report.json"):
        (out / name).write_text("my own notes")
        with pytest.raises(OutputError, match="ablation report %s exists" % (out / name)):
            ablation.run_study(base, [NO_PAD_CROP], out=str(out))
        assert (out / name).read_text() == "my own notes"
        write_output(str(out / name), "the package's", overwrite=True)  # its own: replaced
