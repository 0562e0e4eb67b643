"""Distance computation and Market-1501 ranking metrics (CMC, mAP).

The metrics are numpy only. The distances' matrix product runs in numpy's BLAS or in MXNet's
oneDNN, whichever is faster on the CPU at hand (:func:`product_kernel`): numpy's bundled
OpenBLAS falls back to a generic kernel on CPUs it does not know (4x slower than oneDNN on an
AMD EPYC), while on an Intel Xeon with AVX-512 its SkylakeX kernel takes half oneDNN's time.

``evaluate_ranking`` never sorts whole gallery rows. For each query it only
needs the ranks of its true matches among the valid gallery items, and the
rank of a match is the number of valid items that come before it. Items that
come after the query's last true match cannot influence CMC or AP, so each
row is reduced with one vectorised comparison to the items at or below the
last match's distance, and only those are ranked exactly: each is packed into
an integer key (query, distance, gallery index) and located among the matches'
keys with one searchsorted. When most items of a block are such candidates (a
weak model), the block's rows are sorted instead (numpy's SIMD float sort).
"""
import functools
import logging
import time

import mxnet as mx
import numpy as np

__all__ = ["compute_distance", "evaluate_ranking", "chance_rank1", "product_nt",
           "product_kernel", "measure_product_kernels", "AP_MODES", "METRICS", "KERNELS"]

logger = logging.getLogger(__name__)

# Bound at import: mxnet.contrib.amp.init() (SOLVER.AMP) later replaces mx.nd.FullyConnected
# with a wrapper that casts to bfloat16/float16 and ignores `out`; distances stay float32.
_FULLY_CONNECTED = mx.nd.FullyConnected
_MAX_TENSOR = 2 ** 31 - 1

METRICS = ("cosine", "euclidean")
AP_MODES = ("trapezoid", "noninterp")
KERNELS = ("numpy", "onednn")  # the matrix products compute_distance can use
# The product timed to choose the kernel: 0.13 GFLOP, about 2 ms each on two cores, with the
# feature width of real use, so each kernel runs its large-product code path.
_CALIBRATION_SHAPE = (128, 512, 1024)

# Work on blocks of about 4M distance entries (16 MB of float32) at a time.
_BLOCK_ENTRIES = 1 << 22
# Sort whole rows of a block instead when more than this fraction of its items
# precede some true match (measured: ~35 ns per candidate vs ~6 ns per item).
_SORT_ABOVE = 0.2


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


def _order_bits(vals):
    """Map float32 values to int64 keys in [0, 2**32) with the same order."""
    v = (vals + np.float32(0.0)).view(np.int32)  # +0.0 turns -0.0 into +0.0
    v = np.where(v < 0, v ^ np.int32(0x7FFFFFFF), v)
    return v.astype(np.int64) + (1 << 31)


def _candidates(block, thr, junk, mask=None):
    """Row/column of the items at or below each row's last-match distance.

    Items beyond it come after every match and never matter. Junk columns
    (if any) are dropped here; NaN distances never qualify (they rank last).
    """
    flat = np.flatnonzero(block <= thr[:, None] if mask is None else mask)
    if junk is not None:
        flat = flat[~junk[flat % block.shape[1]]]
    return np.divmod(flat, block.shape[1])


