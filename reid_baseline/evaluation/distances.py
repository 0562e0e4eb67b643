"""Distances between feature sets: one float32 matrix product, then the metric in place.

The product runs in numpy's BLAS or in MXNet's oneDNN, whichever is faster on the CPU at hand:
their speeds differ by several times, either way round, from one CPU to another (numpy's
bundled OpenBLAS falls back to a generic kernel on CPUs it does not know), so the choice is
measured once per process (:func:`product_kernel`); docs/BENCHMARKS.md has the numbers. Also
here: :func:`top_k`, the exact k nearest of each row, for searches and re-ranking.
"""
import functools
import logging
import time

import mxnet as mx
import numpy as np

__all__ = ["compute_distance", "product_nt", "product_kernel", "measure_product_kernels",
           "top_k", "METRICS", "KERNELS"]

logger = logging.getLogger(__name__)

# Bound at import: mxnet.contrib.amp.init() (SOLVER.AMP) later replaces mx.nd.FullyConnected
# with a wrapper that casts to bfloat16/float16 and ignores `out`; distances stay float32.
_FULLY_CONNECTED = mx.nd.FullyConnected
_MAX_TENSOR = 2 ** 31 - 1

METRICS = ("cosine", "euclidean")
KERNELS = ("numpy", "onednn")  # the matrix products compute_distance can use
# The product timed to choose the kernel: 0.13 GFLOP, about 2 ms each on two cores, with the
# feature width of real use, so each kernel runs its large-product code path.
_CALIBRATION_SHAPE = (128, 512, 1024)


def compute_distance(query_feats, gallery_feats, metric="cosine", kernel=None):
    """Return the (Q, G) float32 distance matrix between two feature sets.

    ``metric="cosine"``: ``1 - cos(q, g)``; features are normalised on the fly
    unless their norms are already 1. ``metric="euclidean"``: the plain
    (not squared) L2 distance, from ``|q|^2 + |g|^2 - 2 q.g`` clipped at 0.
    One float32 matrix product (:func:`product_nt`, by `kernel`: None for this process's
    :func:`product_kernel`); everything else is done in place on its result.
    """
    if metric not in METRICS:
        raise ValueError("metric must be one of %s, got %r" % (METRICS, metric))
    q = np.asarray(query_feats)
    g = np.asarray(gallery_feats)
    if q.ndim != 2 or g.ndim != 2:
        raise ValueError("features must be 2-D (N, D); got query %s, gallery %s"
                         % (q.shape, g.shape))
    if q.shape[1] != g.shape[1]:
        raise ValueError("feature dimensions differ: query %d, gallery %d"
                         % (q.shape[1], g.shape[1]))
    # astype(copy=False) only copies when the input is not float32 already.
    q = q.astype(np.float32, copy=False)
    g = g.astype(np.float32, copy=False)
    dist = product_nt(q, g, kernel)
    if metric == "cosine":
        # einsum: row norms without a temporary copy of the features
        qn = np.sqrt(np.einsum("ij,ij->i", q, q))
        gn = np.sqrt(np.einsum("ij,ij->i", g, g))
        if not (np.allclose(qn, 1.0, rtol=0, atol=1e-6)
                and np.allclose(gn, 1.0, rtol=0, atol=1e-6)):
            eps = np.float32(1e-12)  # zero vectors get similarity 0
            dist /= np.maximum(qn, eps)[:, None]
            dist /= np.maximum(gn, eps)[None, :]
        np.subtract(np.float32(1.0), dist, out=dist)
    else:
        dist *= np.float32(-2.0)
        dist += np.einsum("ij,ij->i", q, q)[:, None]
        dist += np.einsum("ij,ij->i", g, g)[None, :]
        np.maximum(dist, 0, out=dist)  # rounding can make it slightly negative
        np.sqrt(dist, out=dist)
    return dist


