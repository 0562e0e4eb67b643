"""evaluate.py and export_model.py outputs: results file names, unwritable outputs, progress."""
import glob
import json
import os
import shutil

import pytest

from conftest import package_png, run_script
from reid_baseline import progress
from reid_baseline.errors import OutputError
from reid_baseline.evaluation import features
from reid_baseline.evaluation.evaluator import results_path, save_results


@pytest.fixture
def run_copy(saved_model, tmp_path):
    """saved_model with the params copied into tmp_path, where the default results land."""
    config, params = saved_model
    shutil.copy(params, str(tmp_path))
    return config, str(tmp_path / "model_final.params")


@pytest.mark.timeout(600)
def test_evaluate_output_that_cannot_be_written(run_copy, tmp_path, monkeypatch, capsys):
    config, params = run_copy
    missing = tmp_path / "nope" / "results.json"
    code, out, err = run_script(monkeypatch, capsys, "evaluate.py", "--config", config,
                                 "--params", params, "--output", missing)
    # a missing folder is found before the evaluation
    assert code == 2 and out == ""
    assert err.splitlines() == ["error: results file %s: folder %s does not exist"
                                % (missing, missing.parent)]
    folder = tmp_path / "a_folder"
    folder.mkdir()
    code, out, err = run_script(monkeypatch, capsys, "evaluate.py", "--config", config,
                                 "--params", params, "--output", folder)
    assert code == 2 and out == ""  # before the evaluation, not after
    assert err.splitlines() == ["error: results file %s is a folder; expected a file name"
                                % folder]
    assert os.listdir(folder) == [] and sorted(os.listdir(tmp_path)) == ["a_folder",
                                                                         "model_final.params"]


@pytest.mark.timeout(900)
@pytest.mark.slow
def test_evaluate_never_replaces_a_users_file(run_copy, small_toy, tmp_path, monkeypatch, capsys):
    config, params = run_copy
    mine = tmp_path / "mine.json"
    mine.write_text('{"my": "notes"}')
    code, out, err = run_script(monkeypatch, capsys, "evaluate.py", "--config", config,
                                 "--params", params, "--output", mine)
    assert code == 2 and out == ""  # refused before the evaluation
    assert err.splitlines() == ["error: results file %s exists and is not a file the package "
                                "wrote (or was changed since); choose another name or pass "
                                "--overwrite" % mine]
    assert mine.read_text() == '{"my": "notes"}'
    # a results file the package wrote is replaced; a user's cmc.png beside it is not
    (tmp_path / "cmc.png").write_bytes(b"\x89PNG\r\n\x1a\n the user's plot")
    save_results({"rank1": 1.0}, str(tmp_path / "results.json"))
    code, out, err = run_script(monkeypatch, capsys, "evaluate.py", "--config", config,
                                 "--params", params)
    assert code == 2 and out == "" and "CMC plot %s exists" % (tmp_path / "cmc.png") in err
    assert json.loads((tmp_path / "results.json").read_text())["rank1"] == 1.0
    # one the package wrote (recorded in the folder's manifest) is replaced, and so are its
    # results; once a user edits it, it is the user's
    package_png(tmp_path / "cmc.png")
    code, out, err = run_script(monkeypatch, capsys, "evaluate.py", "--config", config,
                                 "--params", params)
    assert code == 0, err
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["num_query"] == small_toy["query_images"] and "written_by" not in results
    (tmp_path / "cmc.png").write_bytes((tmp_path / "cmc.png").read_bytes() + b"edited")
    code, out, err = run_script(monkeypatch, capsys, "evaluate.py", "--config", config,
                                 "--params", params)
    assert code == 2 and "CMC plot %s exists" % (tmp_path / "cmc.png") in err
    # a user's PNG among the rank lists that would be replaced
    ranklists = tmp_path / "ranklists"
    ranklists.mkdir()
    (ranklists / "worst_01_query00001.png").write_bytes(b"\x89PNG\r\n\x1a\n mine")
    package_png(tmp_path / "cmc.png")
    code, out, err = run_script(monkeypatch, capsys, "evaluate.py", "--config", config,
                                 "--params", params, "--visualize", "2")
    assert code == 2 and "rank list %s exists" % (ranklists / "worst_01_query00001.png") in err
    # --overwrite: the user asked for it
    code, out, err = run_script(monkeypatch, capsys, "evaluate.py", "--config", config,
                                 "--params", params, "--output", mine, "--visualize", "2",
                                 "--overwrite")
    assert code == 0, err
    assert json.loads(mine.read_text())["num_query"] == small_toy["query_images"]
    assert len(glob.glob(str(ranklists / "*.png"))) == 2