def _ranks_float32(block, rows, cols, pos_start, ex_rows, ex_cols, thr, junk):
    """0-based ranks (among valid items) of each true match of a row block.

    rows/cols: the block's matches, sorted by (row, distance, column);
    pos_start: index of each row's first match. ex_rows/ex_cols: same-pid
    same-camera items, to be ignored; junk: boolean mask of junk columns or None.
    Returns (ranks, i) where i numbers the matches within their row.
    """
    n_rows, n_gal = block.shape
    # Bits: row (< 2**22 / n_gal rows per block) + 32 (distance) + column <= 63.
    cbits = max(1, int(n_gal - 1).bit_length())
    rshift = 32 + cbits

    def keys(r, c):
        # (row, distance, column) packed into one int64 whose integer order
        # is row-major, then distance, then gallery index (the tie rule).
        return (r.astype(np.int64) << rshift) | (_order_bits(block[r, c]) << cbits) | c

    mask = block <= thr[:, None]
    if np.count_nonzero(mask) > _SORT_ABOVE * mask.size:
        # Most items precede some match (a weak model): sorting is cheaper.
        return _ranks_sorted(block, rows, cols, pos_start, ex_rows, ex_cols, junk)
    pkey = keys(rows, cols)
    # slot = number of matches (in rows <= r) with key <= the item's key, plus
    # r, so that each row owns n_matches + 1 distinct slots.
    cr, cc = _candidates(block, thr, junk, mask)
    hist = np.bincount(np.searchsorted(pkey, keys(cr, cc), side="right") + cr,
                       minlength=len(pkey) + n_rows)
    # Same-pid same-camera items were counted among the candidates (far
    # cheaper than testing every candidate): take those back out.
    ex = block[ex_rows, ex_cols] <= thr[ex_rows]
    if junk is not None:
        ex &= ~junk[ex_cols]
    ex_rows, ex_cols = ex_rows[ex], ex_cols[ex]
    hist -= np.bincount(np.searchsorted(pkey, keys(ex_rows, ex_cols), side="right")
                        + ex_rows, minlength=len(pkey) + n_rows)
    hist = np.cumsum(hist)
    first = pos_start + np.arange(n_rows)  # first slot of each row
    base = np.where(first > 0, hist[np.maximum(first - 1, 0)], 0)
    local = np.arange(len(rows)) - pos_start[rows]
    # Items in slots first[r] .. first[r] + i precede the i-th match of row r.
    return hist[first[rows] + local] - base[rows], local


def _ranks_sorted(block, rows, cols, pos_start, ex_rows, ex_cols, junk):
    """_ranks_float32 for blocks where most items are candidates: sort each row."""
    ignored = block.copy()
    if junk is not None:
        ignored[:, junk] = np.nan
    ignored[ex_rows, ex_cols] = np.nan  # NaN sorts last and never counts
    srt = np.sort(ignored, axis=1)
    dist = block[rows, cols]
    bounds = np.append(pos_start, len(rows))
    below = np.empty(len(rows), dtype=np.int64)
    equal = np.empty(len(rows), dtype=np.int64)
    for r in np.unique(rows):  # a loop over queries, not gallery items
        d = dist[bounds[r]:bounds[r + 1]]
        below[bounds[r]:bounds[r + 1]] = np.searchsorted(srt[r], d, side="left")
        equal[bounds[r]:bounds[r + 1]] = np.searchsorted(srt[r], d, side="right")
    equal -= below
    # Exact ties with other items: those with a lower gallery index come first.
    for t in np.flatnonzero(equal > 1):
        below[t] += np.count_nonzero(ignored[rows[t], :cols[t]] == dist[t])
    return below, np.arange(len(rows)) - pos_start[rows]


def _ranks_generic(block, rows, cols, pos_start, ex_rows, ex_cols, thr, junk):
    """Same as _ranks_float32 for any real dtype, via a lexsort of candidates."""
    cr, cc = _candidates(block, thr, junk)
    excluded = np.zeros(block.shape, dtype=bool)
    excluded[ex_rows, ex_cols] = True
    keep = ~excluded[cr, cc]
    cr, cc = cr[keep], cc[keep]
    order = np.lexsort((cc, block[cr, cc], cr))
    cr, cc = cr[order], cc[order]
    row_first = np.searchsorted(cr, np.arange(block.shape[0]), side="left")
    # Matches are candidates themselves; find them in the sorted list.
    is_match = np.zeros(block.shape, dtype=bool)
    is_match[rows, cols] = True
    where = np.flatnonzero(is_match[cr, cc])
    local = np.arange(len(rows)) - pos_start[rows]
    return where - row_first[cr[where]], local


