"""reid_baseline.inference.store (feature store) and reid_baseline.inference.approximate (faiss IVF)."""
import glob
import os
import shutil
import tracemalloc

import numpy as np
import pytest

from reid_baseline.errors import ConfigError, DatasetError, OutputError
from reid_baseline.inference import exact
from reid_baseline.inference import store as index

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "MODEL:\n  BACKBONE: resnet18_v1\n"


def _unit(rng, n, dim):
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _embedder(feats, paths, unreadable=(), stop_at=None):
    """An embed(paths) over given features; `unreadable` paths are skipped; the call number
    `stop_at` raises KeyboardInterrupt (a stopped build)."""
    rows = {p: i for i, p in enumerate(paths)}
    calls = []

    def embed(part):
        calls.append(part)
        if stop_at is not None and len(calls) == stop_at:
            raise KeyboardInterrupt
        kept = [p for p in part if p not in unreadable]
        return feats[[rows[p] for p in kept]], kept, [(p, "%s: unreadable" % p)
                                                     for p in part if p in unreadable]
    return embed


def _build(folder, feats, dtype="float32", chunk=16, **kw):
    paths = ["/photos/%05d.jpg" % i for i in range(len(feats))]
    embed = kw.pop("embed", None) or _embedder(feats, paths, kw.pop("unreadable", ()))
    return index.build_store(str(folder), paths, embed, CONFIG, None, "ab" * 32, dtype=dtype,
                             chunk=chunk, **kw)


@pytest.fixture(scope="module")
def tiny_model(make_tiny_cfg, tmp_path_factory):
    """ReIDModel of the tests' small network with its initial weights (no training needed to
    test the store), TEST.BATCH_SIZE 16."""
    import mxnet as mx

    from reid_baseline import ReIDModel
    from reid_baseline.modeling.network import build_model
    folder = tmp_path_factory.mktemp("tiny")
    cfg = make_tiny_cfg(folder, "TEST.BATCH_SIZE", "16")
    net = build_model(cfg, 10)
    net(mx.nd.zeros((1, 3, cfg.INPUT.HEIGHT, cfg.INPUT.WIDTH)))  # completes deferred shapes
    net.save_parameters(str(folder / "tiny.params"))
    return ReIDModel(cfg, str(folder / "tiny.params"))


def _files(folder):
    names = sorted(os.listdir(str(folder)))
    return names, [open(os.path.join(str(folder), n), "rb").read() for n in names]


