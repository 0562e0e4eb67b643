"""Exact top-k search of query features over a gallery of any size (an array or a feature
store's memory map), in bounded memory: the gallery is read in blocks of rows."""
import numpy as np

from ..evaluation.distances import compute_distance, top_k

SEARCH_BLOCK_ENTRIES = 1 << 24  # query x gallery distances per block (64 MB of float32)
SEARCH_BLOCK_BYTES = 1 << 26  # float32 gallery rows per block (64 MB)


def exact_top_k(query_feats, gallery_feats, topk, metric="cosine"):
    """(indices, distances), each (Q, min(topk, G)): the `topk` nearest gallery rows of each
    query in order (ties: lower gallery index first), exact. The gallery (an array or a
    memory map, float32 or float16) is read in blocks of rows: at most SEARCH_BLOCK_ENTRIES
    distances and SEARCH_BLOCK_BYTES of float32 rows exist at once, whatever its size."""
    n_q, n_g = len(query_feats), len(gallery_feats)
    k = min(int(topk), n_g)
    dim = max(1, gallery_feats.shape[1])
    block = max(k, min(SEARCH_BLOCK_ENTRIES // max(n_q, 1), SEARCH_BLOCK_BYTES // (4 * dim)))
    best_i = np.zeros((n_q, 0), dtype=np.int64)
    best_d = np.zeros((n_q, 0), dtype=np.float32)
    for a in range(0, n_g, block):
        dist = compute_distance(query_feats, gallery_feats[a:a + block], metric=metric)
        idx = top_k(dist, min(k, dist.shape[1]))
        # Earlier blocks first: at equal distance the lower gallery index stays ahead.
        cand_i = np.concatenate([best_i, idx + a], axis=1)
        cand_d = np.concatenate([best_d, np.take_along_axis(dist, idx, axis=1)], axis=1)
        keep = top_k(cand_d, k)
        best_i = np.take_along_axis(cand_i, keep, axis=1)
        best_d = np.take_along_axis(cand_d, keep, axis=1)
    return best_i, best_d
