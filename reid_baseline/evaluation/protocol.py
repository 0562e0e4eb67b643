"""The Market-1501 ranking protocol: CMC, mAP (both AP definitions) and mINP from a distance
matrix, and the Rank-1 of chance.

For each query, gallery items of its identity from another camera are its true matches; items
of its identity from its own camera, and junk items (identity -1), are left out; everything
else (distractors, identity 0, included) is a negative. A query without a true match is
skipped. At equal distance the lower gallery index ranks first.

Below the protocol, the fast ranking kernel: a sort of every gallery row per query would take
seconds at Market-1501 size, the kernel a few hundredths. It ranks only each query's true
matches among the valid items before its last match (those after it cannot change CMC or AP):
each row is cut with one vectorised comparison, and the few candidates are packed into integer
keys (query, distance, gallery index) located among the matches' keys with one searchsorted;
when most items of a block are candidates (a weak model), the block's rows are sorted instead.
"""
import numpy as np

__all__ = ["evaluate_ranking", "chance_rank1", "AP_MODES"]

AP_MODES = ("trapezoid", "noninterp")


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

    # Every true match and its rank among the valid items (the fast kernel, below).
    rows, ranks, local, n_pos = _true_match_ranks(dist, q_pids, g_pids, q_cams, g_cams)
    has = n_pos > 0
    pos_start = np.cumsum(n_pos) - n_pos
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


# The fast ranking kernel (see the module doc): the exact ranks of the true matches without
# sorting whole gallery rows, the cost that dominates an evaluation.

# Work on blocks of about 4M distance entries (16 MB of float32) at a time.
_BLOCK_ENTRIES = 1 << 22
# Sort whole rows of a block instead when more than this fraction of its items
# precede some true match (measured: ~35 ns per candidate vs ~6 ns per item).
_SORT_ABOVE = 0.2


def _true_match_ranks(dist, q_pids, g_pids, q_cams, g_cams):
    """The true matches of every query and their 0-based ranks among the valid gallery items.

    Returns (rows, ranks, local, n_pos): the query of each match (matches sorted by query,
    then distance, then gallery index), its rank, its index among its query's matches, and
    the number of matches of each query. A NaN distance of a true match is a ValueError."""
    n_q, n_g = dist.shape
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
    return rows, ranks, local, n_pos


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