def test_store_gives_the_top_k_of_its_features_in_memory(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    feats = _unit(rng, 300, 16)
    _build(tmp_path / "g.index", feats)
    paths = np.array(["/photos/%05d.jpg" % i for i in range(300)])
    store = index.open_gallery(str(tmp_path / "g.index"))
    assert isinstance(store.features, np.memmap) and store.features.shape == (300, 16)
    queries = _unit(rng, 7, 16)
    # Small blocks: the store is read in 10-row blocks.
    monkeypatch.setattr(exact, "SEARCH_BLOCK_BYTES", 10 * 16 * 4)
    for metric in ("cosine", "euclidean"):
        i_s, d_s = exact.exact_top_k(queries, store.features, 12, metric)
        i_n, d_n = exact.exact_top_k(queries, feats, 12, metric)
        brute = np.argsort(((queries[:, None] - feats[None]) ** 2).sum(-1), axis=1,
                           kind="stable")[:, :12]
        np.testing.assert_array_equal(i_s, i_n)
        np.testing.assert_array_equal(i_s, brute)
        np.testing.assert_array_equal(d_s, d_n)
    assert store.paths(i_s) == paths[i_s].tolist()
    assert store.params_sha256 == "ab" * 32 and store.config_text == CONFIG


def test_float16_store_holds_the_rounded_features(tmp_path):
    feats = _unit(np.random.default_rng(1), 50, 8)
    manifest = _build(tmp_path / "h.index", feats, dtype="float16")
    store = index.FeatureStore(str(tmp_path / "h.index"))
    assert manifest["dtype"] == "float16" and store.features.dtype == np.float16
    np.testing.assert_array_equal(store.features, feats.astype(np.float16))


def test_unreadable_images_are_skipped_and_listed(tmp_path):
    feats = _unit(np.random.default_rng(2), 40, 8)
    bad = {"/photos/00003.jpg", "/photos/00039.jpg"}
    manifest = _build(tmp_path / "s.index", feats, unreadable=bad)
    store = index.FeatureStore(str(tmp_path / "s.index"))
    keep = [i for i in range(40) if "/photos/%05d.jpg" % i not in bad]
    assert manifest["count"] == len(store) == 38
    np.testing.assert_array_equal(store.features, feats[keep])
    assert store.paths([0, 3, 37]) == ["/photos/00000.jpg", "/photos/00004.jpg",
                                       "/photos/00038.jpg"]
    assert sorted(p for p, _ in manifest["skipped"]) == sorted(bad)
    # features.npy was cut to the rows written: no trailing rows on disk
    assert os.path.getsize(str(tmp_path / "s.index" / "features.npy")) == 128 + 38 * 8 * 4


@pytest.mark.parametrize("where", ["embedding", "after the rows were written"])
def test_interrupted_build_resumes_to_identical_files(tmp_path, monkeypatch, where):
    feats = _unit(np.random.default_rng(3), 100, 8)
    bad = {"/photos/00020.jpg"}
    _build(tmp_path / "whole.index", feats, unreadable=bad)
    paths = ["/photos/%05d.jpg" % i for i in range(100)]
    stopped = str(tmp_path / "stopped.index")
    if where == "embedding":
        embed = _embedder(feats, paths, bad, stop_at=4)
        with pytest.raises(KeyboardInterrupt):
            _build(stopped, feats, embed=embed)
    else:  # a stop between the memory map's flush and progress.json: a chunk is redone
        real_write, writes = index._write_json, []

        def stop_on_third_progress(path, data):
            writes.append(path)
            if path.endswith(index.PROGRESS) and len(
                    [w for w in writes if w.endswith(index.PROGRESS)]) == 3:
                raise KeyboardInterrupt
            real_write(path, data)
        monkeypatch.setattr(index, "_write_json", stop_on_third_progress)
        with pytest.raises(KeyboardInterrupt):
            _build(stopped, feats, unreadable=bad)
        monkeypatch.setattr(index, "_write_json", real_write)
    assert os.path.isfile(os.path.join(stopped, index.PROGRESS))
    with pytest.raises(DatasetError, match="unfinished index"):
        index.FeatureStore(stopped)
    calls = []
    embed = _embedder(feats, paths, bad)
    _build(stopped, feats, embed=lambda part: calls.append(part) or embed(part))
    assert calls[0][0] != paths[0]  # resumed, not started again
    assert _files(stopped) == _files(tmp_path / "whole.index")


@pytest.mark.slow
def test_build_with_the_network_resumes_to_identical_files(tiny_model, toy_market_root,
                                                          tmp_path, monkeypatch):
    model = tiny_model
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in sorted(glob.glob(os.path.join(toy_market_root, "query", "*.jpg")))[:18]:
        shutil.copy(path, str(folder))
    monkeypatch.setattr(index, "CHUNK_IMAGES", 4)
    model.build_index(str(folder), str(tmp_path / "whole.index"))
    real, calls = model.extract_files, []

    def stop_on_third(part, desc="images"):
        calls.append(part)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(part, desc)
    monkeypatch.setattr(model, "extract_files", stop_on_third)
    with pytest.raises(KeyboardInterrupt):
        model.build_index(str(folder), str(tmp_path / "stopped.index"))
    monkeypatch.setattr(model, "extract_files", real)
    model.build_index(str(folder), str(tmp_path / "stopped.index"))
    assert _files(tmp_path / "stopped.index") == _files(tmp_path / "whole.index")
    store = index.FeatureStore(str(tmp_path / "whole.index"))
    np.testing.assert_allclose(store.features, model.extract(store.paths(range(18))),
                               rtol=0, atol=1e-6)


@pytest.mark.timeout(900)
@pytest.mark.slow
def test_building_a_large_folder_stays_within_a_memory_budget(tiny_model, toy_market_root,
                                                              tmp_path, monkeypatch):
    """Measured with tracemalloc, which counts every numpy and Python allocation (not MXNet's
    own memory pool, whose size depends on the batch, not on the folder). Indexing 512 images
    peaks under a 3 MB budget that their decoded pixels (12 MB) exceed, and no higher than
    indexing 128 (a build holding the features would grow by 384 x 2 KB)."""
    model = tiny_model
    sources = sorted(glob.glob(os.path.join(toy_market_root, "bounding_box_test", "*.jpg")))
    model.extract(sources[:16]), model.params_sha256  # network graph and digest made once
    monkeypatch.setattr(index, "CHUNK_IMAGES", 64)
    peaks = {}
    for count in (128, 512):
        folder = tmp_path / ("f%d" % count)
        folder.mkdir()
        for i in range(count):
            os.link(sources[i % len(sources)], str(folder / ("%05d.jpg" % i)))
        tracemalloc.start()
        try:
            manifest = model.build_index(str(folder), str(tmp_path / ("%d.index" % count)))
            peaks[count] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert manifest["count"] == count and manifest["dim"] == 512
    budget = 3 << 20
    assert 512 * 128 * 64 * 3 > budget > peaks[512], peaks
    assert peaks[512] - peaks[128] < 0.25 * 384 * 512 * 4, peaks


def test_output_folder_is_never_one_the_package_did_not_write(tmp_path):
    feats = _unit(np.random.default_rng(4), 10, 4)
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    with pytest.raises(OutputError, match="notes.txt"):
        _build(notes, feats)
    assert notes.read_text() == "mine"
    user = tmp_path / "user"
    user.mkdir()
    (user / "a.txt").write_text("mine")
    with pytest.raises(OutputError, match="user"):
        _build(user, feats)
    with pytest.raises(OutputError, match="does not exist"):
        _build(tmp_path / "no" / "such.index", feats)
    _build(tmp_path / "ours.index", feats)
    _build(tmp_path / "ours.index", feats * 0.5)  # ours: rebuilt
    np.testing.assert_allclose(index.FeatureStore(str(tmp_path / "ours.index")).features,
                               feats * 0.5)
    _build(user, feats, overwrite=True)
    assert (user / "a.txt").read_text() == "mine" and index.is_store(str(user))


def test_damaged_stores_and_galleries_are_one_line_errors(tmp_path):
    feats = _unit(np.random.default_rng(5), 30, 4)
    good = tmp_path / "g.index"
    _build(good, feats)
    cases = {}
    for name, damage in (("truncated", lambda d: open(str(d / "features.npy"), "r+b").truncate(
            200)), ("manifest", lambda d: (d / "manifest.json").write_text("{oops")),
                         ("offsets", lambda d: (d / "path_offsets.npy").unlink()),
                         ("config", lambda d: (d / "config.yaml").write_text(
                             CONFIG.replace("128", "256") + "# edited\n"))):
        folder = tmp_path / name
        shutil.copytree(str(good), str(folder))
        damage(folder)
        cases[name] = folder
    (tmp_path / "file.index").write_text("not a folder")
    assert len(index.open_gallery(str(good))) == 30  # the undamaged copy opens
    for path in list(cases.values()) + [tmp_path / "file.index", tmp_path / "absent.index"]:
        with pytest.raises(DatasetError) as exc:
            index.open_gallery(str(path))
        assert "\n" not in str(exc.value) and str(path) in str(exc.value)


def _rewrite_manifest(folder, **fields):
    import json
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(fields)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _huge_offsets(folder):
    header = index._npy_header(np.dtype(np.int64), (1 << 60,))
    (folder / "path_offsets.npy").write_bytes(header + b"\0" * 64)


@pytest.mark.parametrize("damage", [
    _huge_offsets,
    lambda d: np.save(str(d / "path_offsets.npy"), np.zeros((31, 2), np.int64)),
    lambda d: np.save(str(d / "path_offsets.npy"), np.arange(31.0)),
    lambda d: np.save(str(d / "path_offsets.npy"), np.array("text")),
    lambda d: _rewrite_manifest(d, count="30"),
    lambda d: _rewrite_manifest(d, dim=None),
    lambda d: _rewrite_manifest(d, inputs=["a"]),
    lambda d: _rewrite_manifest(d, dtype=4)])
def test_damaged_offsets_or_manifest_fields_are_one_damaged_index_line(tmp_path, damage):
    folder = tmp_path / "g.index"
    _build(folder, _unit(np.random.default_rng(5), 30, 4))
    damage(folder)
    with pytest.raises(DatasetError, match=r"is a damaged index \(.*\); build it again$") as exc:
        index.open_gallery(str(folder))
    assert "\n" not in str(exc.value) and str(folder) in str(exc.value)


def test_query_features_of_another_width_are_one_error(tiny_model, tmp_path):
    from reid_baseline.inference.store import build_store
    feats = _unit(np.random.default_rng(5), 4, 512)
    paths = ["/p/%d.jpg" % i for i in range(4)]
    build_store(str(tmp_path / "g.index"), paths, _embedder(feats, paths),
                tiny_model.cfg.dump(), tiny_model.params_path, tiny_model.params_sha256)
    for bad in (np.zeros((2, 128), np.float32), np.zeros(512, np.float32)):
        with pytest.raises(DatasetError, match=r"query features: expected an \(N, 512\) array"):
            tiny_model.rank(bad, str(tmp_path / "g.index"))
    assert tiny_model.rank(feats[:1], str(tmp_path / "g.index"), topk=1)[0].tolist() == [[0]]


FULL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (200000, 200000))
"""


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_full_disk_while_indexing_is_one_error_and_no_features_file(tmp_path):
    import subprocess
    import sys
    code = FULL_DISK + """
