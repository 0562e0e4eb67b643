"""scripts/search.py: index a folder, query it (exact, approximate, re-ranked), its outputs and
errors; the exact blocked top-k."""
import contextlib
import glob
import io
import os
import runpy
import shutil
import sys

import cv2
import numpy as np
import pytest

from conftest import run_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_script(monkeypatch, capsys, *args):
    return run_script(monkeypatch, capsys, "scripts/search.py", *args)


@pytest.fixture(scope="module")
def trained(trained_run):
    """(config.yaml, model_final.params) of the session's short training run (shared with
    test_engine: no extra training in the suite)."""
    cfg, _ = trained_run
    return (os.path.join(cfg.OUTPUT_DIR, "config.yaml"),
            os.path.join(cfg.OUTPUT_DIR, "model_final.params"))


@pytest.fixture(scope="module")
def photo_tree(toy_market_root, tmp_path_factory):
    """A folder tree of 14 toy gallery images and a .bmp in two sub-folders, plus 2 unreadable
    .jpg files and a text file (not an image): what a user's folder may hold."""
    root = tmp_path_factory.mktemp("photos")
    files = sorted(glob.glob(os.path.join(toy_market_root, "bounding_box_test", "00*.jpg")))
    for i, path in enumerate(files[:14]):
        sub = root / "cam_a" if i % 2 else root / "cam_b" / "day1"
        sub.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, str(sub / os.path.basename(path)))
    bmp = cv2.imread(files[14])  # a BMP file is indexed too
    cv2.imwrite(str(root / "cam_b" / "day1" / "bitmap.bmp"), bmp)
    (root / "cam_a" / "broken.jpg").write_bytes(b"not a jpeg at all")
    (root / "cam_a" / "empty.JPG").write_bytes(b"")
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def gallery(trained, photo_tree, tmp_path_factory):
    """Index photo_tree once with the script: (index folder, what it printed)."""
    config, params = trained
    out = tmp_path_factory.mktemp("index") / "gallery.index"
    argv = ["scripts/search.py", "index", "--config", config, "--params", params, "--images",
            str(photo_tree), "--out", str(out)]
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
        mp.setattr(sys, "argv", argv)
        runpy.run_path(os.path.join(ROOT, "scripts", "search.py"), run_name="__main__")
    return out, printed.getvalue()


def test_index_skips_unreadable_files_and_stores_paths_and_config(gallery, photo_tree, trained):
    from reid_baseline.fileio import file_sha256
    from reid_baseline.inference.store import FeatureStore
    path, out = gallery
    assert "2 unreadable files skipped" in out
    assert "broken.jpg" in out and "empty.JPG" in out
    assert "indexed 15 images (512-d float32 features)" in out
    store = FeatureStore(str(path))
    paths, feats = store.paths(range(len(store))), np.asarray(store.features)
    assert len(paths) == 15 and feats.shape == (15, 512) and feats.dtype == np.float32
    assert all(p.startswith(str(photo_tree)) for p in paths)
    assert any(p.endswith("bitmap.bmp") for p in paths)
    assert not any(p.endswith((".txt", "broken.jpg")) for p in paths)
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    assert "resnet18_v1" in store.config_text and "HEIGHT: 64" in store.config_text
    assert store.params_sha256 == file_sha256(trained[1])
    assert store.manifest["written_by"] == "reid_baseline"
    assert sorted(os.listdir(str(path))) == [".reid_baseline.lock", "config.yaml", "features.npy",
                                            "manifest.json", "path_offsets.npy", "paths.txt"]


def test_query_ranks_the_image_itself_first(gallery, photo_tree, tmp_path, monkeypatch, capsys):
    path, _ = gallery
    queries = sorted(glob.glob(str(photo_tree / "cam_a" / "00*.jpg")))[:2]
    code, out, err = _run_script(monkeypatch, capsys, "query", "--gallery", path, *queries,
                                 "--topk", "5", "--html", tmp_path / "r.html", "--png",
                                 tmp_path / "r.png")
    assert code == 0, err
    lines = out.splitlines()
    for q in queries:
        at = lines.index("%s (gallery of 15):" % q)
        ranked = [line.split() for line in lines[at + 1:at + 6]]
        assert [int(r[0]) for r in ranked] == [1, 2, 3, 4, 5]
        assert ranked[0][2] == q and float(ranked[0][1]) < 1e-5
        dists = [float(r[1]) for r in ranked]
        assert dists == sorted(dists) and dists[1] > 1e-3
    page = (tmp_path / "r.html").read_text()
    assert page.count("<img") == 2 * 6 and os.path.basename(queries[0]) in page
    from PIL import Image
    assert Image.open(str(tmp_path / "r.png")).size == (6 * 125, 2 * 300)