@pytest.mark.timeout(600)
@pytest.mark.slow
def test_rerank_results_do_not_overwrite_the_plain_results(run_copy, small_toy, tmp_path,
                                                          monkeypatch, capsys):
    config, params = run_copy
    (tmp_path / "results.json").write_text('{"rank1": 12.5}')
    code, out, err = run_script(monkeypatch, capsys, "evaluate.py", "--config", config,
                                 "--params", params, "TEST.RERANK", "True")
    assert code == 0, err
    assert json.loads((tmp_path / "results.json").read_text()) == {"rank1": 12.5}
    reranked = json.loads((tmp_path / "results_rerank.json").read_text())
    assert reranked["rerank"] is True and reranked["num_query"] == small_toy["query_images"]
    assert "wrote %s" % (tmp_path / "results_rerank.json") in out


def test_results_path_and_save_results(make_tiny_cfg, tmp_path):
    assert results_path(make_tiny_cfg(tmp_path), "runs/x") == os.path.join("runs/x", "results.json")
    assert results_path(make_tiny_cfg(tmp_path, "TEST.RERANK", "True"), "runs/x") == \
        os.path.join("runs/x", "results_rerank.json")
    path = str(tmp_path / "results.json")
    save_results({"rank1": 50.0}, path)
    with pytest.raises(TypeError):  # not JSON: the previous file stays whole, no .tmp left
        save_results({"rank1": object()}, path)
    assert json.loads(open(path).read()) == {"rank1": 50.0}
    assert sorted(os.listdir(tmp_path)) == [".reid_baseline_outputs.json", "results.json"]
    save_results({"rank1": 60.0}, path)  # the package's own file is replaced
    open(path, "a").write(" ")  # a user's edit makes it theirs
    with pytest.raises(OutputError, match="results file .*results.json exists"):
        save_results({"rank1": 70.0}, path)
    with pytest.raises(OutputError, match="nope.results.json: folder .* does not exist"):
        save_results({}, str(tmp_path / "nope" / "results.json"))


def test_export_to_a_missing_folder_fails_before_loading(tmp_path, monkeypatch, capsys):
    prefix = tmp_path / "nope" / "reid"
    # --params does not exist either: loading first would report that instead
    code, out, err = run_script(monkeypatch, capsys, "scripts/export_model.py", "--params",
                                 tmp_path / "missing.params", "--prefix", prefix)
    assert code == 2 and out == ""
    assert err.splitlines() == ["error: --prefix: folder %s does not exist" % prefix.parent]


@pytest.mark.slow
def test_feature_extraction_shows_a_progress_bar_per_split(make_small_cfg, small_toy,
                                                           tmp_path, monkeypatch):
    import mxnet as mx

    from reid_baseline.data.datasets.market1501 import load_market1501
    from reid_baseline.evaluation.evaluator import evaluate_retrieval
    from reid_baseline.modeling.network import build_model

    bars = []

    def recording_bar(**kwargs):
        bars.append(kwargs)
        return progress.progress_bar(**kwargs)

    monkeypatch.setattr(features, "progress_bar", recording_bar)
    cfg = make_small_cfg(tmp_path)
    evaluate_retrieval(cfg, build_model(cfg, small_toy["train_ids"]),
                       load_market1501(small_toy["root"], False), [mx.cpu()])
    # query and gallery images, counted in images; lines in a log (reid_baseline.progress)
    images = [small_toy[split + "_images"] for split in ("query", "gallery")]
    assert [(b["desc"], b["total"], b["unit"], b["log_lines"]) for b in bars] == [
        ("features query", images[0], "img", True), ("features gallery", images[1], "img", True)]


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder this process cannot write: chmod for a user, a read-only tmpfs for root."""
    import subprocess
    folder = tmp_path / "read_only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        pytest.skip("root cannot mount a read-only tmpfs here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)


def test_a_read_only_output_folder_is_refused_before_the_evaluation(run_copy, read_only_folder,
                                                                    monkeypatch, capsys):
    config, params = run_copy
    monkeypatch.setattr(features.FeatureExtractor, "__call__",
                        lambda *a, **k: pytest.fail("evaluated"))
    output = read_only_folder / "results.json"
    code, out, err = run_script(monkeypatch, capsys, "evaluate.py", "--config", config,
                                "--params", params, "--output", output)
    assert code == 2 and out == ""
    assert err.splitlines() == ["error: results file %s: folder %s cannot be written (%s)"
                                % (output, read_only_folder, os.strerror(
                                    30 if os.geteuid() == 0 else 13))]


@pytest.fixture
def run_folder(saved_model, tmp_path):
    """saved_model's config.yaml and model_final.params copied into a run folder of its own."""
    folder = tmp_path / "run"
    folder.mkdir()
    for path in saved_model:
        shutil.copy(path, str(folder))
    return folder


