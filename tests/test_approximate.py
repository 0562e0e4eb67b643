"""reid_baseline.inference.approximate: the calibrated shortlist index re-ranked exactly, and the
exact path it is measured against."""
import os

import numpy as np
import pytest

from reid_baseline.errors import ConfigError, DatasetError
from reid_baseline.inference import store as index
from reid_baseline.inference.approximate import (
    APPROXIMATE,
    approximate_top_k,
    build_approximate,
    recall_at_10,
)
from reid_baseline.inference.exact import exact_top_k

pytest.importorskip("faiss")

CONFIG = "MODEL:\n  BACKBONE: resnet18_v1\n"
DIM, LATENT, PER_ID = 96, 24, 6


def _views(ids, rng, loadings):
    """Unit-norm images of identities `ids`: a low-rank centre per identity (from its id) plus
    view noise, like ReID features (neighbours beyond the true matches are structured)."""
    centres = np.stack([np.random.default_rng([5, int(i)]).standard_normal(LATENT)
                        for i in ids]) @ loadings
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = centres + 0.35 * rng.standard_normal((len(ids), DIM)) / np.sqrt(DIM)
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def _loadings():
    rng = np.random.default_rng(9)
    return rng.standard_normal((LATENT, DIM)) / np.sqrt(1.0 + np.arange(LATENT))[:, None]


