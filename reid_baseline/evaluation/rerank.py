"""k-reciprocal re-ranking (Zhong et al., CVPR 2017), memory-lean numpy/scipy.

Computes the same result as the authors' widely copied ``re_ranking`` (dense
(Q+G)^2 matrices, Python loops over items) without ever building a dense
(Q+G)^2 matrix:

* The normalised distance matrix is only visited in row blocks, keeping each
  row's nearest neighbours; every later step only needs those neighbours.
* The k-reciprocal sets, their expansion and the weight vectors V are sparse
  matrices (each row has a few dozen non-zeros), built with sparse products.
* The Jaccard term, a sum of element-wise minima over shared non-zeros, is
  accumulated from (query entry, gallery entry) pairs that share a column.

``re_ranking_features`` does the same from the features themselves: each block of rows of
the distance matrix is computed, used for its rows' neighbours and dropped, so no dense
(Q+G) x G matrix exists (MSMT17's gallery x gallery distances alone would be 27 GB).

Tie rule: the initial ranking is a stable sort (at equal distance the lower
index comes first). The original uses numpy's default unstable argsort, so
results can differ from it only where distances tie exactly.
"""
import numpy as np
import scipy.sparse as sp

from ..progress import progress_bar
from .distances import compute_distance, top_k

__all__ = ["re_ranking", "re_ranking_features"]

_BLOCK_ENTRIES = 1 << 22  # ~16 MB of float32 per row block
# Rows of feature distances computed at once for the neighbours (64 MB of float32): wider
# matrix products than _BLOCK_ENTRIES run faster, and the block is freed before the next.
_FEATURE_BLOCK_ENTRIES = 1 << 24


def _check_inputs(q_g, q_q, g_g, k1, k2, lambda_value):
    for name, arr in (("q_g_dist", q_g), ("q_q_dist", q_q), ("g_g_dist", g_g)):
        if arr.ndim != 2:
            raise ValueError("%s must be 2-D, got shape %s" % (name, arr.shape))
    n_q, n_g = q_g.shape
    if q_q.shape != (n_q, n_q):
        raise ValueError("q_q_dist has shape %s, expected %s (num_query from q_g_dist %s)"
                         % (q_q.shape, (n_q, n_q), q_g.shape))
    if g_g.shape != (n_g, n_g):
        raise ValueError("g_g_dist has shape %s, expected %s (num_gallery from q_g_dist %s)"
                         % (g_g.shape, (n_g, n_g), q_g.shape))
    if n_q == 0 or n_g == 0:
        raise ValueError("q_g_dist must be non-empty, got shape %s" % (q_g.shape,))
    for name, k in (("k1", k1), ("k2", k2)):
        if int(k) != k or k < 1:
            raise ValueError("%s must be a positive integer, got %r" % (name, k))
    if not 0.0 <= lambda_value <= 1.0:
        raise ValueError("lambda_value must be in [0, 1], got %r" % (lambda_value,))


def _neighbours(n, k, rows, squared_rows, what, bar):
    """Top-k neighbour lists of all n items, and each row's normaliser, from row blocks.

    squared_rows(a, b) gives rows a..b of the squared distance matrix as a float32 array
    (the block may be reused or dropped afterwards); each row is divided by its maximum (the
    original's normalisation) and only its k nearest are kept, so no n x n matrix exists.
    `what` names the input in the NaN error; `bar.update` is told of each block's rows."""
    top = np.empty((n, k), dtype=np.int64)
    scale = np.empty(n, dtype=np.float32)
    for a in range(0, n, rows):
        b = min(a + rows, n)
        blk = squared_rows(a, b)
        scale[a:b] = blk.max(axis=1)  # max propagates NaN: a free NaN check
        if np.isnan(scale[a:b]).any():
            raise ValueError("%s must not contain NaN" % what)
        blk /= scale[a:b, None]
        top[a:b] = top_k(blk, k)
        del blk  # freed before the next block is computed
        bar.update(b - a)
    return top, scale


