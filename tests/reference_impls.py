"""Plain, slow reference implementations (oracles) for the tests.

Deliberately straightforward: full stable sorts, dense matrices, Python loops.
"""
import numpy as np


def reference_evaluate(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50,
                       ap_mode="trapezoid"):
    """Sort-based Market-1501 evaluation: argsort each row (stable), filter, cumsum."""
    distmat = np.asarray(distmat)
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
    all_cmc, all_ap, all_inp = [], [], []
    for q in range(distmat.shape[0]):
        order = np.argsort(distmat[q], kind="stable")
        pids, cams = g_pids[order], g_camids[order]
        remove = (pids == -1) | ((pids == q_pids[q]) & (cams == q_camids[q]))
        matches = pids[~remove] == q_pids[q]
        if not matches.any():
            continue
        cmc = matches.cumsum()
        cmc[cmc > 1] = 1
        cmc = cmc[:max_rank]
        if len(cmc) < max_rank:  # fewer valid items than max_rank: stays at 1
            cmc = np.concatenate([cmc, np.ones(max_rank - len(cmc), dtype=cmc.dtype)])
        all_cmc.append(cmc)
        good = np.flatnonzero(matches)
        n = len(good)
        ap = 0.0
        if ap_mode == "trapezoid":
            for i in range(n):
                precision = (i + 1) * 1.0 / (good[i] + 1)
                old_precision = i * 1.0 / good[i] if good[i] != 0 else 1.0
                ap = ap + (1.0 / n) * (old_precision + precision) / 2.0
        elif ap_mode == "noninterp":
            for i in range(n):
                ap = ap + (i + 1.0) / (good[i] + 1.0)
            ap = ap / n
        else:
            raise ValueError(ap_mode)
        all_ap.append(ap)
        # mINP: true matches / 1-based position of the last true match in the filtered list.
        all_inp.append(n / (good[-1] + 1.0))
    n_valid = len(all_ap)
    if n_valid == 0:
        return {"cmc": np.full(max_rank, np.nan), "mAP": float("nan"), "mINP": float("nan"),
                "num_valid_queries": 0, "num_skipped_queries": distmat.shape[0]}
    return {
        "cmc": np.sum(np.asarray(all_cmc), axis=0) / n_valid,
        "mAP": float(np.mean(all_ap)),
        "mINP": float(np.mean(all_inp)),
        "num_valid_queries": n_valid,
        "num_skipped_queries": distmat.shape[0] - n_valid,
    }


def _k_reciprocal(initial_rank, i, k):
    forward = initial_rank[i, :k + 1]
    backward = initial_rank[forward, :k + 1]
    return forward[np.where(backward == i)[0]]


def reference_re_ranking(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3):
    """k-reciprocal re-ranking (Zhong et al., CVPR 2017), dense and loop-based.

    Follows the authors' published algorithm step by step; the only choice made
    here is the tie rule of the initial ranking: a stable argsort (at equal
    distance, the lower index first).
    """
    original_dist = np.concatenate(
        [np.concatenate([q_q_dist, q_g_dist], axis=1),
         np.concatenate([q_g_dist.T, g_g_dist], axis=1)], axis=0)
    original_dist = np.power(original_dist, 2).astype(np.float32)
    # Each column divided by its maximum, then transposed.
    original_dist = np.transpose(original_dist / np.max(original_dist, axis=0))
    n_q = q_g_dist.shape[0]
    n_all = original_dist.shape[0]
    initial_rank = np.argsort(original_dist, axis=1, kind="stable")
    V = np.zeros_like(original_dist, dtype=np.float32)
    k_half = int(np.around(k1 / 2.0))
    for i in range(n_all):
        recip = _k_reciprocal(initial_rank, i, k1)
        expansion = recip
        for candidate in recip:
            cand_recip = _k_reciprocal(initial_rank, candidate, k_half)
            if len(np.intersect1d(cand_recip, recip)) > 2.0 / 3 * len(cand_recip):
                expansion = np.append(expansion, cand_recip)
        expansion = np.unique(expansion)
        weight = np.exp(-original_dist[i, expansion])
        V[i, expansion] = weight / np.sum(weight)
    original_dist = original_dist[:n_q]
    if k2 != 1:
        V_qe = np.zeros_like(V)
        for i in range(n_all):
            V_qe[i] = np.mean(V[initial_rank[i, :k2]], axis=0)
        V = V_qe
    # Inverted index: for each feature (column of V), the items using it.
    inv_index = [np.where(V[:, f] != 0)[0] for f in range(n_all)]
    jaccard = np.zeros_like(original_dist)
    for i in range(n_q):
        temp_min = np.zeros(n_all, dtype=np.float32)
        for f in np.where(V[i] != 0)[0]:
            others = inv_index[f]
            temp_min[others] += np.minimum(V[i, f], V[others, f])
        jaccard[i] = 1 - temp_min / (2.0 - temp_min)
    final = jaccard * (1 - lambda_value) + original_dist * lambda_value
    return final[:n_q, n_q:]