def _store(folder, n=3000, dtype="float16", stop_at=None):
    """A generated store of n rows (identity r // PER_ID); `stop_at`: the embed call that is
    interrupted (KeyboardInterrupt) before the build is run again to its end."""
    feats = _views(np.arange(n) // PER_ID, np.random.default_rng(1), _loadings())
    paths = ["/photos/%05d.jpg" % i for i in range(n)]
    calls = []

    def embed(part):
        calls.append(1)
        if len(calls) == stop_at:
            raise KeyboardInterrupt
        return feats[[int(p[8:13]) for p in part]], part, []
    if stop_at:
        with pytest.raises(KeyboardInterrupt):
            index.build_store(str(folder), paths, embed, CONFIG, None, "ab" * 32, dtype=dtype,
                              chunk=512)
    index.build_store(str(folder), paths, embed, CONFIG, None, "ab" * 32, dtype=dtype,
                      chunk=512)
    return index.FeatureStore(str(folder))


def _numpy_top_k(queries, gallery, k):
    """Cosine distances by plain float64 numpy: (indices, distances) of the k nearest."""
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    g = np.asarray(gallery, np.float64)
    dist = 1.0 - q @ (g / np.linalg.norm(g, axis=1, keepdims=True)).T
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(dist, order, axis=1)


@pytest.mark.timeout(120)
def test_calibration_reaches_its_target_and_records_it(tmp_path):
    store = _store(tmp_path / "g.index")
    info = build_approximate(store, target_recall=0.95)
    assert info["target_met"] and info["recall_at_10"] >= 0.95
    assert info["recall_queries"] == 300 and info["target_recall"] == 0.95
    assert 1 <= info["nprobe"] < info["nlist"] and info["shortlist"] >= 1
    assert index.FeatureStore(str(tmp_path / "g.index")).manifest["approximate"] == info
    # New images (not stored rows): the calibrated setting holds, and a lower target is cheaper.
    rng = np.random.default_rng(2)
    queries = _views(rng.integers(0, 3000 // PER_ID, 200), rng, _loadings())
    exact, _ = _numpy_top_k(queries, store.features, 10)
    found, _ = approximate_top_k(store, queries, 10)
    assert recall_at_10(exact, found) >= 0.93
    low = build_approximate(store, target_recall=0.5)
    assert low["target_met"] and (low["nprobe"], low["shortlist"]) <= (info["nprobe"],
                                                                         info["shortlist"])
    assert index.FeatureStore(str(tmp_path / "g.index")).manifest["approximate"] == low
    # A given nprobe is kept, and an unreachable setting says so.
    one = build_approximate(store, nprobe=1, shortlist=10, target_recall=1.0)
    assert (one["nprobe"], one["shortlist"], one["target_met"]) == (1, 10, False)
    assert one["recall_at_10"] < 1.0


@pytest.mark.timeout(120)
def test_an_interrupted_and_resumed_store_gives_the_same_index(tmp_path):
    first = _store(tmp_path / "a.index", n=2000)
    again = _store(tmp_path / "b.index", n=2000, stop_at=3)
    assert (tmp_path / "a.index" / "features.npy").read_bytes() == \
        (tmp_path / "b.index" / "features.npy").read_bytes()
    assert build_approximate(first, seed=3) == build_approximate(again, seed=3)
    assert (tmp_path / "a.index" / APPROXIMATE).read_bytes() == \
        (tmp_path / "b.index" / APPROXIMATE).read_bytes()
    queries = np.asarray(first.features[::97], np.float32)
    for a, b in zip(approximate_top_k(first, queries, 10), approximate_top_k(again, queries, 10),
                    strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.timeout(120)
def test_a_damaged_or_foreign_approximate_index_is_one_error_line(tmp_path):
    store = _store(tmp_path / "g.index", n=1200)
    other = _store(tmp_path / "other.index", n=1500)
    build_approximate(store)
    build_approximate(other)
    path = tmp_path / "g.index" / APPROXIMATE
    whole = path.read_bytes()
    queries = np.asarray(store.features[:2], np.float32)
    cases = {"cannot be read": whole[:len(whole) // 3],
             "holds 1500 rows of 96 dimensions": (tmp_path / "other.index" /
                                                   APPROXIMATE).read_bytes()}
    for reason, data in cases.items():
        path.write_bytes(data)
        with pytest.raises(DatasetError, match=r"g.index is a damaged index \(its "
                                               r"approximate.faiss %s.*\); build it again$"
                           % reason) as exc:
            approximate_top_k(index.FeatureStore(str(tmp_path / "g.index")), queries, 3)
        assert "\n" not in str(exc.value)
    path.write_bytes(whole)
    fresh = index.FeatureStore(str(tmp_path / "g.index"))
    fresh.update_manifest("approximate", dict(fresh.manifest["approximate"], kind="ivf"))
    with pytest.raises(DatasetError, match=r"approximate.faiss is of another kind, 'ivf'\); "
                                           r"build it again$"):
        approximate_top_k(index.FeatureStore(str(tmp_path / "g.index")), queries, 3)


@pytest.mark.timeout(120)
def test_exact_search_and_the_re_ranked_shortlist_agree_with_numpy(tmp_path):
    store = _store(tmp_path / "g.index", n=1500, dtype="float32")
    rng = np.random.default_rng(4)
    queries = _views(rng.integers(0, 1500 // PER_ID, 30), rng, _loadings())
    want_i, want_d = _numpy_top_k(queries, store.features, 10)
    got_i, got_d = exact_top_k(queries, store.features, 10)
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_allclose(got_d, want_d, atol=1e-5)
    build_approximate(store)
    approx_i, approx_d = approximate_top_k(store, queries, 10)
    # The shortlist is re-ranked exactly: each row found comes with its exact distance, in order.
    full = _numpy_top_k(queries, store.features, len(store))
    exact_of = np.take_along_axis(full[1], np.argsort(full[0], axis=1), axis=1)
    np.testing.assert_allclose(approx_d, np.take_along_axis(exact_of, approx_i, axis=1),
                               atol=1e-5)
    assert (np.diff(approx_d, axis=1) >= 0).all()
    # The whole gallery as the shortlist is exact search.
    whole_i, whole_d = approximate_top_k(store, queries, 10, nprobe=10 ** 6, shortlist=1500)
    np.testing.assert_array_equal(whole_i, want_i)


def test_shortlist_and_target_recall_are_checked_before_work(tmp_path):
    store = _store(tmp_path / "g.index", n=600)
    for kwargs, message in (({"shortlist": 0}, "shortlist must be an integer >= 1"),
                            ({"target_recall": 0}, r"target recall must be a number in \(0, 1\]"),
                            ({"target_recall": 1.5}, r"target recall must be a number in")):
        with pytest.raises(ConfigError, match=message):
            build_approximate(store, **kwargs)
    assert not os.path.exists(str(tmp_path / "g.index" / APPROXIMATE))
    with pytest.raises(ConfigError, match="shortlist must be an integer >= 1"):
        approximate_top_k(store, np.zeros((1, DIM), np.float32), 3, shortlist=-1)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_re_ranking_in_blocks_of_queries_is_each_query_s_exact_order(tmp_path, monkeypatch,
                                                                     metric):
    from reid_baseline.inference import approximate
    store = _store(tmp_path / "g.index", n=600)
    rng = np.random.default_rng(6)
    queries = rng.standard_normal((7, DIM)).astype(np.float32)
    candidates = rng.integers(0, 600, (7, 12))
    candidates[1, 5:] = -1  # fewer candidates than topk: -1 padded
    candidates[2, :] = -1  # none
    candidates[3, 4:8] = candidates[3, 0]  # a repeat is one row
    candidates[4, 1] = candidates[4, 0]
    want_i = np.full((7, 10), -1)
    for q, rows in enumerate(candidates):
        rows = np.unique(rows[rows >= 0])
        if len(rows):
            i, _ = exact_top_k(queries[q:q + 1], store.features[rows], 10, metric=metric)
            want_i[q, :i.shape[1]] = rows[i[0]]
    whole = approximate._rerank(store, queries, candidates, 10, metric)
    # Blocks of 1 and of 3 queries (RERANK_BYTES over the bytes of one query's rows).
    for per_block in (1, 3):
        monkeypatch.setattr(approximate, "RERANK_BYTES", per_block * 4 * DIM * 12)
        got_i, got_d = approximate._rerank(store, queries, candidates, 10, metric)
        np.testing.assert_array_equal(got_i, want_i)
        np.testing.assert_array_equal(got_i, whole[0])
        np.testing.assert_allclose(got_d, whole[1], atol=1e-6)
    feats = np.asarray(store.features, np.float32)
    for q in range(7):
        found = got_i[q][got_i[q] >= 0]
        assert len(found) == min(10, len(np.unique(candidates[q][candidates[q] >= 0])))
        want_d = exact_top_k(queries[q:q + 1], feats[found], len(found), metric=metric)[1][0]
        np.testing.assert_allclose(np.sort(got_d[q][:len(found)]), np.sort(want_d), atol=1e-5)
        assert np.isinf(got_d[q][len(found):]).all()
