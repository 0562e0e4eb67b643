"""Tests for reid_baseline.evaluation.rerank against the dense loop-based reference."""
import numpy as np
import pytest

from reid_baseline.evaluation.rerank import re_ranking

try:  # tests/ on sys.path (pytest rootdir-style imports) or tests as a package
    from reference_impls import reference_re_ranking
except ImportError:  # pragma: no cover
    from tests.reference_impls import reference_re_ranking


def _problem(rng, n_q, n_g, dim=8, dtype=np.float32, quantise=None):
    """Euclidean distances between L2-normalised random features (blocks)."""
    x = rng.standard_normal((n_q + n_g, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    d = np.sqrt(np.maximum(((x[:, None] - x[None]) ** 2).sum(-1), 0))
    if quantise:  # coarse values: many exact ties in the initial ranking
        d = np.round(d * quantise) / quantise
    d = d.astype(dtype)
    return d[:n_q, n_q:], d[:n_q, :n_q], d[n_q:, n_q:]


@pytest.mark.parametrize("n_q,n_g,k1,k2,lam", [
    (30, 80, 20, 6, 0.3),   # the paper's defaults
    (30, 80, 20, 1, 0.3),   # k2 = 1: no query expansion
    (30, 80, 5, 3, 0.5),    # round(5 / 2) = 2
    (30, 80, 7, 2, 0.0),    # pure Jaccard distance
    (12, 40, 3, 3, 1.0),    # pure normalised original distance
    (4, 6, 20, 30, 0.3),    # k1 + 1 and k2 larger than Q + G
    (1, 1, 1, 1, 0.3),
])
def test_matches_reference(n_q, n_g, k1, k2, lam):
    rng = np.random.default_rng(n_q * 1000 + k1 * 10 + k2)
    for _ in range(2):
        q_g, q_q, g_g = _problem(rng, n_q, n_g)
        expected = reference_re_ranking(q_g, q_q, g_g, k1, k2, lam)
        got = re_ranking(q_g, q_q, g_g, k1=k1, k2=k2, lambda_value=lam)
        assert got.dtype == np.float32 and got.shape == (n_q, n_g)
        np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6)


def test_matches_reference_with_ties_and_float64():
    rng = np.random.default_rng(3)
    for quantise in (4, 10):
        q_g, q_q, g_g = _problem(rng, 25, 70, dtype=np.float64, quantise=quantise)
        expected = reference_re_ranking(q_g, q_q, g_g, 10, 4, 0.3)
        got = re_ranking(q_g, q_q, g_g, 10, 4, 0.3)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6)


def test_asymmetric_inputs_follow_column_normalisation():
    # The original normalises columns of the full matrix and transposes; with
    # slightly asymmetric blocks the result must still agree.
    rng = np.random.default_rng(5)
    q_g, q_q, g_g = _problem(rng, 15, 45)
    q_q = q_q * rng.uniform(0.9, 1.1, q_q.shape).astype(np.float32)
    g_g = g_g * rng.uniform(0.9, 1.1, g_g.shape).astype(np.float32)
    expected = reference_re_ranking(q_g, q_q, g_g, 6, 3, 0.3)
    np.testing.assert_allclose(re_ranking(q_g, q_q, g_g, 6, 3, 0.3), expected,
                               rtol=0, atol=2e-6)


def test_small_blocks(monkeypatch):
    # Force many tiny row blocks so block boundaries (query/gallery split
    # inside a block) are exercised.
    import reid_baseline.evaluation.rerank as rr
    monkeypatch.setattr(rr, "_BLOCK_ENTRIES", 300)
    rng = np.random.default_rng(11)
    q_g, q_q, g_g = _problem(rng, 17, 33)
    expected = reference_re_ranking(q_g, q_q, g_g, 8, 3, 0.3)
    np.testing.assert_allclose(rr.re_ranking(q_g, q_q, g_g, 8, 3, 0.3), expected,
                               rtol=0, atol=2e-6)


