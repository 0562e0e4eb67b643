"""Query/gallery retrieval of a trained network: features, distances, optional re-ranking,
and the Market-1501 metrics. One function (evaluate_extractor) serves the engine's periodic
evaluation of the network it trains and evaluate.py's of a parameter file (FeatureExtractor)."""
import collections
import glob
import json
import os

import numpy as np

from ..errors import DatasetError, OutputError
from ..fileio import check_output_file, output_path, remove_output
from ..progress import progress_bar
from .distances import compute_distance
from .features import FeatureExtractor, image_features
from .protocol import AP_MODES, evaluate_ranking
from .provenance import evaluation_record, output_suffix
from .rerank import re_ranking_features


def _split_features(extract, records, split):
    return extract([r.path for r in records], desc="features " + split)


def gallery_distances(cfg, q_feats, g_feats):
    """(Q, G) distances of the config: TEST.DISTANCE, or with TEST.RERANK k-reciprocal
    re-ranking of the Euclidean distances (as the authors' code computes them from features),
    found from the features block by block (no dense gallery x gallery matrix)."""
    if cfg.TEST.RERANK:
        return re_ranking_features(q_feats, g_feats, k1=cfg.TEST.RERANK_K1,
                                   k2=cfg.TEST.RERANK_K2, lambda_value=cfg.TEST.RERANK_LAMBDA)
    return compute_distance(q_feats, g_feats, metric=cfg.TEST.DISTANCE)


# What write_rank_pictures draws from: the records, the (Q, G) distances and evaluate_ranking's
# output for TEST.AP_MODE.
Ranking = collections.namedtuple("Ranking", "dataset distmat ranked")


def evaluate_retrieval(cfg, net, dataset, ctx, with_ranking=False):
    """evaluate_extractor of the network `net` (being trained) on the devices `ctx`."""
    def extract(images, desc):
        return image_features(cfg, net.embedding, images, ctx, desc)

    return evaluate_extractor(cfg, extract, dataset, with_ranking)


def evaluate_extractor(cfg, extract, dataset, with_ranking=False):
    """Rank the gallery for every query; returns rank1/rank5/rank10/mAP/mINP in percent and
    more, and with `with_ranking` also the Ranking (for write_rank_pictures). `extract(images,
    desc)` gives the features of image paths (a FeatureExtractor, or a network's
    image_features)."""
    q_feats = _split_features(extract, dataset.query, "query")
    g_feats = _split_features(extract, dataset.gallery, "gallery")
    bar = progress_bar(total=1 + len(AP_MODES), desc="distances and metrics", unit="steps")
    distmat = gallery_distances(cfg, q_feats, g_feats)  # re-ranking logs its own progress
    bar.update(1)
    q_pids, q_camids = record_ids(dataset.query)
    g_pids, g_camids = record_ids(dataset.gallery)
    # Both AP definitions are reported (0.05 s each at Market-1501 size); "mAP" is TEST.AP_MODE's.
    ranked = {}
    for mode in AP_MODES:
        ranked[mode] = evaluate_ranking(distmat, q_pids, g_pids, q_camids, g_camids, ap_mode=mode)
        bar.update(1)
    bar.close()
    chosen = ranked[cfg.TEST.AP_MODE]
    if not chosen["num_valid_queries"]:
        # Every metric would be NaN (and NaN is not JSON): say why instead.
        raise DatasetError("none of the %d queries has a true match in the gallery (same "
                           "identity, another camera; junk and same-camera images do not "
                           "count): Rank-1 and mAP are undefined" % len(dataset.query))
    cmc = chosen["cmc"]
    results = {"rank1": 100 * float(cmc[0]), "rank5": 100 * float(cmc[4]),
               "rank10": 100 * float(cmc[9]), "mAP": 100 * chosen["mAP"],
               "mAP_trapezoid": 100 * ranked["trapezoid"]["mAP"],
               "mAP_noninterp": 100 * ranked["noninterp"]["mAP"],
               "mINP": 100 * chosen["mINP"],
               "ap_mode": cfg.TEST.AP_MODE, "rerank": bool(cfg.TEST.RERANK),
               "num_valid_queries": int(ranked["trapezoid"]["num_valid_queries"]),
               "num_query": len(dataset.query), "num_gallery": len(dataset.gallery)}
    return (results, Ranking(dataset, distmat, chosen)) if with_ranking else results