import numpy as np
from reid_baseline.errors import ReIDError
from reid_baseline.inference import store
paths = ["/p/%05d.jpg" % i for i in range(100)]
def embed(part):
    return np.ones((len(part), 1024), np.float32), part, []
try:
    store.build_store(sys.argv[1], paths, embed, "", None, "ab" * 32)
except ReIDError as exc:
    print("error: %s: %s" % (type(exc).__name__, exc))
"""
    folder = tmp_path / "g.index"
    proc = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True,
                          text=True, timeout=100, env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout.startswith("error: OutputError: %s: no room for the index's features "
                                  "(409728 bytes)" % (folder / "features.npy")), proc.stdout
    assert proc.stdout.count("\n") == 1 and not (folder / "features.npy").exists()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_full_disk_while_writing_the_approximate_index_is_one_error_and_no_file(tmp_path):
    import subprocess
    import sys
    pytest.importorskip("faiss")
    folder = tmp_path / "g.index"
    _build(folder, _unit(np.random.default_rng(3), 1000, 32), chunk=1000)
    code = FULL_DISK.replace("200000", "20000") + """
from reid_baseline.errors import ReIDError
from reid_baseline.inference import store
from reid_baseline.inference.approximate import build_approximate
try:
    build_approximate(store.FeatureStore(sys.argv[1]), nlist=4)