def test_query_with_rerank_and_unreadable_query(gallery, photo_tree, tmp_path, monkeypatch,
                                                capsys):
    path, _ = gallery
    query = sorted(glob.glob(str(photo_tree / "cam_b" / "day1" / "*.jpg")))[0]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    code, out, err = _run_script(monkeypatch, capsys, "query", "--gallery", path, query, bad,
                                 "--rerank", "--topk", "3", "TEST.RERANK_K1", "5")
    assert code == 0, err
    assert "1 unreadable query images skipped" in out and "bad.jpg" in out
    lines = out.splitlines()
    at = lines.index("%s (gallery of 15, re-ranked):" % query)
    assert lines[at + 1].split()[2] == query


def test_damaged_gallery_files_are_one_error_line(gallery, tmp_path, monkeypatch, capsys):
    (tmp_path / "file.index").write_bytes(b"not a folder")
    (tmp_path / "empty.index").mkdir()
    cut_store = tmp_path / "cut.index"
    shutil.copytree(str(gallery[0]), str(cut_store))
    with open(str(cut_store / "features.npy"), "r+b") as f:
        f.truncate(1000)
    for bad in ("file.index", "empty.index", "cut.index", "missing.index"):
        code, out, err = _run_script(monkeypatch, capsys, "query", "--gallery", tmp_path / bad,
                                     "q.jpg")
        assert code == 2 and err.startswith("error: gallery ") and bad in err, (bad, err)
        assert err.count("\n") == 1 and "Traceback" not in err


def test_an_option_of_the_other_command_is_refused(gallery, monkeypatch, capsys):
    for args, flag, command in ((("query", "--gallery", gallery[0], "q.jpg", "--out", "x"),
                                 "--out", "query"),
                                (("query", "--gallery", gallery[0], "q.jpg", "--dtype",
                                  "float16"), "--dtype", "query"),
                                (("index", "--images", "photos", "--out", "x", "--topk", "3"),
                                 "--topk", "index")):
        code, out, err = _run_script(monkeypatch, capsys, *args)
        assert code == 2 and "%s is not an option of %s" % (flag, command) in err


def test_outputs_the_package_did_not_write_are_refused_before_work(trained, photo_tree, tmp_path,
                                                                   gallery, monkeypatch, capsys):
    config, params = trained
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    user_dir = tmp_path / "mine"
    user_dir.mkdir()
    (user_dir / "keep.txt").write_text("mine")
    for out in (notes, user_dir):
        code, _, err = _run_script(monkeypatch, capsys, "index", "--config", config, "--params",
                                   params, "--images", photo_tree, "--out", out)
        assert code == 2 and str(out) in err and "--overwrite" in err and err.count("\n") == 1
    assert notes.read_text() == "my notes" and os.listdir(str(user_dir)) == ["keep.txt"]
    page = tmp_path / "page.html"
    page.write_text("<p>my page</p>")
    for option in ("--html", "--png"):
        target = page if option == "--html" else tmp_path  # a folder as an output file
        code, out, err = _run_script(monkeypatch, capsys, "query", "--gallery", gallery[0],
                                     "q.jpg", option, target)
        assert code == 2 and str(target) in err and out == "", err
    assert page.read_text() == "<p>my page</p>"


def test_query_needs_the_gallerys_own_parameters_and_features(gallery, trained, photo_tree,
                                                               tmp_path, monkeypatch, capsys):
    config, params = trained
    query = sorted(glob.glob(str(photo_tree / "cam_a" / "00*.jpg")))[0]
    others = sorted(glob.glob(os.path.join(os.path.dirname(params), "checkpoints", "epoch_*",
                                           "model.params")))
    code, out, err = _run_script(monkeypatch, capsys, "query", "--gallery", gallery[0], query,
                                 "--params", others[0])
    assert code == 2 and "not the parameter file the gallery" in err and err.count("\n") == 1
    code, out, err = _run_script(monkeypatch, capsys, "query", "--gallery", gallery[0], query,
                                 "MODEL.POOLING", "max")
    assert code == 2 and "MODEL.POOLING: 'avg' -> 'max'" in err
    copy = tmp_path / "same.params"
    shutil.copy(params, str(copy))  # the same bytes under another name: the same features
    code, out, err = _run_script(monkeypatch, capsys, "query", "--gallery", gallery[0], query,
                                 "--params", copy, "--topk", "1", "TEST.BATCH_SIZE", "4")
    assert code == 0, err
    assert out.splitlines()[1].split()[2] == query