def write_rank_pictures(cfg, folder, ranking, visualize=0, top=10, seed=0, overwrite=False,
                        suffix=None):
    """cmc.png (CMC up to rank 50) in `folder` and rank-list PNGs of `visualize` queries in
    folder/ranklists: a random half (random_queries: the same queries with and without
    re-ranking) and the worst of the other queries by AP. Names get the results file's
    `suffix` (default: "_rerank" with TEST.RERANK, as results_rerank.json;
    provenance.output_suffix). Returns the paths.

    Each rank list shows the query and its `top` first gallery items as the protocol ranks
    them (junk and same-identity same-camera items left out), with a green (same identity)
    or red border, a legend, and the captions of rank_list_captions under them."""
    from .plots import RankItem, write_cmc, write_rank_lists

    dataset, distmat, ranked = ranking
    suffix = output_suffix(cfg) if suffix is None else suffix
    written = [os.path.join(folder, "cmc%s.png" % suffix)]
    write_cmc(written[0], ranked["cmc"],
              title="CMC (%s)" % ("re-ranked" if cfg.TEST.RERANK else cfg.TEST.DISTANCE),
              overwrite=overwrite)
    ap = ranked["query_ap"]
    n = min(int(visualize), len(dataset.query))
    if n == 0:
        return written
    sample = random_queries(dataset.query, n // 2, seed)
    valid = np.setdiff1d(np.flatnonzero(~np.isnan(ap)), sample)
    worst = valid[np.argsort(ap[valid], kind="stable")[:n - len(sample)]]
    out_dir = os.path.join(folder, "ranklists" + suffix)
    os.makedirs(out_dir, exist_ok=True)
    # The previous evaluation's pictures go (checked before the evaluation by
    # check_evaluation_outputs): a mix of two evaluations would mislead.
    for old in glob.glob(os.path.join(out_dir, "worst_*_query*.png")) + glob.glob(
            os.path.join(out_dir, "random_*_query*.png")):
        remove_output(old)
    (q_pids, q_cams), (g_pids, g_cams) = record_ids(dataset.query), record_ids(dataset.gallery)
    for kind, queries in (("worst", worst), ("random", sample)):
        for i, q in enumerate(queries, 1):
            keep = (g_pids != -1) & ~((g_pids == q_pids[q]) & (g_cams == q_cams[q]))
            cols = np.flatnonzero(keep)
            cols = cols[np.argsort(distmat[q, cols], kind="stable")[:top]]
            captions = rank_list_captions(dataset.query[q], [dataset.gallery[c] for c in cols],
                                          distmat[q, cols], ap[q], dataset.camera_offset,
                                          dataset.distractor_pid)
            items = [RankItem(dataset.gallery[c].path, caption, g_pids[c] == q_pids[q])
                     for c, caption in zip(cols, captions[1:], strict=True)]
            query = RankItem(dataset.query[q].path, captions[0], None)
            path = os.path.join(out_dir, "%s_%02d_query%05d.png" % (kind, i, q))
            write_rank_lists(path, [(query, items)])
            written.append(path)
    return written


def random_queries(queries, n, seed=0):
    """Indices of `n` queries drawn from `seed` and the query list alone (never from a ranking
    or its results), so a plain and a re-ranked evaluation draw the same ones; sorted."""
    n = min(int(n), len(queries))
    return np.sort(np.random.RandomState(seed).permutation(len(queries))[:n])


def rank_list_captions(query, gallery, distances, ap, camera_offset=1, distractor_pid=None):
    """The captions of one rank list, the query's first: each tile's file name, then its
    identity ("id 81", or "distractor" for `distractor_pid`) and camera as the file names
    number it (camid + camera_offset), then the query's AP or the item's distance. `query`
    and `gallery` are records (path, pid, camid); `distances` the gallery items'."""
    from .plots import short_name  # matplotlib only when pictures are drawn

    def caption(record, value):
        who = ("distractor" if distractor_pid is not None and record.pid == distractor_pid
               else "id %d" % record.pid)
        return "%s\n%s cam %d\n%s" % (short_name(record.path), who,
                                       record.camid + camera_offset, value)

    return [caption(query, "no true match" if np.isnan(ap) else "AP %.2f" % ap)] + [
        caption(record, "d %.3f" % d) for record, d in zip(gallery, distances, strict=True)]


def record_ids(records):
    """(pids, camids) of records as int64 arrays, as evaluate_ranking takes them."""
    return (np.array([r.pid for r in records], dtype=np.int64),
            np.array([r.camid for r in records], dtype=np.int64))


def evaluate_params(cfg, params_path, with_ranking=False):
    """Evaluate a parameter file saved by training on the configured query/gallery; returns
    the results (with provenance.evaluation_record: test set, params and their SHA-256, config
    digest, version), and with `with_ranking` also the Ranking (for write_rank_pictures)."""
    from ..data.datasets import load_test_set

    extractor = FeatureExtractor(cfg, params_path)
    dataset = load_test_set(cfg)  # DATASETS.TEST_NAME at TEST_ROOT (default: NAME at ROOT)
    results, ranking = evaluate_extractor(cfg, extractor, dataset, with_ranking=True)
    results.update(evaluation_record(cfg, params_path, dataset))
    return (results, ranking) if with_ranking else results


def results_path(cfg, folder, suffix=None):
    """Default results file in `folder`: results<suffix>.json, the suffix by default
    "_rerank" with TEST.RERANK so a re-ranked evaluation keeps the plain one; another test
    set's tag comes first (provenance.output_suffix: results_dukemtmc.json)."""
    suffix = output_suffix(cfg) if suffix is None else suffix
    return os.path.join(folder, "results%s.json" % suffix)


def check_evaluation_outputs(cfg, output, visualize=0, overwrite=False, suffix=None):
    """Before an evaluation starts: the results file `output`, the CMC plot beside it and,
    with `visualize`, the rank lists it replaces can be written. A folder in a file's place,
    a missing folder, or an existing file the package did not write (unless `overwrite`) is
    an OutputError naming it (fileio.check_output_file). `suffix` as write_rank_pictures'."""
    check_output_file(output, overwrite, "results file")
    folder = os.path.dirname(os.path.abspath(output))
    suffix = output_suffix(cfg) if suffix is None else suffix
    check_output_file(os.path.join(folder, "cmc%s.png" % suffix), overwrite, "CMC plot")
    if visualize:
        out_dir = os.path.join(folder, "ranklists" + suffix)
        if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
            raise OutputError("rank-list folder %s is a file; expected a folder" % out_dir)
        for old in sorted(glob.glob(os.path.join(out_dir, "worst_*_query*.png")) +
                          glob.glob(os.path.join(out_dir, "random_*_query*.png"))):
            check_output_file(old, overwrite, "rank list")


def save_results(results, path, overwrite=False):
    """Write the dict `results` as JSON atomically, recorded as the package's
    (fileio.output_path): never a half file; an existing file is replaced only when the
    package wrote it, or with `overwrite`.

    Raises OSError with a one-line message naming `path` when it cannot be written."""
    try:
        with output_path(path, overwrite, "results file") as tmp, open(tmp, "w") as f:
            json.dump(results, f, indent=1)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else exc  # not fileio's own wording
        raise OSError("cannot write the results to %s: %s" % (path, reason)) from exc


def format_results(results):
    """A small table of the metrics for the console."""
    lines = ["%-34s %6s" % ("metric", "value")]
    lines += ["%-34s %6.2f" % (k, results[k]) for k in ("rank1", "rank5", "rank10")]
    lines += ["%-34s %6.2f" % ("mAP (trapezoid AP, Market-1501)", results["mAP_trapezoid"]),
              "%-34s %6.2f" % ("mAP (non-interpolated, torchreid)", results["mAP_noninterp"]),
              "%-34s %6.2f" % ("mINP (hardest true match)", results["mINP"])]
    lines.append("(\"mAP\" in the results JSON: %s; re-ranking %s; %d/%d queries with a match)"
                 % (results["ap_mode"], "on" if results["rerank"] else "off",
                    results["num_valid_queries"], results["num_query"]))
    return "\n".join(lines)