except ReIDError as exc:
    print("error: %s: %s" % (type(exc).__name__, exc))
"""
    proc = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True,
                          text=True, timeout=100, env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout.startswith("error: OutputError: %s: cannot write the approximate index"
                                  % (folder / "approximate.faiss")), proc.stdout
    assert proc.stdout.count("\n") == 1
    assert not [n for n in os.listdir(str(folder)) if "faiss" in n]


def test_a_truncated_or_foreign_approximate_index_is_one_damaged_index_line(tmp_path):
    pytest.importorskip("faiss")
    from reid_baseline.inference.approximate import approximate_top_k, build_approximate
    feats = _unit(np.random.default_rng(4), 200, 8)
    _build(tmp_path / "g.index", feats, chunk=200)
    build_approximate(index.FeatureStore(str(tmp_path / "g.index")), nlist=2)
    path = tmp_path / "g.index" / "approximate.faiss"
    whole = path.read_bytes()
    for damaged in (whole[:len(whole) // 2], b"not a faiss index" * 10):
        path.write_bytes(damaged)
        with pytest.raises(DatasetError, match=r"g.index is a damaged index \(its "
                                               r"approximate.faiss cannot be read: .*\); build "
                                               r"it again$") as exc:
            approximate_top_k(index.FeatureStore(str(tmp_path / "g.index")), feats[:2], 3)
        assert "\n" not in str(exc.value)


def test_approximate_index_finds_the_exact_answer_on_clustered_data(tmp_path):
    from reid_baseline.inference.approximate import approximate_top_k, build_approximate
    rng = np.random.default_rng(6)
    centres = _unit(rng, 40, 32)
    feats = np.repeat(centres, 25, axis=0) + 0.02 * rng.standard_normal((1000, 32))
    feats = (feats / np.linalg.norm(feats, axis=1, keepdims=True)).astype(np.float32)
    _build(tmp_path / "c.index", feats, chunk=256)
    store = index.FeatureStore(str(tmp_path / "c.index"))
    info = build_approximate(store, metric="cosine", target_recall=1.0)
    assert info["recall_at_10"] == 1.0 and info["target_met"] and info["recall_queries"] == 100
    assert index.FeatureStore(str(tmp_path / "c.index")).manifest["approximate"] == info
    queries = centres[:10] + 0.01 * rng.standard_normal((10, 32)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exact_i, exact_d = exact.exact_top_k(queries, store.features, 10)
    approx_i, approx_d = approximate_top_k(store, queries, 10)
    np.testing.assert_array_equal(approx_i, exact_i)
    np.testing.assert_allclose(approx_d, exact_d, atol=1e-5)


def test_recall_at_10_counts_found_neighbours():
    from reid_baseline.inference.approximate import recall_at_10
    exact = np.array([list(range(11)), list(range(11))])
    approx = np.array([list(range(11)), [0, 1, 2, 3, 4, 20, 21, 22, 23, 24, 25]])
    # own row 0 is not counted: row 1 found 1..4 of 1..10
    assert recall_at_10(exact, approx, own_rows=[0, 0]) == pytest.approx((1.0 + 0.4) / 2)


def test_missing_faiss_names_the_extra(monkeypatch):
    import sys

    from reid_baseline.inference.approximate import import_faiss
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(ConfigError, match=r"pip install -c constraints\.txt -e '\.\[faiss\]'"):
        import_faiss()


def test_an_ivf_index_with_more_cells_than_images_is_one_error(tmp_path):
    pytest.importorskip("faiss")
    from reid_baseline.inference.approximate import build_approximate
    _build(tmp_path / "store", _unit(np.random.RandomState(0), 24, 8))
    store = index.FeatureStore(str(tmp_path / "store"))
    with pytest.raises(ConfigError, match=r"nlist 1000: the index holds 24 images"):
        build_approximate(store, nlist=1000)
    with pytest.raises(ConfigError, match="nprobe must be an integer >= 1"):
        build_approximate(store, nprobe=0)


@pytest.mark.timeout(120)
def test_fifos_huge_images_and_line_breaks_in_names_are_skipped_and_listed(tiny_model, tmp_path):
    import cv2

    from test_images import _png_header_only
    photos = tmp_path / "photos"
    photos.mkdir()
    good = cv2.imencode(".jpg", np.full((32, 16, 3), 90, np.uint8))[1].tobytes()
    for name in ["a.jpg", "b.jpg"]:
        (photos / name).write_bytes(good)
    (photos / "line\nbreak.jpg").write_bytes(good)
    os.mkfifo(str(photos / "pipe.jpg"))  # reading it would block forever
    _png_header_only(str(photos / "huge.png"), 40000, 40000)
    manifest = tiny_model.build_index(str(photos), str(tmp_path / "p.index"))
    assert manifest["count"] == 2
    skipped = {os.path.basename(p): reason for p, reason in manifest["skipped"]}
    assert sorted(skipped) == ["huge.png", "line\nbreak.jpg", "pipe.jpg"]
    assert "MAX_IMAGE_PIXELS" in skipped["huge.png"]
    assert "not a regular file" in skipped["pipe.jpg"]


@pytest.mark.parametrize("nlist, nprobe", [(0, None), (-5, None), (None, 0), (None, -5)])
def test_zero_or_negative_cells_are_refused_before_any_image_is_embedded(tiny_model, tmp_path,
                                                                       monkeypatch, nlist,
                                                                       nprobe):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"x")
    monkeypatch.setattr(type(tiny_model), "__call__", lambda *a, **k: pytest.fail("embedded"))
    name = "nlist" if nlist is not None else "nprobe"
    with pytest.raises(ConfigError, match="%s must be an integer >= 1" % name):
        tiny_model.build_index(str(tmp_path / "photos"), str(tmp_path / "out.index"),
                               approximate=True, nlist=nlist, nprobe=nprobe)
    if nprobe is not None:
        with pytest.raises(ConfigError, match="nprobe must be an integer >= 1"):
            tiny_model.search(["q.jpg"], str(tmp_path / "none.index"), approximate=True,
                              nprobe=nprobe)
        with pytest.raises(ConfigError, match="nprobe must be an integer >= 1"):
            tiny_model.rank(np.zeros((1, 512), np.float32), str(tmp_path / "none.index"),
                            approximate=True, nprobe=nprobe)


def test_api_errors_name_the_api_arguments_not_command_line_flags(tiny_model, tmp_path):
    from reid_baseline import ReIDModel
    from reid_baseline.errors import ReIDError
    (tmp_path / "empty").mkdir()
    calls = {"params file": lambda: ReIDModel(tiny_model.cfg, str(tmp_path / "missing.params")),
             "images folder": lambda: tiny_model.build_index(str(tmp_path / "none"),
                                                             str(tmp_path / "out.index")),
             "gallery": lambda: tiny_model.search([str(tmp_path / "q.jpg")],
                                                  str(tmp_path / "none.index")),
             "gallery ": lambda: tiny_model.rank(np.zeros((1, 512), np.float32),
                                                 str(tmp_path / "empty")),
             "topk": lambda: tiny_model.rank(np.zeros((1, 512), np.float32),
                                             str(tmp_path / "empty"), topk="3")}
    for named, call in calls.items():
        with pytest.raises(ReIDError) as exc:
            call()
        assert str(exc.value).startswith(named.strip() + " ") and "--" not in str(exc.value)


@pytest.mark.timeout(60)
def test_an_index_folder_another_process_builds_is_refused_naming_it(tmp_path):
    from conftest import lock_held_by_another_process
    folder = tmp_path / "gallery.index"
    folder.mkdir()
    feats = _unit(np.random.default_rng(5), 10, 4)
    with lock_held_by_another_process(folder) as pid:
        with pytest.raises(OutputError, match=r"index folder %s is being written by another "
                           r"process \(PID %d\)" % (folder, pid)):
            _build(folder, feats)
    _build(folder, feats)  # the lock died with its process
    assert len(index.FeatureStore(str(folder))) == 10
