"""evaluation.distances: both metrics against float64, both product kernels, the per-process
kernel choice on a fake clock, and top_k against a stable argsort."""
import numpy as np
import pytest

from reid_baseline.evaluation import distances
from reid_baseline.evaluation.distances import compute_distance, top_k


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compute_distance_matches_naive(dtype):
    rng = np.random.default_rng(0)
    q = (rng.standard_normal((7, 16)) * 3).astype(dtype)
    g = (rng.standard_normal((11, 16)) * 3).astype(dtype)
    q64, g64 = q.astype(np.float64), g.astype(np.float64)
    naive_euc = np.sqrt(((q64[:, None, :] - g64[None, :, :]) ** 2).sum(-1))
    naive_cos = 1 - (q64 @ g64.T) / np.outer(np.linalg.norm(q64, axis=1),
                                              np.linalg.norm(g64, axis=1))
    for metric, naive in (("euclidean", naive_euc), ("cosine", naive_cos)):
        d = compute_distance(q, g, metric=metric)
        assert d.dtype == np.float32 and d.shape == (7, 11)
        np.testing.assert_allclose(d, naive, rtol=1e-5, atol=1e-5)
    # Normalised inputs, and a point against itself.
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    np.testing.assert_allclose(compute_distance(qn, qn, "cosine").diagonal(), 0, atol=1e-6)
    np.testing.assert_allclose(compute_distance(q, q, "euclidean").diagonal(), 0, atol=1e-2)
    assert (compute_distance(q, q, "euclidean") >= 0).all()


def test_distance_product_equals_numpy_at_feature_size():
    # The product runs in MXNet's oneDNN (not numpy's OpenBLAS): float32 results as numpy's,
    # for non-contiguous views too; the caller's arrays stay writeable and unchanged.
    rng = np.random.default_rng(1)
    q = rng.standard_normal((300, 2048), dtype=np.float32)
    g = rng.standard_normal((1030, 4096), dtype=np.float32)[:, ::2]  # a strided view
    q_before, g_before = q.copy(), g.copy()
    expected = q.astype(np.float64) @ g.T.astype(np.float64)
    qn = np.linalg.norm(q.astype(np.float64), axis=1)
    gn = np.linalg.norm(g.astype(np.float64), axis=1)
    got = compute_distance(q, g, "cosine")
    np.testing.assert_allclose(got, 1 - expected / np.outer(qn, gn), rtol=0, atol=2e-6)
    d2 = qn[:, None] ** 2 + gn[None, :] ** 2 - 2 * expected
    np.testing.assert_allclose(compute_distance(q, g, "euclidean"), np.sqrt(d2), rtol=2e-6)
    np.testing.assert_array_equal(q, q_before)
    np.testing.assert_array_equal(g, g_before)
    assert q.flags.writeable and g.flags.writeable and got.flags.writeable
    assert compute_distance(q[:0], g, "euclidean").shape == (0, 1030)


def test_compute_distance_errors():
    x = np.zeros((2, 4), np.float32)
    with pytest.raises(ValueError, match="cosine.*euclidean"):
        compute_distance(x, x, metric="manhattan")
    with pytest.raises(ValueError, match="dimensions"):
        compute_distance(x, np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="2-D"):
        compute_distance(np.zeros(4), x)


def test_distance_products_are_split_into_row_blocks_under_the_tensor_size_limit(monkeypatch):
    monkeypatch.setattr(distances, "_MAX_TENSOR", 20)  # blocks of 2 query rows x 9 gallery
    rows = _count_onednn_products(monkeypatch)
    rng = np.random.RandomState(0)
    q, g = rng.rand(7, 5).astype(np.float32), rng.rand(9, 5).astype(np.float32)
    expected = 1 - (q.astype(np.float64) @ g.T) / np.outer(np.linalg.norm(q, axis=1),
                                                            np.linalg.norm(g, axis=1))
    np.testing.assert_allclose(distances.compute_distance(q, g, kernel="onednn"), expected,
                               atol=1e-6)
    assert rows == [2, 2, 2, 1]  # the query rows of each oneDNN product


def _count_onednn_products(monkeypatch):
    """A list that receives the row count of every oneDNN product from now on."""
    rows, real = [], distances._FULLY_CONNECTED

    def counting(data, *args, **kwargs):
        rows.append(data.shape[0])
        return real(data, *args, **kwargs)

    monkeypatch.setattr(distances, "_FULLY_CONNECTED", counting)
    return rows