def _squared_distance_rows(q_g, q_q, g_g):
    """squared_rows(a, b) for _neighbours from three distance matrices.

    Row i of the original's normalised matrix is column i of the squared distance matrix
    divided by that column's maximum (it normalises columns, then transposes), so a block of
    rows is built from columns of the inputs. Returns (rows per block, squared_rows)."""
    (n_q, n_g), n = q_g.shape, sum(q_g.shape)
    rows = max(1, min(n, _BLOCK_ENTRIES // n))
    block = np.empty((rows, n), dtype=np.float32)

    def squared_rows(a, b):
        blk = block[:b - a]
        # Square in the input dtype, store as float32 (as the original does).
        if a < n_q:  # query rows: columns of q_q, then rows of q_g
            qb = min(b, n_q)
            np.square(q_q[:, a:qb].T, out=blk[:qb - a, :n_q])
            np.square(q_g[a:qb], out=blk[:qb - a, n_q:])
        if b > n_q:  # gallery rows: columns of q_g, then columns of g_g
            ga, gb = max(a, n_q) - n_q, b - n_q
            out = blk[ga + n_q - a:]
            # Transposing in tiles of 512 source rows keeps reads cache-friendly.
            for t in range(0, n_q, 512):
                u = min(t + 512, n_q)
                np.square(q_g[t:u, ga:gb].T, out=out[:, t:u])
            for t in range(0, n_g, 512):
                u = min(t + 512, n_g)
                np.square(g_g[t:u, ga:gb].T, out=out[:, n_q + t:n_q + u])
        return blk

    return rows, squared_rows


def _squared_values(rows, cols, q_g, q_q, g_g):
    """Entries (rows, cols) of the squared distance matrix: old[col, row]^2."""
    n_q = q_g.shape[0]
    out = np.empty(len(rows), dtype=np.float32)
    rq, cq = rows < n_q, cols < n_q
    for m, src, r_idx, c_idx in (
            (rq & cq, q_q, cols, rows),                   # old[j, i] = q_q[j, i]
            (rq & ~cq, q_g, rows, cols - n_q),            # old[Q+g, i] = q_g[i, g]
            (~rq & cq, q_g, cols, rows - n_q),            # old[j, Q+g] = q_g[j, g]
            (~rq & ~cq, g_g, cols - n_q, rows - n_q)):    # old[Q+g', Q+g] = g_g[g', g]
        out[m] = np.square(src[r_idx[m], c_idx[m]])
    return out


def _reciprocal(top, k):
    """Sparse 0/1 matrix of k-reciprocal neighbours: j in top_k(i) and i in top_k(j)."""
    n = top.shape[0]
    k = min(k, top.shape[1])
    nb = sp.csr_matrix((np.ones(n * k, dtype=np.float32), top[:, :k].ravel(),
                        np.arange(0, n * k + 1, k)), shape=(n, n))
    rec = nb.multiply(nb.T).tocsr()
    rec.sort_indices()
    return rec


def _min_sums(v_q, v_g_csc, rows_lo, rows_hi):
    """sum_f min(V[i, f], V[j, f]) for queries i in [rows_lo, rows_hi), all gallery j.

    Returns the flat (row-major, block-local) positions of the non-zero sums
    and the sums there.
    """
    n_g = v_g_csc.shape[0]
    sub = v_q[rows_lo:rows_hi]
    qi = np.repeat(np.arange(rows_hi - rows_lo), np.diff(sub.indptr))
    f, a = sub.indices, sub.data
    start = v_g_csc.indptr[f]
    cnt = v_g_csc.indptr[f + 1] - start
    # Expand each query entry (i, f, a) to all gallery entries (j, f, b).
    total = int(cnt.sum())
    pos = np.arange(total) + np.repeat(start - (np.cumsum(cnt) - cnt), cnt)
    j = v_g_csc.indices[pos]
    mins = np.minimum(np.repeat(a, cnt), v_g_csc.data[pos])
    flat = np.repeat(qi * n_g, cnt) + j
    sums = np.bincount(flat, weights=mins, minlength=(rows_hi - rows_lo) * n_g)
    nz = np.flatnonzero(sums)  # most pairs share nothing: keep only the rest
    return nz, sums[nz]


def re_ranking(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3):
    """k-reciprocal re-ranking of a query-gallery distance matrix.

    Same inputs and output as the authors' ``re_ranking``: q_g_dist (Q, G),
    q_q_dist (Q, Q) and g_g_dist (G, G) distances (e.g. Euclidean between
    L2-normalised features); returns the (Q, G) float32 final distance
    ``jaccard * (1 - lambda_value) + d * lambda_value``, where d is the squared
    distance normalised by the column maxima of the full (Q+G)^2 matrix.
    k1: size of the k-reciprocal neighbourhood; k2: query-expansion size
    (1 disables it); the expansion uses round(k1 / 2) neighbourhoods.
    Initial ranking ties: lower index first (stable sort).
    """
    q_g, q_q, g_g = (np.asarray(x) for x in (q_g_dist, q_q_dist, g_g_dist))
    _check_inputs(q_g, q_q, g_g, k1, k2, lambda_value)
    n_q, n_g = q_g.shape
    rows, squared_rows = _squared_distance_rows(q_g, q_q, g_g)
    bar = progress_bar(total=2 * n_q + n_g, desc="re-ranking", unit="rows")  # see _re_rank
    top, scale = _neighbours(n_q + n_g, min(max(int(k1) + 1, int(k2)), n_q + n_g), rows,
                             squared_rows, "distance matrices", bar)

    def squared_pairs(rows, cols):
        return _squared_values(rows, cols, q_g, q_q, g_g)

    def squared_query_rows(a, b, out):
        np.square(q_g[a:b], out=out)

    return _re_rank(n_q, n_g, top, scale, squared_pairs, squared_query_rows,
                    int(k1), int(k2), lambda_value, bar)


def re_ranking_features(query_feats, gallery_feats, k1=20, k2=6, lambda_value=0.3):
    """``re_ranking`` of the Euclidean distances between two feature sets, computed from the
    features block by block: never a dense (Q+G) x G matrix, only the (Q, G) output.

    Equal to ``re_ranking(d(q, g), d(q, q), d(g, g), ...)`` with d =
    ``distances.compute_distance(..., metric="euclidean")`` up to float32 rounding of the
    distances (which can only swap neighbours whose distances tie to the last bits).
    Memory: the output, the features, a block of ``_FEATURE_BLOCK_ENTRIES`` distances and
    the sparse neighbour sets (a few dozen entries per item).
    """
    q = np.ascontiguousarray(query_feats, dtype=np.float32)
    g = np.ascontiguousarray(gallery_feats, dtype=np.float32)
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1] or not len(q) or not len(g):
        raise ValueError("features must be non-empty 2-D arrays of the same width; got query "
                         "%s, gallery %s" % (q.shape, g.shape))
    _check_inputs(np.empty((len(q), len(g)), dtype=np.uint8), np.empty((len(q),) * 2, np.uint8),
                  np.empty((len(g),) * 2, np.uint8), k1, k2, lambda_value)
    n_q, n_g = len(q), len(g)
    n = n_q + n_g
    feats = np.concatenate([q, g])

    def squared_rows(a, b):
        blk = compute_distance(feats[a:b], feats, metric="euclidean")
        return np.square(blk, out=blk)

    rows = max(1, min(n, _FEATURE_BLOCK_ENTRIES // n))
    bar = progress_bar(total=2 * n_q + n_g, desc="re-ranking", unit="rows")  # see _re_rank
    top, scale = _neighbours(n, min(max(int(k1) + 1, int(k2)), n), rows, squared_rows, "features",
                             bar)

    def squared_pairs(rows_idx, cols_idx):
        out = np.empty(len(rows_idx), dtype=np.float32)
        step = max(1, _FEATURE_BLOCK_ENTRIES // feats.shape[1])
        for s in range(0, len(rows_idx), step):
            fr, fc = feats[rows_idx[s:s + step]], feats[cols_idx[s:s + step]]
            # compute_distance's formula, pair by pair: |a|^2 + |b|^2 - 2 a.b, clipped at 0.
            d = (np.einsum("ij,ij->i", fr, fr) + np.einsum("ij,ij->i", fc, fc)
                 - 2 * np.einsum("ij,ij->i", fr, fc))
            out[s:s + step] = np.square(np.sqrt(np.maximum(d, 0)))
        return out

    def squared_query_rows(a, b, out):
        out[...] = compute_distance(q[a:b], g, metric="euclidean")
        np.square(out, out=out)

    return _re_rank(n_q, n_g, top, scale, squared_pairs, squared_query_rows,
                    int(k1), int(k2), lambda_value, bar)


def _re_rank(n_q, n_g, top, scale, squared_pairs, squared_query_rows, k1, k2, lambda_value,
             bar):
    """The re-ranking after the initial neighbours, shared by both entry points.

    top/scale: each item's nearest neighbours and its row normaliser (see _neighbours);
    squared_pairs(rows, cols): float32 squared distances of item pairs; squared_query_rows(a,
    b, out): squared query-gallery distances of queries a..b into `out`; `bar` counts the
    rows: every item's neighbours (before), then the queries' final rows."""
    n = n_q + n_g
    # k-reciprocal sets R(i), and R(c) with k = round(k1/2) for the expansion.
    rec = _reciprocal(top, k1 + 1)
    rec_half = _reciprocal(top, int(np.around(k1 / 2.0)) + 1)
    half_size = np.diff(rec_half.indptr)
    # Candidate c of R(i) adds R_half(c) if |R_half(c) & R(i)| > 2/3 |R_half(c)|.
    overlap = rec.multiply(rec @ rec_half.T).tocsr()
    overlap.eliminate_zeros()
    ov_rows = np.repeat(np.arange(n), np.diff(overlap.indptr))
    keep = overlap.data > 2.0 / 3 * half_size[overlap.indices]
    chosen = sp.csr_matrix((np.ones(int(keep.sum()), dtype=np.float32),
                            (ov_rows[keep], overlap.indices[keep])), shape=(n, n))
    expanded = (rec + chosen @ rec_half).tocsr()
    expanded.sum_duplicates()
    expanded.sort_indices()
    del overlap, chosen, rec, rec_half

    # V[i, j] = exp(-d(i, j)) normalised over the expanded set of i.
    e_rows = np.repeat(np.arange(n), np.diff(expanded.indptr))
    dist = squared_pairs(e_rows, expanded.indices)
    dist /= scale[e_rows]
    weight = np.exp(-dist)
    total = np.bincount(e_rows, weights=weight, minlength=n).astype(np.float32)
    V = sp.csr_matrix((weight / total[e_rows], expanded.indices, expanded.indptr),
                      shape=(n, n))
    del expanded, e_rows, dist, weight

    if k2 != 1:  # local query expansion: V[i] <- mean of V over top-k2 of i
        kk = min(k2, n)
        sel = sp.csr_matrix((np.ones(n * kk, dtype=np.float32), top[:, :kk].ravel(),
                             np.arange(0, n * kk + 1, kk)), shape=(n, n))
        V = (sel @ V).tocsr()
        V.data /= np.float32(kk)
    V.eliminate_zeros()
    V.sort_indices()
    v_q = V[:n_q]
    v_g = V[n_q:].tocsc()
    del V, top

    # final = jaccard * (1 - lambda) + normalised original distance * lambda
    final = np.empty((n_q, n_g), dtype=np.float32)
    rows = max(1, min(n_q, _BLOCK_ENTRIES // n_g))
    for a in range(0, n_q, rows):
        b = min(a + rows, n_q)
        out = final[a:b]
        squared_query_rows(a, b, out)
        out /= scale[a:b, None]
        out *= np.float32(lambda_value)
        # Pairs with no shared non-zero have jaccard = 1 exactly.
        out += np.float32(1.0 - lambda_value)
        where, t = _min_sums(v_q, v_g, a, b)
        # jaccard = 1 - t / (2 - t): subtract (1 - lambda) * t / (2 - t)
        out.reshape(-1)[where] -= ((1.0 - lambda_value) * t / (2.0 - t)).astype(np.float32)
        bar.update(b - a)
    bar.close()
    return final