def evaluate_ranking(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50,
                     ap_mode="trapezoid"):
    """Market-1501 single-query CMC and mAP from a (Q, G) distance matrix.

    Protocol: for each query, gallery items with the same pid and the same
    camera, and items with pid -1 (junk), are ignored; pid 0 (distractors) and
    other pids are negatives. Queries with no valid match are skipped.
    Ties: at equal distance the lower gallery index ranks first, exactly as
    ``np.argsort(row, kind="stable")``. NaN distances rank last (as argsort);
    a NaN distance for a true match raises ValueError.

    ap_mode "trapezoid": official Market-1501 / Zheng's ``compute_mAP``, where
    match i (0-based) at valid rank r_i adds
    ``(1/n) * (old_precision + precision) / 2`` with ``precision = (i+1)/(r_i+1)``
    and ``old_precision = i/r_i`` (1 if r_i == 0). ap_mode "noninterp":
    torchreid / fast-reid, the mean over matches of ``(i+1)/(r_i+1)``.

    mINP (Ye et al., "Deep learning for person re-identification", the AGW
    baseline): per query, the number of true matches divided by the 1-based
    rank of its hardest (last-ranked) true match, averaged over valid queries.

    Returns a dict: ``cmc`` (float64 array of length max_rank, the fraction of
    valid queries whose first match has rank <= k), ``mAP`` (float), ``mINP``
    (float), ``query_ap`` (float64 array of length Q, each query's AP, NaN for
    skipped queries), ``num_valid_queries``, ``num_skipped_queries``,
    ``ap_mode``. With no valid query, cmc, mAP and mINP are NaN.
    """
    if ap_mode not in AP_MODES:
        raise ValueError("ap_mode must be one of %s, got %r" % (AP_MODES, ap_mode))
    if int(max_rank) != max_rank or max_rank < 1:
        raise ValueError("max_rank must be a positive integer, got %r" % (max_rank,))
    max_rank = int(max_rank)
    dist = np.asarray(distmat)
    if dist.ndim != 2:
        raise ValueError("distmat must be 2-D (num_query, num_gallery), got shape %s"
                         % (dist.shape,))
    n_q, n_g = dist.shape
    arrays = {}
    for name, arr, n in (("q_pids", q_pids, n_q), ("q_camids", q_camids, n_q),
                         ("g_pids", g_pids, n_g), ("g_camids", g_camids, n_g)):
        arr = np.asarray(arr).ravel().astype(np.int64)
        if len(arr) != n:
            raise ValueError("len(%s) = %d does not match distmat shape %s"
                             % (name, len(arr), dist.shape))
        arrays[name] = arr
    q_pids, q_cams = arrays["q_pids"], arrays["q_camids"]
    g_pids, g_cams = arrays["g_pids"], arrays["g_camids"]

    # All (query, gallery) pairs sharing a pid, via the gallery sorted by pid.
    g_order = np.argsort(g_pids, kind="stable")
    g_sorted = g_pids[g_order]
    lo = np.searchsorted(g_sorted, q_pids, side="left")
    hi = np.searchsorted(g_sorted, q_pids, side="right")
    hi[q_pids == -1] = lo[q_pids == -1]  # a junk query has no true match
    cnt = hi - lo
    rows = np.repeat(np.arange(n_q), cnt)
    offs = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    cols = g_order[np.repeat(lo, cnt) + offs]
    pos = g_cams[cols] != q_cams[rows]  # same pid, other camera: true match
    ex_rows, ex_cols = rows[~pos], cols[~pos]  # same pid, same camera: ignored
    rows, cols = rows[pos], cols[pos]
    pdist = dist[rows, cols]
    if np.isnan(pdist).any():
        raise ValueError("distmat has NaN distances for true matches")
    # Sort each query's matches by (distance, gallery index).
    order = np.lexsort((cols, pdist, rows))
    rows, cols, pdist = rows[order], cols[order], pdist[order]
    n_pos = np.bincount(rows, minlength=n_q)
    pos_start = np.cumsum(n_pos) - n_pos
    thr_dtype = dist.dtype if dist.dtype.kind == "f" else np.float64
    thr = np.full(n_q, np.nan, dtype=thr_dtype)  # NaN: no candidates at all
    has = n_pos > 0
    thr[has] = pdist[pos_start[has] + n_pos[has] - 1]

    ranks_fn = _ranks_float32 if dist.dtype == np.float32 else _ranks_generic
    junk = (g_pids == -1) if (g_pids == -1).any() else None
    ex_start = np.searchsorted(ex_rows, np.arange(n_q + 1))
    chunk = max(1, min(n_q, _BLOCK_ENTRIES // max(n_g, 1)))
    ranks = np.empty(len(rows), dtype=np.int64)
    local = np.empty(len(rows), dtype=np.int64)
    for a in range(0, n_q, chunk):
        b = min(a + chunk, n_q)
        sa, sb = pos_start[a], pos_start[b - 1] + n_pos[b - 1]
        if sa == sb:
            continue
        ea, eb = ex_start[a], ex_start[b]
        ranks[sa:sb], local[sa:sb] = ranks_fn(
            np.ascontiguousarray(dist[a:b]), rows[sa:sb] - a, cols[sa:sb],
            pos_start[a:b] - sa, ex_rows[ea:eb] - a, ex_cols[ea:eb], thr[a:b], junk)

    n_valid = int(has.sum())
    result = {"num_valid_queries": n_valid, "num_skipped_queries": n_q - n_valid,
              "ap_mode": ap_mode}
    if n_valid == 0:
        result.update(cmc=np.full(max_rank, np.nan), mAP=float("nan"), mINP=float("nan"),
                      query_ap=np.full(n_q, np.nan))
        return result
    first_rank = ranks[pos_start[has]]
    hits = np.bincount(np.minimum(first_rank, max_rank), minlength=max_rank + 1)
    result["cmc"] = np.cumsum(hits[:max_rank]) / n_valid
    # Same float64 expressions, in the same order, as the sort-based reference.
    n = n_pos[rows].astype(np.float64)
    i = local.astype(np.float64)
    r = ranks.astype(np.float64)
    precision = (i + 1.0) / (r + 1.0)
    if ap_mode == "trapezoid":
        old_precision = np.where(r != 0, i / np.where(r != 0, r, 1.0), 1.0)
        contrib = (1.0 / n) * (old_precision + precision) / 2.0
        ap = np.bincount(rows, weights=contrib, minlength=n_q)[has]
    else:
        ap = np.bincount(rows, weights=precision, minlength=n_q)[has] / n_pos[has]
    result["mAP"] = float(np.mean(ap))
    result["query_ap"] = np.full(n_q, np.nan)
    result["query_ap"][has] = ap
    # Matches are in rank order within each query: the last one is the hardest.
    hardest = ranks[pos_start[has] + n_pos[has] - 1]
    result["mINP"] = float(np.mean(n_pos[has] / (hardest + 1.0)))
    return result


def chance_rank1(q_pids, g_pids, q_camids, g_camids):
    """Expected Rank-1 of a random gallery order under the same protocol as evaluate_ranking:
    the mean, over queries with a valid match, of (true matches) / (valid gallery items)."""
    q_pids, q_cams = np.asarray(q_pids)[:, None], np.asarray(q_camids)[:, None]
    g_pids, g_cams = np.asarray(g_pids)[None], np.asarray(g_camids)[None]
    same_pid = q_pids == g_pids
    valid = ~(same_pid & (q_cams == g_cams)) & (g_pids != -1)
    matches = (same_pid & valid).sum(axis=1)
    has_match = matches > 0
    return float(np.mean(matches[has_match] / valid.sum(axis=1)[has_match]))