def _float64_distance(q, g, metric):
    q, g = q.astype(np.float64), g.astype(np.float64)
    if metric == "cosine":
        return 1 - (q @ g.T) / np.outer(np.linalg.norm(q, axis=1), np.linalg.norm(g, axis=1))
    return np.sqrt(np.maximum((q * q).sum(1)[:, None] + (g * g).sum(1)[None] - 2 * q @ g.T, 0))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_every_product_kernel_gives_the_float64_distances(monkeypatch, metric):
    assert distances.product_kernel() in distances.KERNELS
    assert distances.product_kernel() == distances.product_kernel()  # chosen once
    rng = np.random.RandomState(3)
    q, g = rng.rand(37, 300).astype(np.float32), rng.rand(53, 300).astype(np.float32)
    expected = _float64_distance(q, g, metric)
    chosen, onednn_rows = {}, _count_onednn_products(monkeypatch)
    for kernel in distances.KERNELS:  # the chooser's pick forced to each kernel in turn
        monkeypatch.setattr(distances, "product_kernel", lambda kernel=kernel: kernel)
        del onednn_rows[:]
        chosen[kernel] = distances.compute_distance(q, g, metric)
        assert onednn_rows == ([37] if kernel == "onednn" else [])  # the forced kernel ran
        assert chosen[kernel].dtype == np.float32 and chosen[kernel].shape == (37, 53)
        np.testing.assert_allclose(chosen[kernel], expected, rtol=0, atol=2e-5)
        np.testing.assert_allclose(distances.product_nt(q, g), q.astype(np.float64) @ g.T,
                                   rtol=1e-5, atol=0)
    np.testing.assert_allclose(chosen["numpy"], chosen["onednn"], rtol=0, atol=2e-5)


def _fake_clock(monkeypatch, durations):
    """distances' clock replaced by one that reads, for each (tiny, large) pair of
    `durations` in turn, a start, start + tiny, and start + tiny + large; a second passes
    between pairs (the loop's own time, which no measurement may include)."""
    import types
    readings, now = [], 100.0
    for tiny, large in durations:
        readings += [now, now + tiny, now + tiny + large]
        now += tiny + large + 1.0
    clock = iter(readings)
    monkeypatch.setattr(distances, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    return clock


def test_measure_product_kernels_is_the_best_product_less_the_best_call(monkeypatch):
    assert distances.KERNELS == ("numpy", "onednn")
    # (tiny, large) seconds of repeat 0 numpy, repeat 0 onednn, repeat 1 numpy, repeat 1 onednn
    clock = _fake_clock(monkeypatch, [(0.001, 0.010), (0.002, 0.005),
                                                  (0.0005, 0.012), (0.003, 0.004)])
    seconds = distances.measure_product_kernels((8, 16, 32), repeats=2)
    assert next(clock, None) is None  # three readings per kernel and repeat, no more
    assert seconds == pytest.approx({"numpy": 0.010 - 0.0005, "onednn": 0.004 - 0.002},
                                    rel=0, abs=1e-12)


def test_a_product_no_slower_than_the_tiny_one_measures_zero_and_the_chooser_takes_it(
        monkeypatch):
    _fake_clock(monkeypatch, [(0.001, 0.003), (0.004, 0.002)])
    seconds = distances.measure_product_kernels((8, 16, 32), repeats=1)
    assert seconds == pytest.approx({"numpy": 0.002, "onednn": 0.0}, rel=0, abs=1e-12)
    monkeypatch.setattr(distances, "measure_product_kernels", lambda: seconds)
    assert distances.product_kernel.__wrapped__() == "onednn"  # uncached: this measurement
    monkeypatch.setattr(distances, "measure_product_kernels", lambda: {"numpy": 0.0,
                                                                       "onednn": 0.0})
    assert distances.product_kernel.__wrapped__() == "numpy"  # a tie: the first kernel


def test_measure_product_kernels_times_both_kernels_on_the_real_clock():
    seconds = distances.measure_product_kernels((8, 16, 32), repeats=1)
    assert sorted(seconds) == sorted(distances.KERNELS)
    assert all(0 <= s < 10 for s in seconds.values())


def test_unknown_product_kernel_is_refused():
    with pytest.raises(ValueError, match="kernel"):
        distances.compute_distance(np.ones((2, 3)), np.ones((4, 3)), kernel="cuda")


@pytest.mark.parametrize("levels", [None, 7, 50])
def test_top_k_matches_stable_argsort(levels):
    rng = np.random.default_rng(levels or 0)
    block = rng.random((40, 3000)).astype(np.float32)
    if levels:  # heavy ties, also at the k-th position
        block = np.floor(block * levels).astype(np.float32)
    block[3, :] = 0.5          # a constant row
    block[4, ::7] = np.inf      # infinities
    for k in (1, 5, 21, 60):
        expected = np.argsort(block, axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(top_k(block, k), expected)