def _sha256(path):
    import hashlib
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.mark.timeout(600)
@pytest.mark.slow
def test_another_input_size_than_the_runs_is_refused_naming_each_key(run_folder, monkeypatch,
                                                                     capsys):
    import yaml
    saved = yaml.safe_load((run_folder / "config.yaml").read_text())["INPUT"]
    height, width = saved["HEIGHT"] * 2, saved["WIDTH"] * 2
    config, params = str(run_folder / "config.yaml"), str(run_folder / "model_final.params")
    evaluated = []
    real_call = features.FeatureExtractor.__call__
    monkeypatch.setattr(features.FeatureExtractor, "__call__",
                        lambda *a, **k: evaluated.append(1) or real_call(*a, **k))
    expected = "INPUT.HEIGHT: %d -> %d; INPUT.WIDTH: %d -> %d" % (saved["HEIGHT"], height,
                                                                saved["WIDTH"], width)
    for args in (["--config", config, "--params", params], ["--run", run_folder]):
        code, out, err = run_script(monkeypatch, capsys, "evaluate.py", *args, "INPUT.HEIGHT",
                                    height, "INPUT.WIDTH", width)
        assert code == 2 and out == "" and len(err.splitlines()) == 1, err
        assert err.startswith("error: the config differs from the run's %s" % config), err
        assert expected in err and "--force" in err
    assert evaluated == [] and sorted(os.listdir(run_folder)) == ["config.yaml",
                                                                  "model_final.params"]
    # --force: evaluated, with a warning on stderr and in results of their own name (never
    # the run's results.json: the numbers are not the run's)
    code, out, err = run_script(monkeypatch, capsys, "evaluate.py", "--run", run_folder,
                                "INPUT.HEIGHT", height, "INPUT.WIDTH", width, "--force")
    assert code == 0, err
    assert err.startswith("warning: the config differs") and expected in err
    assert not (run_folder / "results.json").exists() and (run_folder / "cmc_forced.png").is_file()
    code, out, err = run_script(monkeypatch, capsys, "evaluate.py", "--run", run_folder,
                                "INPUT.HEIGHT", height, "INPUT.WIDTH", width, "--force",
                                "--output", run_folder / "results.json")
    assert code == 2 and "the run's own results file" in err.splitlines()[-1], err
    assert not (run_folder / "results.json").exists()
    results = json.loads((run_folder / "results_forced.json").read_text())
    assert expected in results["warning"]
    assert results["forced_config_changes"] == {"INPUT.HEIGHT": {"run": saved["HEIGHT"],
                                                                 "given": height},
                                                "INPUT.WIDTH": {"run": saved["WIDTH"],
                                                                "given": width}}