def test_input_validation():
    rng = np.random.default_rng(0)
    q_g, q_q, g_g = _problem(rng, 5, 9)
    with pytest.raises(ValueError, match="q_q_dist"):
        re_ranking(q_g, q_q[:4, :4], g_g)
    with pytest.raises(ValueError, match="g_g_dist"):
        re_ranking(q_g, q_q, g_g[:, :8])
    with pytest.raises(ValueError, match="q_g_dist"):
        re_ranking(q_g.ravel(), q_q, g_g)
    with pytest.raises(ValueError, match="k1"):
        re_ranking(q_g, q_q, g_g, k1=0)
    with pytest.raises(ValueError, match="k2"):
        re_ranking(q_g, q_q, g_g, k2=2.5)
    with pytest.raises(ValueError, match="lambda_value"):
        re_ranking(q_g, q_q, g_g, lambda_value=1.5)
    g_g = g_g.copy()
    g_g[2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        re_ranking(q_g, q_q, g_g)


def test_matches_reference_wide_rows():
    # Q + G large relative to k1, so the sampled-threshold neighbour search
    # (not only the small-problem fallback) is compared with the reference.
    rng = np.random.default_rng(21)
    q_g, q_q, g_g = _problem(rng, 40, 300)
    for k1, k2 in ((3, 2), (4, 1)):
        expected = reference_re_ranking(q_g, q_q, g_g, k1, k2, 0.3)
        np.testing.assert_allclose(re_ranking(q_g, q_q, g_g, k1, k2, 0.3), expected,
                                   rtol=0, atol=2e-6)


def _features(rng, n, dim, n_ids):
    """L2-normalised features around n_ids identity centres (so neighbourhoods mean something)."""
    centres = rng.standard_normal((n_ids, dim))
    x = centres[rng.integers(0, n_ids, n)] + 0.6 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("n_q,n_g,k1,k2,lam,block", [
    (25, 90, 20, 6, 0.3, None),   # the paper's defaults, one block
    (25, 90, 20, 1, 0.3, 700),    # no query expansion; blocks of 6 rows
    (40, 60, 7, 3, 0.5, 333),     # blocks that do not divide the items
])
def test_re_ranking_features_equals_re_ranking(monkeypatch, n_q, n_g, k1, k2, lam, block):
    import reid_baseline.evaluation.rerank as rr
    from reid_baseline.evaluation.distances import compute_distance
    if block:
        monkeypatch.setattr(rr, "_FEATURE_BLOCK_ENTRIES", block)
    rng = np.random.default_rng(n_q + n_g + k1)
    feats = _features(rng, n_q + n_g, 32, 12)
    q, g = feats[:n_q], feats[n_q:]
    expected = re_ranking(compute_distance(q, g, "euclidean"), compute_distance(q, q, "euclidean"),
                          compute_distance(g, g, "euclidean"), k1=k1, k2=k2, lambda_value=lam)
    got = rr.re_ranking_features(q, g, k1=k1, k2=k2, lambda_value=lam)
    assert got.shape == (n_q, n_g) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6)
    # ... and so the dense reference too (the re-ranking changes the order: not a no-op).
    ref = reference_re_ranking(compute_distance(q, g, "euclidean"),
                               compute_distance(q, q, "euclidean"),
                               compute_distance(g, g, "euclidean"), k1, k2, lam)
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-6)
    assert (np.argsort(got, axis=1)[:, :5] != np.argsort(compute_distance(q, g), axis=1)[:, :5]).any()


def test_re_ranking_features_input_errors():
    from reid_baseline.evaluation.rerank import re_ranking_features
    with pytest.raises(ValueError, match="same width"):
        re_ranking_features(np.zeros((3, 4)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="k1"):
        re_ranking_features(np.ones((3, 4)), np.ones((5, 4)), k1=0)
