"""Query/gallery retrieval of a trained network: features, distances, optional re-ranking,
and the Market-1501 metrics. One function serves the engine's periodic evaluation and
evaluate.py."""
import json
import os

import numpy as np

from .data.loader import build_test_loader
from .evaluation import AP_MODES, compute_distance, evaluate_ranking
from .features import extract_features
from .rerank import re_ranking


def _split_features(cfg, net, records, ctx, split):
    loader = build_test_loader(cfg, records)
    return extract_features(net.embedding, loader, ctx, flip=cfg.TEST.FLIP_FEATURES,
                            normalize=cfg.TEST.NORMALIZE_FEATURES, desc="features " + split)


def evaluate_retrieval(cfg, net, dataset, ctx):
    """Rank the gallery for every query; returns rank1/rank5/rank10/mAP in percent and more."""
    q_feats = _split_features(cfg, net, dataset.query, ctx, "query")
    g_feats = _split_features(cfg, net, dataset.gallery, ctx, "gallery")
    if cfg.TEST.RERANK:
        # Euclidean distances, as the authors' re-ranking code computes them from features.
        distmat = re_ranking(compute_distance(q_feats, g_feats, metric="euclidean"),
                             compute_distance(q_feats, q_feats, metric="euclidean"),
                             compute_distance(g_feats, g_feats, metric="euclidean"),
                             k1=cfg.TEST.RERANK_K1, k2=cfg.TEST.RERANK_K2,
                             lambda_value=cfg.TEST.RERANK_LAMBDA)
    else:
        distmat = compute_distance(q_feats, g_feats, metric=cfg.TEST.DISTANCE)
    q_pids, q_camids = record_ids(dataset.query)
    g_pids, g_camids = record_ids(dataset.gallery)
    # Both AP definitions are reported (0.05 s each at Market-1501 size); "mAP" is TEST.AP_MODE's.
    ranked = {mode: evaluate_ranking(distmat, q_pids, g_pids, q_camids, g_camids, ap_mode=mode)
              for mode in AP_MODES}
    cmc = ranked[cfg.TEST.AP_MODE]["cmc"]
    return {"rank1": 100 * float(cmc[0]), "rank5": 100 * float(cmc[4]),
            "rank10": 100 * float(cmc[9]), "mAP": 100 * ranked[cfg.TEST.AP_MODE]["mAP"],
            "mAP_trapezoid": 100 * ranked["trapezoid"]["mAP"],
            "mAP_noninterp": 100 * ranked["noninterp"]["mAP"],
            "ap_mode": cfg.TEST.AP_MODE, "rerank": bool(cfg.TEST.RERANK),
            "num_valid_queries": int(ranked["trapezoid"]["num_valid_queries"]),
            "num_query": len(dataset.query), "num_gallery": len(dataset.gallery)}


def record_ids(records):
    """(pids, camids) of records as int64 arrays, as evaluate_ranking takes them."""
    return (np.array([r.pid for r in records], dtype=np.int64),
            np.array([r.camid for r in records], dtype=np.int64))


def evaluate_params(cfg, params_path):
    """Evaluate a parameter file saved by training on the configured query/gallery."""
    from .data.market1501 import load_market1501
    from .devices import build_contexts
    from .model import load_trained_model

    ctx = build_contexts(cfg.GPUS)
    net = load_trained_model(cfg, params_path, ctx)
    dataset = load_market1501(cfg.DATASETS.ROOT, verify_counts=cfg.DATASETS.VERIFY_COUNTS)
    results = evaluate_retrieval(cfg, net, dataset, ctx)
    results["params"] = os.path.abspath(params_path)
    return results


def results_path(cfg, folder):
    """Default results file in `folder` for the config's settings: results.json, or
    results_rerank.json with TEST.RERANK so a re-ranked evaluation keeps the plain one."""
    return os.path.join(folder, "results_rerank.json" if cfg.TEST.RERANK else "results.json")


def save_results(results, path):
    """Write `results` as JSON atomically (a .tmp file, then os.replace): never a half file.

    Raises OSError with a one-line message naming `path` when it cannot be written."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(results, f, indent=1)
        os.replace(tmp, path)
    except OSError as exc:
        raise OSError("cannot write the results to %s: %s" % (path, exc.strerror or exc)) from exc
    finally:
        if os.path.isfile(tmp):  # a failed write leaves nothing behind
            os.remove(tmp)


def format_results(results):
    """A small table of the metrics for the console."""
    lines = ["%-34s %6s" % ("metric", "value")]
    lines += ["%-34s %6.2f" % (k, results[k]) for k in ("rank1", "rank5", "rank10")]
    lines += ["%-34s %6.2f" % ("mAP (trapezoid AP, Market-1501)", results["mAP_trapezoid"]),
              "%-34s %6.2f" % ("mAP (non-interpolated, torchreid)", results["mAP_noninterp"])]
    lines.append("(\"mAP\" in the results JSON: %s; re-ranking %s; %d/%d queries with a match)"
                 % (results["ap_mode"], "on" if results["rerank"] else "off",
                    results["num_valid_queries"], results["num_query"]))
    return "\n".join(lines)
