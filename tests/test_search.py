"""scripts/search.py and reid_baseline.search: index a folder, query it, exact blocked top-k."""
import contextlib
import glob
import io
import os
import runpy
import shutil
import sys

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
    """A folder tree of 14 toy gallery images in two sub-folders, plus 2 unreadable .jpg
    files and a text file (not an image): what a user's folder may hold."""
    root = tmp_path_factory.mktemp("photos")
    files = sorted(glob.glob(os.path.join(toy_market_root, "bounding_box_test", "00*.jpg")))
    for i, path in enumerate(files[:14]):
        sub = root / "cam_a" if i % 2 else root / "cam_b" / "day1"
        sub.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, str(sub / os.path.basename(path)))
    (root / "cam_a" / "broken.jpg").write_bytes(b"not a jpeg at all")
    (root / "cam_a" / "empty.JPG").write_bytes(b"")
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def gallery(trained, photo_tree, tmp_path_factory):
    """Index photo_tree once with the script: (gallery.npz, what it printed)."""
    config, params = trained
    out = tmp_path_factory.mktemp("index") / "gallery.npz"
    argv = ["scripts/search.py", "index", "--config", config, "--params", params, "--images",
            str(photo_tree), "--out", str(out)]
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
        mp.setattr(sys, "argv", argv)
        runpy.run_path(os.path.join(ROOT, "scripts", "search.py"), run_name="__main__")
    return out, printed.getvalue()


def test_index_skips_unreadable_files_and_stores_paths_and_config(gallery, photo_tree):
    path, out = gallery
    assert "2 unreadable files skipped" in out
    assert "broken.jpg" in out and "empty.JPG" in out
    assert "indexed 14 images (512-d features)" in out
    with np.load(str(path), allow_pickle=False) as z:  # no pickled objects inside
        paths, feats, config = z["paths"], z["features"], str(z["config"])
    assert len(paths) == 14 and feats.shape == (14, 512) and feats.dtype == np.float32
    assert all(p.startswith(str(photo_tree)) for p in paths)
    assert not any(p.endswith((".txt", "broken.jpg")) for p in paths)
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    assert "resnet18_v1" in config and "HEIGHT: 64" in config
    assert not glob.glob(str(path) + ".tmp*")


def test_query_ranks_the_image_itself_first(gallery, photo_tree, tmp_path, monkeypatch, capsys):
    path, _ = gallery
    queries = sorted(glob.glob(str(photo_tree / "cam_a" / "00*.jpg")))[:2]
    code, out, err = _run_script(monkeypatch, capsys, "query", "--gallery", path, *queries,
                                 "--topk", "5", "--html", tmp_path / "r.html", "--png",
                                 tmp_path / "r.png")
    assert code == 0, err
    lines = out.splitlines()
    for q in queries:
        at = lines.index("%s (gallery of 14):" % q)
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
    at = lines.index("%s (gallery of 14, re-ranked):" % query)
    assert lines[at + 1].split()[2] == query


def test_query_errors_are_one_line(gallery, tmp_path, monkeypatch, capsys):
    not_index = tmp_path / "x.npz"
    np.savez(str(not_index), a=np.zeros(3))
    code, out, err = _run_script(monkeypatch, capsys, "query", "--gallery", not_index, "q.jpg")
    assert code == 2 and err.startswith("error: --gallery: ") and "x.npz" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("block", [7, 64, 1 << 24])
def test_top_k_search_is_exact_with_ties(monkeypatch, block):
    from reid_baseline import search
    from reid_baseline.evaluation import compute_distance
    monkeypatch.setattr(search, "SEARCH_BLOCK_ENTRIES", block)
    rng = np.random.default_rng(3)
    gal = rng.integers(-2, 3, (50, 4)).astype(np.float32)  # coarse values: many exact ties
    q = gal[[0, 5, 9]] + 0.0
    idx, dist = search.top_k_search(q, gal, 8, metric="euclidean")
    full = compute_distance(q, gal, "euclidean")
    expected = np.argsort(full, axis=1, kind="stable")[:, :8]  # ties: lower index first
    np.testing.assert_array_equal(idx, expected)
    np.testing.assert_array_equal(dist, np.take_along_axis(full, expected, axis=1))
    assert search.top_k_search(q, gal[:3], 8)[0].shape == (3, 3)  # fewer items than topk