@pytest.mark.timeout(600)
@pytest.mark.slow
def test_a_cross_dataset_evaluation_keeps_the_runs_results(run_folder, small_toy, tmp_path,
                                                           monkeypatch, capsys):
    from importlib import metadata

    from reid_baseline.data.datasets import load_dataset
    from reid_baseline.data.toy import make_toy_dataset
    code, out, err = run_script(monkeypatch, capsys, "evaluate.py", "--run", run_folder)
    assert code == 0, err
    own = json.loads((run_folder / "results.json").read_text())
    params = str(run_folder / "model_final.params")
    assert own["test_set"] == {"name": "market1501", "root": os.path.abspath(small_toy["root"]),
                               "num_query": small_toy["query_images"],
                               "num_gallery": small_toy["gallery_images"]}
    assert own["params"] == os.path.abspath(params) and own["params_sha256"] == _sha256(params)
    assert own["rerank"] is False and own["package_version"] == metadata.version("reid_baseline")
    kept = {name: (run_folder / name).read_bytes() for name in ("results.json", "cmc.png")}

    duke = str(tmp_path / "duke")
    make_toy_dataset("dukemtmc", duke, seed=1, num_train_ids=4, num_test_ids=4,
                     images_per_id_per_camera=1)
    other = load_dataset("dukemtmc", duke, verify_counts=False)
    code, out, err = run_script(monkeypatch, capsys, "evaluate.py", "--run", run_folder,
                                "DATASETS.TEST_NAME", "dukemtmc", "DATASETS.TEST_ROOT", duke)
    assert code == 0, err
    assert {name: (run_folder / name).read_bytes() for name in kept} == kept
    cross = json.loads((run_folder / "results_dukemtmc.json").read_text())
    assert (run_folder / "cmc_dukemtmc.png").is_file()
    assert cross["test_set"] == {"name": "dukemtmc", "root": os.path.abspath(other.root),
                                 "num_query": len(other.query), "num_gallery": len(other.gallery)}
    assert cross["params_sha256"] == own["params_sha256"]
    assert cross["config_sha256"] != own["config_sha256"]  # the test set is in the config
    assert "wrote %s" % (run_folder / "results_dukemtmc.json") in out


def test_another_root_of_the_same_set_gets_a_name_of_its_own(make_small_cfg, tmp_path):
    import hashlib

    from reid_baseline.evaluation.provenance import flat_values, other_set_tag

    def digest(path):
        return hashlib.sha256(os.path.realpath(path).encode()).hexdigest()[:8]
    run = flat_values(make_small_cfg(tmp_path))
    assert other_set_tag(make_small_cfg(tmp_path), run) == ""
    assert other_set_tag(make_small_cfg(tmp_path), None) == ""  # no run config: nothing known
    other = str(tmp_path / "market copy")
    assert other_set_tag(make_small_cfg(tmp_path, "DATASETS.TEST_ROOT", other), run) == \
        "market-copy-" + digest(other)
    assert other_set_tag(make_small_cfg(tmp_path, "DATASETS.TEST_NAME", "msmt17"), run) == "msmt17"
    # a root named like a suffix the package writes, two own-image folders, CUHK03-NP subsets
    rerank = str(tmp_path / "rerank")
    assert other_set_tag(make_small_cfg(tmp_path, "DATASETS.TEST_ROOT", rerank), run) == \
        "rerank-" + digest(rerank)
    tags = {other_set_tag(make_small_cfg(tmp_path, "DATASETS.TEST_NAME", "folder",
                                         "DATASETS.TEST_ROOT", str(tmp_path / d / "imgs")), run)
            for d in ("a", "b")}
    assert len(tags) == 2 and all(t.startswith("imgs-") for t in tags)
    cuhk = flat_values(make_small_cfg(tmp_path, "DATASETS.NAME", "cuhk03np"))
    assert other_set_tag(make_small_cfg(tmp_path, "DATASETS.NAME", "cuhk03np"), cuhk) == ""
    assert other_set_tag(make_small_cfg(tmp_path, "DATASETS.NAME", "cuhk03np",
                                        "DATASETS.CUHK03_SUBSET", "labeled"), cuhk) == \
        "cuhk03np_labeled"
    assert other_set_tag(make_small_cfg(tmp_path, "DATASETS.TEST_NAME", "cuhk03np"), run) == \
        "cuhk03np_detected"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("script", ["export", "index"])
def test_export_and_index_refuse_a_config_that_changes_the_runs_features(saved_model, tmp_path,
                                                                         monkeypatch, capsys,
                                                                         script):
    import yaml
    config, params = saved_model
    height = yaml.safe_load(open(config).read())["INPUT"]["HEIGHT"]
    images = tmp_path / "images"
    images.mkdir()
    args = {"export": ["scripts/export_model.py", "--config", config, "--params", params,
                       "--prefix", tmp_path / "m"],
            "index": ["scripts/search.py", "index", "--config", config, "--params", params,
                      "--images", images, "--out", tmp_path / "gallery"]}[script]
    code, out, err = run_script(monkeypatch, capsys, *args, "INPUT.HEIGHT", height * 2)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "INPUT.HEIGHT: %d -> %d" % (height, height * 2) in err and "--force" in err
    assert sorted(os.listdir(tmp_path)) == ["images"]  # refused before anything was written