def product_nt(a, b, kernel=None):
    """``a @ b.T`` of two float32 (N, D) and (M, D) arrays as a new (N, M) float32 array, by
    `kernel` ("numpy": numpy's BLAS; "onednn": MXNet's oneDNN FullyConnected; None: the
    faster of the two in this process, see :func:`product_kernel`)."""
    kernel = product_kernel() if kernel is None else kernel
    if kernel not in KERNELS:
        raise ValueError("kernel must be one of %s, got %r" % (KERNELS, kernel))
    out = np.empty((a.shape[0], b.shape[0]), np.float32)
    if out.size == 0 or a.shape[1] == 0:
        out[...] = 0
        return out
    if kernel == "numpy":
        return np.matmul(a, b.T, out=out)
    # Zero-copy wrappers of views (from_numpy marks what it wraps read-only: the views, not
    # the caller's arrays or `out`); MXNet writes the product into out's memory. Row blocks
    # keep each output under 2**31 entries, the tensor size limit of MXNet's pip wheels.
    weight = mx.nd.from_numpy(np.ascontiguousarray(b).view(), zero_copy=True)
    a = np.ascontiguousarray(a)
    rows = max(1, _MAX_TENSOR // b.shape[0])
    for start in range(0, a.shape[0], rows):
        block = out[start:start + rows]
        result = mx.nd.from_numpy(block.view(), zero_copy=True)
        _FULLY_CONNECTED(mx.nd.from_numpy(a[start:start + rows].view(), zero_copy=True), weight,
                         no_bias=True, num_hidden=b.shape[0], out=result)
        result.wait_to_read()
    return out


def measure_product_kernels(shape=_CALIBRATION_SHAPE, repeats=2):
    """Seconds each kernel of KERNELS takes for one (N, D) x (M, D) product of `shape` (N, M,
    D): the best of `repeats` runs, the kernels taking turns, after one untimed run each
    (MXNet's first operator call and oneDNN's code generation are not what is compared).

    The time of a tiny product (its best of `repeats` too) is taken out of each: it is what
    handing a product to the kernel costs (MXNet's engine thread), paid once per call, while real
    products are large. 0.0 when the product was no slower than the tiny one."""
    n, m, d = shape
    a = np.full((n, d), 0.5, np.float32)
    b = np.full((m, d), 0.25, np.float32)
    tiny_a, tiny_b = a[:1, :8], b[:1, :8]
    best = dict.fromkeys(KERNELS, float("inf"))
    call = dict.fromkeys(KERNELS, float("inf"))
    for kernel in KERNELS:
        product_nt(a, b, kernel)
        product_nt(tiny_a, tiny_b, kernel)
    for _ in range(repeats):
        for kernel in KERNELS:
            start = time.perf_counter()
            product_nt(tiny_a, tiny_b, kernel)
            middle = time.perf_counter()
            product_nt(a, b, kernel)
            end = time.perf_counter()
            call[kernel] = min(call[kernel], middle - start)
            best[kernel] = min(best[kernel], end - middle)
    return {kernel: max(best[kernel] - call[kernel], 0.0) for kernel in KERNELS}


@functools.lru_cache(maxsize=None)
def product_kernel():
    """The kernel ("numpy" or "onednn") of this process's distance products: the faster one
    in :func:`measure_product_kernels`, measured at the first call (a few milliseconds) and
    kept for the life of the process (the first of KERNELS on a tie); logged once at debug
    level."""
    seconds = measure_product_kernels()
    kernel = min(KERNELS, key=seconds.get)
    logger.debug("distance product kernel: %s (%s for a %d x %d x %d product)", kernel,
                 ", ".join("%s %.2f ms" % (k, seconds[k] * 1e3) for k in KERNELS),
                 *_CALIBRATION_SHAPE)
    return kernel


def _top_k_exact(block, k):
    """Indices of the k smallest entries of each row, ordered by (value, index)."""
    n = block.shape[1]
    if k >= n:
        return np.argsort(block, axis=1, kind="stable")
    idx = np.argpartition(block, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(block, idx, axis=1)
    # argpartition picks arbitrarily among values equal to the k-th smallest;
    # rows with such a tie beyond the selection are redone exactly.
    thr = vals.max(axis=1)
    for r in np.flatnonzero(np.count_nonzero(block <= thr[:, None], axis=1) > k):
        cand = np.flatnonzero(block[r] <= thr[r])
        idx[r] = cand[np.lexsort((cand, block[r, cand]))[:k]]
    vals = np.take_along_axis(block, idx, axis=1)
    order = np.lexsort((idx, vals), axis=1)
    return np.take_along_axis(idx, order, axis=1)


def top_k(block, k, stride=16):
    """Indices of the k smallest entries of each row of `block`, ordered by (value, column):
    ``np.argsort(block, axis=1, kind="stable")[:, :k]``, faster on wide rows.

    The k-th smallest of every stride-th column bounds each row's k-th smallest
    from above, so the entries at or below it (about k * stride per row) hold
    the k nearest. Those few are packed into a narrow padded array (in column
    order, so position ties break like column ties) and selected exactly.
    """
    n_rows, n = block.shape
    if n // stride < 4 * k:
        return _top_k_exact(block, k)
    thr = np.partition(block[:, ::stride], k - 1, axis=1)[:, k - 1]
    flat = np.flatnonzero(block <= thr[:, None])
    rows, cols = np.divmod(flat, n)
    counts = np.bincount(rows, minlength=n_rows)
    pos = np.arange(len(flat)) - np.repeat(np.cumsum(counts) - counts, counts)
    vals = np.full((n_rows, counts.max()), np.inf, dtype=block.dtype)
    vals[rows, pos] = block.ravel()[flat]
    packed_cols = np.full(vals.shape, n, dtype=np.int64)
    packed_cols[rows, pos] = cols
    return np.take_along_axis(packed_cols, _top_k_exact(vals, k), axis=1)