def test_approximate_index_and_query(trained, photo_tree, tmp_path, monkeypatch, capsys):
    config, params = trained
    out_dir = tmp_path / "approx.index"
    code, out, err = _run_script(monkeypatch, capsys, "index", "--config", config, "--params",
                                 params, "--images", photo_tree, "--out", out_dir, "--dtype",
                                 "float16", "--approximate")
    assert code == 0, err
    assert "indexed 15 images (512-d float16 features)" in out
    assert "recall@10 against exact search 1.000 (target 0.995;" in out
    query = sorted(glob.glob(str(photo_tree / "cam_a" / "00*.jpg")))[1]
    code, out, err = _run_script(monkeypatch, capsys, "query", "--gallery", out_dir, query,
                                 "--approximate", "--topk", "3")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "%s (gallery of 15, approximate):" % query
    assert lines[1].split()[2] == query and float(lines[1].split()[1]) < 1e-3


@pytest.mark.parametrize("args", [("index", "--images", "photos", "--out", "x", "--approximate",
                                   "--nlist", "0"),
                                  ("index", "--images", "photos", "--out", "x", "--approximate",
                                   "--nprobe", "-5"),
                                  ("query", "--gallery", "g.index", "q.jpg", "--approximate",
                                   "--nprobe", "0"),
                                  ("query", "--gallery", "g.index", "q.jpg", "--approximate",
                                   "--nprobe", "-5"),
                                  ("index", "--images", "photos", "--out", "x", "--approximate",
                                   "--shortlist", "0"),
                                  ("query", "--gallery", "g.index", "q.jpg", "--approximate",
                                   "--shortlist", "1.5")])
def test_zero_or_negative_cells_are_one_rule_in_both_commands(monkeypatch, capsys, args):
    code, out, err = _run_script(monkeypatch, capsys, *args)
    assert code == 2 and "%s: expected an integer >= 1, got '%s'" % args[-2:] in err
    assert "Traceback" not in err and out == ""


@pytest.mark.parametrize("value", ["0", "1.5", "high"])
def test_a_target_recall_outside_0_to_1_is_refused_before_work(monkeypatch, capsys, value):
    code, out, err = _run_script(monkeypatch, capsys, "index", "--images", "photos", "--out",
                                 "x", "--approximate", "--target-recall", value)
    assert code == 2 and "--target-recall: expected a number in (0, 1], got '%s'" % value in err
    code, out, err = _run_script(monkeypatch, capsys, "query", "--gallery", "g.index", "q.jpg",
                                 "--approximate", "--target-recall", "0.9")
    assert code == 2 and "--target-recall is not an option of query" in err


@pytest.mark.parametrize("block", [7, 64, 1 << 24])
def test_top_k_search_is_exact_with_ties(monkeypatch, block):
    from reid_baseline.evaluation.distances import compute_distance
    from reid_baseline.inference import exact
    monkeypatch.setattr(exact, "SEARCH_BLOCK_ENTRIES", block)
    rng = np.random.default_rng(3)
    gal = rng.integers(-2, 3, (50, 4)).astype(np.float32)  # coarse values: many exact ties
    q = gal[[0, 5, 9]] + 0.0
    idx, dist = exact.exact_top_k(q, gal, 8, metric="euclidean")
    full = compute_distance(q, gal, "euclidean")
    expected = np.argsort(full, axis=1, kind="stable")[:, :8]  # ties: lower index first
    np.testing.assert_array_equal(idx, expected)
    np.testing.assert_array_equal(dist, np.take_along_axis(full, expected, axis=1))
    assert exact.exact_top_k(q, gal[:3], 8)[0].shape == (3, 3)  # fewer items than topk


def test_result_pages_link_file_names_with_hash_and_question_marks(tmp_path):
    from reid_baseline.inference import pages
    names = ["a#1.jpg", "b?x=1.jpg", "c 100%.jpg", os.fsdecode(b"d\xff.jpg")]
    paths = [str(tmp_path / n) for n in names]
    pages.write_html(str(tmp_path / "r.html"), [(paths[0], [(p, 0.5) for p in paths])])
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    for src in ["a%231.jpg", "b%3Fx%3D1.jpg", "c%20100%25.jpg", "d%FF.jpg"]:
        assert 'src="%s"' % src in page
