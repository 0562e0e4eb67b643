#!/usr/bin/env python
"""Benchmark distance computation, ranking metrics and re-ranking at Market-1501 size.

Builds a synthetic Market-1501-sized problem (750 test identities, 6 cameras,
3,368 queries, 15,913 gallery images of which 2,793 distractors with pid 0,
2048-d L2-normalised float32 features = identity centre + camera offset +
identity-camera offset + noise), then runs every stage in a fresh
``spawn`` subprocess so that its peak RSS (ru_maxrss, inputs included) is its
own. The distance product is timed by each kernel (numpy's BLAS, MXNet's
oneDNN) and by the one evaluation.distances.product_kernel chose in that process, for a
2,000 x 8,000 x 2,048 product and for the Market-size compute_distance. A plain
sort-based evaluation (below) runs too, and the results must agree; the dense,
loop-based re-ranking of the paper (about 9 GB and minutes at full size) only
with --with-reference-rerank.

    OMP_NUM_THREADS=2 python scripts/benchmark_eval.py --out results.json
    python scripts/benchmark_eval.py --small
    OMP_NUM_THREADS=2 python scripts/benchmark_eval.py --distances-only --repeats 2
"""
import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time

import numpy as np

from benchmarking import best_time, describe_machine, machine_line

FULL = dict(n_ids=750, n_query=3368, n_gallery_ids=13120, n_distractors=2793,
            n_cams=6, dim=2048)
SMALL = dict(n_ids=100, n_query=450, n_gallery_ids=1750, n_distractors=370,
             n_cams=6, dim=256)


def make_problem(seed, n_ids, n_query, n_gallery_ids, n_distractors, n_cams, dim,
                 cam_scale=0.7, idcam_scale=1.2, noise_scale=1.6):
    """Synthetic features and labels with Market-1501's sizes and structure."""
    rng = np.random.default_rng(seed)
    unit = np.float32(1.0 / np.sqrt(dim))  # each random vector has norm ~1

    def randn(n):
        return rng.standard_normal((n, dim), dtype=np.float32) * unit

    centres = randn(n_ids + 1)
    cam_offsets = randn(n_cams)
    # Every identity appears at least once among the queries and twice in the
    # gallery; the rest are spread at random, as in Market-1501.
    q_pids = np.concatenate([np.arange(1, n_ids + 1),
                             rng.integers(1, n_ids + 1, n_query - n_ids)])
    g_pids = np.concatenate([np.repeat(np.arange(1, n_ids + 1), 2),
                             rng.integers(1, n_ids + 1, n_gallery_ids - 2 * n_ids),
                             np.zeros(n_distractors, dtype=np.int64)])
    q_cams = rng.integers(1, n_cams + 1, n_query)
    g_cams = rng.integers(1, n_cams + 1, len(g_pids))
    idcam = {}

    def features(pids, cams):
        x = centres[pids] + np.float32(cam_scale) * cam_offsets[cams - 1]
        keys = pids * (n_cams + 1) + cams
        for k in np.unique(keys):  # one appearance offset per (identity, camera)
            if k not in idcam:
                idcam[k] = randn(1)[0]
        x += np.float32(idcam_scale) * np.stack([idcam[k] for k in keys])
        x += np.float32(noise_scale) * randn(len(pids))
        distr = pids == 0  # distractors: no shared identity centre
        x[distr] = (1.5 * randn(int(distr.sum()))
                    + np.float32(cam_scale) * cam_offsets[cams[distr] - 1])
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x

    return (features(q_pids, q_cams), features(g_pids, g_cams),
            q_pids, g_pids, q_cams, g_cams)


# ----------------------------------------------------------------- baselines
# The plain algorithms the package's versions are timed against: whole-row sorts, dense
# matrices and Python loops, as the published code does it (the tests keep their own).

def sorted_evaluation(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50,
                      ap_mode="trapezoid"):
    """Market-1501 CMC/mAP by a stable argsort of every row (the official protocol)."""
    cmcs, aps = [], []
    for q in range(distmat.shape[0]):
        order = np.argsort(distmat[q], kind="stable")
        pids, cams = g_pids[order], g_camids[order]
        keep = (pids != -1) & ~((pids == q_pids[q]) & (cams == q_camids[q]))
        good = np.flatnonzero(pids[keep] == q_pids[q])
        if not len(good):
            continue
        cmc = np.zeros(max_rank)
        cmc[min(good[0], max_rank):] = 1
        cmcs.append(cmc)
        i = np.arange(len(good), dtype=np.float64)
        precision = (i + 1) / (good + 1)
        if ap_mode == "trapezoid":
            old = np.where(good != 0, i / np.maximum(good, 1), 1.0)
            aps.append(np.sum((1.0 / len(good)) * (old + precision) / 2.0))
        else:
            aps.append(np.mean(precision))
    return dict(cmc=np.mean(cmcs, axis=0), mAP=float(np.mean(aps)), num_valid_queries=len(aps))


def dense_re_ranking(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3):
    """k-reciprocal re-ranking (Zhong et al., CVPR 2017) with dense (Q+G)^2 matrices and
    loops over items, as the authors' code; initial ranking by a stable argsort."""
    dist = np.block([[q_q_dist, q_g_dist], [q_g_dist.T, g_g_dist]]).astype(np.float32) ** 2
    dist = (dist / dist.max(axis=0)).T
    n_q, n = q_g_dist.shape[0], dist.shape[0]
    rank = np.argsort(dist, axis=1, kind="stable")

    def reciprocal(i, k):
        forward = rank[i, :k + 1]
        return forward[np.flatnonzero((rank[forward, :k + 1] == i).any(axis=1))]

    V = np.zeros_like(dist)
    for i in range(n):
        recip = reciprocal(i, k1)
        expansion = [recip]
        for c in recip:
            half = reciprocal(c, int(np.around(k1 / 2.0)))
            if len(np.intersect1d(half, recip)) > 2.0 / 3 * len(half):
                expansion.append(half)
        expansion = np.unique(np.concatenate(expansion))
        weight = np.exp(-dist[i, expansion])
        V[i, expansion] = weight / weight.sum()
    if k2 != 1:
        V = np.stack([V[rank[i, :k2]].mean(axis=0) for i in range(n)])
    users = [np.flatnonzero(V[:, f]) for f in range(n)]
    jaccard = np.empty((n_q, n), dtype=np.float32)
    for i in range(n_q):
        shared = np.zeros(n, dtype=np.float32)
        for f in np.flatnonzero(V[i]):
            shared[users[f]] += np.minimum(V[i, f], V[users[f], f])
        jaccard[i] = 1 - shared / (2.0 - shared)
    final = jaccard * (1 - lambda_value) + dist[:n_q] * lambda_value
    return final[:, n_q:]


# ----------------------------------------------------------------- stages
# Each stage runs in its own spawned process: it loads its inputs from
# workdir, runs, and returns seconds (best of `repeats`) and peak RSS.

def _load(workdir, *names):
    return [np.load(os.path.join(workdir, n + ".npy")) for n in names]


def _ids(workdir):
    z = np.load(os.path.join(workdir, "ids.npz"))
    return z["q_pids"], z["g_pids"], z["q_cams"], z["g_cams"]


def _status_mb(field):
    """VmHWM (peak) or VmRSS (current) of this process, in MB.

    VmHWM belongs to the process image started by exec, unlike ru_maxrss,
    which Linux carries over from the forked parent image.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _rss_mb():
    return _status_mb("VmHWM")


def _current_rss_mb():
    return _status_mb("VmRSS")


def stage_distance(workdir, repeats):
    """compute_distance (cosine, Q x G) by each kernel, then by the one chosen in-process."""
    from reid_baseline.evaluation.distances import KERNELS, compute_distance, product_kernel
    qf, gf = _load(workdir, "qf", "gf")
    chosen = product_kernel()
    base = _current_rss_mb()
    by_kernel = {k: best_time(lambda k=k: compute_distance(qf, gf, "cosine", kernel=k), repeats)[0]
                 for k in KERNELS}
    sec, d = best_time(lambda: compute_distance(qf, gf, "cosine"), repeats)
    peak = _rss_mb()
    np.save(os.path.join(workdir, "dist_cos.npy"), d)
    return dict(seconds=sec, by_kernel=by_kernel, chosen=chosen, peak_rss_mb=peak,
                rss_after_loading_mb=base, input_mb=(qf.nbytes + gf.nbytes) / 2**20)


PRODUCT_SHAPE = (2000, 8000, 2048)  # rows of a, rows of b, width


def stage_products(workdir, repeats):
    """The bare a @ b.T float32 product of PRODUCT_SHAPE by each kernel and by the chosen one,
    with the chooser's own measurement."""
    from reid_baseline.evaluation.distances import (
        KERNELS,
        measure_product_kernels,
        product_kernel,
        product_nt,
    )
    n, m, d = PRODUCT_SHAPE
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, d), dtype=np.float32)
    b = rng.standard_normal((m, d), dtype=np.float32)
    start = time.perf_counter()
    chosen = product_kernel()
    choose_s = time.perf_counter() - start
    by_kernel = {k: best_time(lambda k=k: product_nt(a, b, k), repeats)[0] for k in KERNELS}
    sec, _ = best_time(lambda: product_nt(a, b), repeats)
    return dict(seconds=sec, by_kernel=by_kernel, chosen=chosen, choose_s=choose_s,
                calibration_s=measure_product_kernels(), peak_rss_mb=_rss_mb(),
                gflop=2.0 * n * m * d / 1e9)


def stage_rerank_inputs(workdir, repeats):
    from reid_baseline.evaluation.distances import compute_distance
    qf, gf = _load(workdir, "qf", "gf")
    t = time.perf_counter()
    for name, a, b in (("q_g", qf, gf), ("q_q", qf, qf), ("g_g", gf, gf)):
        np.save(os.path.join(workdir, name + ".npy"), compute_distance(a, b, "euclidean"))
    return dict(seconds=time.perf_counter() - t, peak_rss_mb=_rss_mb())


def _metrics_stage(workdir, repeats, ap_mode, oracle, dist_name="dist_cos"):
    if oracle:
        fn = sorted_evaluation
    else:
        from reid_baseline.evaluation.protocol import evaluate_ranking as fn
    (dist,) = _load(workdir, dist_name)
    ids = _ids(workdir)
    base = _current_rss_mb()
    sec, res = best_time(lambda: fn(dist, *ids, max_rank=50, ap_mode=ap_mode), repeats)
    return dict(seconds=sec, peak_rss_mb=_rss_mb(), rss_after_loading_mb=base,
                input_mb=dist.nbytes / 2**20, cmc=[float(x) for x in res["cmc"]],
                mAP=res["mAP"], num_valid_queries=res["num_valid_queries"])


def stage_metrics_trapezoid(workdir, repeats):
    return _metrics_stage(workdir, repeats, "trapezoid", oracle=False)


def stage_metrics_noninterp(workdir, repeats):
    return _metrics_stage(workdir, repeats, "noninterp", oracle=False)


def stage_oracle_trapezoid(workdir, repeats):
    return _metrics_stage(workdir, 1, "trapezoid", oracle=True)


def stage_oracle_noninterp(workdir, repeats):
    return _metrics_stage(workdir, 1, "noninterp", oracle=True)


def _rerank_stage(workdir, reference):
    if reference:
        fn = dense_re_ranking
    else:
        from reid_baseline.evaluation.rerank import re_ranking as fn
    q_g, q_q, g_g = _load(workdir, "q_g", "q_q", "g_g")
    base = _current_rss_mb()
    t = time.perf_counter()
    out = fn(q_g, q_q, g_g, k1=20, k2=6, lambda_value=0.3)
    sec = time.perf_counter() - t
    peak = _rss_mb()
    name = "rerank_ref" if reference else "rerank"
    np.save(os.path.join(workdir, name + ".npy"), out)
    from reid_baseline.evaluation.protocol import evaluate_ranking
    res = evaluate_ranking(out, *_ids(workdir), max_rank=50)
    return dict(seconds=sec, peak_rss_mb=peak, rss_after_loading_mb=base,
                input_mb=(q_g.nbytes + q_q.nbytes + g_g.nbytes) / 2**20,
                rank1=float(res["cmc"][0]), mAP=res["mAP"])


def stage_rerank(workdir, repeats):
    return _rerank_stage(workdir, reference=False)


def stage_rerank_reference(workdir, repeats):
    return _rerank_stage(workdir, reference=True)


# MSMT17's test split: 3,060 identities, 15 cameras, 11,659 queries, 82,161 gallery images
# (no distractor id); 256-d features keep the synthetic problem's matrix products short.
MSMT17 = dict(n_ids=3060, n_query=11659, n_gallery_ids=82161, n_distractors=0,
              n_cams=15, dim=256)


def stage_rerank_features_msmt17(workdir, repeats):
    """re_ranking_features on the MSMT17-sized problem (features only, no dense G x G)."""
    from reid_baseline.evaluation.protocol import evaluate_ranking
    from reid_baseline.evaluation.rerank import re_ranking_features
    qf, gf = _load(workdir, "msmt_qf", "msmt_gf")
    base = _current_rss_mb()
    t = time.perf_counter()
    out = re_ranking_features(qf, gf, k1=20, k2=6, lambda_value=0.3)
    sec = time.perf_counter() - t
    peak = _rss_mb()
    z = np.load(os.path.join(workdir, "msmt_ids.npz"))
    res = evaluate_ranking(out, z["q_pids"], z["g_pids"], z["q_cams"], z["g_cams"], max_rank=50)
    return dict(seconds=sec, peak_rss_mb=peak, rss_after_loading_mb=base,
                input_mb=(qf.nbytes + gf.nbytes) / 2**20, output_mb=out.nbytes / 2**20,
                rank1=float(res["cmc"][0]), mAP=res["mAP"])


def stage_search(workdir, repeats):
    """inference.exact.exact_top_k: 10 queries x the gallery in search_gf.npy, top 10."""
    from reid_baseline.inference.exact import exact_top_k
    (gf,) = _load(workdir, "search_gf")
    qf = gf[:10] + 0
    base = _current_rss_mb()
    sec, (idx, _) = best_time(lambda: exact_top_k(qf, gf, 10), repeats)
    assert (idx[:, 0] == np.arange(10)).all()  # each query finds itself first
    return dict(seconds=sec, peak_rss_mb=_rss_mb(), rss_after_loading_mb=base,
                input_mb=gf.nbytes / 2**20, gallery_per_second=len(gf) / sec)


def _run_in_subprocess(stage, workdir, repeats):
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(stage, (workdir, repeats))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", action="store_true", help="small problem, quick run")
    ap.add_argument("--out", help="write results as JSON to this file")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3,
                    help="timed runs of the fast stages (best is reported)")
    ap.add_argument("--distances-only", action="store_true",
                    help="only the matrix product and compute_distance stages (each kernel)")
    ap.add_argument("--skip-oracle", action="store_true",
                    help="skip the sort-based metric oracle")
    ap.add_argument("--with-reference-rerank", action="store_true",
                    help="also run the dense reference re-ranking (~9 GB, minutes at full size)")
    ap.add_argument("--idcam-scale", type=float, default=1.2,
                    help="identity-camera appearance offset (larger: harder problem)")
    ap.add_argument("--noise-scale", type=float, default=1.6,
                    help="per-image noise (larger: harder; ~50 is a random model)")
    ap.add_argument("--msmt17-rerank", action="store_true",
                    help="also run re_ranking_features on an MSMT17-sized problem (11,659 x "
                         "82,161, 256-d; ~5 GB, minutes)")
    ap.add_argument("--search-gallery", type=int, default=0, metavar="N",
                    help="also time the exact search (inference.exact.exact_top_k) of 10 queries in N random 2048-d "
                         "gallery features (N * 8 KB of RAM)")
    ap.add_argument("--workdir", help="directory for intermediate .npy files (default: temp)")
    args = ap.parse_args(argv)

    sizes = SMALL if args.small else FULL
    tmp = None
    if args.workdir:
        workdir = args.workdir
        os.makedirs(workdir, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="reid_bench_")
        workdir = tmp.name
    qf, gf, q_pids, g_pids, q_cams, g_cams = make_problem(
        args.seed, idcam_scale=args.idcam_scale, noise_scale=args.noise_scale, **sizes)
    np.save(os.path.join(workdir, "qf.npy"), qf)
    np.save(os.path.join(workdir, "gf.npy"), gf)
    np.savez(os.path.join(workdir, "ids.npz"), q_pids=q_pids, g_pids=g_pids,
             q_cams=q_cams, g_cams=g_cams)
    del qf, gf

    stages = [("matrix product %d x %d x %d" % PRODUCT_SHAPE, stage_products),
              ("distance (cosine, Q x G)", stage_distance)]
    if not args.distances_only:
        stages += [("metrics, trapezoid AP", stage_metrics_trapezoid),
                   ("metrics, non-interpolated AP", stage_metrics_noninterp)]
    if not (args.skip_oracle or args.distances_only):
        stages += [("oracle metrics (sort), trapezoid", stage_oracle_trapezoid),
                   ("oracle metrics (sort), non-interp.", stage_oracle_noninterp)]
    if not args.distances_only:
        stages += [("re-ranking inputs (euclidean, 3 matrices)", stage_rerank_inputs),
                   ("re-ranking (k1=20, k2=6, lambda=0.3)", stage_rerank)]
    if args.with_reference_rerank:
        stages.append(("reference re-ranking (dense, loops)", stage_rerank_reference))
    if args.msmt17_rerank:
        mq, mg, *msmt_ids = make_problem(args.seed, idcam_scale=args.idcam_scale,
                                         noise_scale=args.noise_scale, **MSMT17)
        np.save(os.path.join(workdir, "msmt_qf.npy"), mq)
        np.save(os.path.join(workdir, "msmt_gf.npy"), mg)
        np.savez(os.path.join(workdir, "msmt_ids.npz"), **dict(zip(
            ("q_pids", "g_pids", "q_cams", "g_cams"), msmt_ids, strict=True)))
        del mq, mg, msmt_ids
        stages.append(("re_ranking_features, MSMT17 size (11,659 x 82,161, 256-d)",
                       stage_rerank_features_msmt17))
    if args.search_gallery:
        rng = np.random.default_rng(args.seed)
        sg = rng.standard_normal((args.search_gallery, 2048), dtype=np.float32)
        sg /= np.linalg.norm(sg, axis=1, keepdims=True)
        np.save(os.path.join(workdir, "search_gf.npy"), sg)
        del sg
        stages.append(("search top-10, 10 queries x %d gallery (2048-d)" % args.search_gallery,
                       stage_search))

    problem = dict(sizes, num_gallery=sizes["n_gallery_ids"] + sizes["n_distractors"],
                   seed=args.seed, idcam_scale=args.idcam_scale, noise_scale=args.noise_scale)
    results = dict(machine=describe_machine(), problem=problem, stages={})
    print("machine:", machine_line(results["machine"]))
    print("problem:", problem)
    print("| stage | time (s) | peak RSS (MB) | inputs (MB) |")
    print("|---|---:|---:|---:|")
    for name, fn in stages:
        r = _run_in_subprocess(fn, workdir, args.repeats)
        results["stages"][name] = r
        print("| %s | %.3f | %.0f | %s |" % (name, r["seconds"], r["peak_rss_mb"],
                                          "%.0f" % r["input_mb"] if "input_mb" in r else "-"),
              flush=True)

    st = results["stages"]
    for name in ("matrix product %d x %d x %d" % PRODUCT_SHAPE, "distance (cosine, Q x G)"):
        r = st[name]
        best = min(r["by_kernel"].values())
        print("%s: numpy %.3f s, oneDNN %.3f s; chosen %s %.3f s = %.2fx the faster kernel"
              % (name, r["by_kernel"]["numpy"], r["by_kernel"]["onednn"], r["chosen"],
                 r["seconds"], r["seconds"] / best))
    r = st["matrix product %d x %d x %d" % PRODUCT_SHAPE]
    print("kernel choice: %.3f s in-process (first MXNet call included); its measurement "
          "made again after the stage: %s"
          % (r["choose_s"], ", ".join("%s %.2f ms" % (k, v * 1e3)
                                      for k, v in r["calibration_s"].items())))
    checks = {}
    for mode, fast, oracle in (("trapezoid", "metrics, trapezoid AP",
                                "oracle metrics (sort), trapezoid"),
                               ("noninterp", "metrics, non-interpolated AP",
                                "oracle metrics (sort), non-interp.")):
        if fast not in st:
            continue
        print("%s: Rank-1 %.4f  Rank-5 %.4f  mAP %.4f"
              % (mode, st[fast]["cmc"][0], st[fast]["cmc"][4], st[fast]["mAP"]))
        if oracle in st:
            checks[mode] = dict(cmc_identical=st[fast]["cmc"] == st[oracle]["cmc"],
                                mAP_abs_diff=abs(st[fast]["mAP"] - st[oracle]["mAP"]))
    rr = st.get("re-ranking (k1=20, k2=6, lambda=0.3)")
    if rr:
        print("after re-ranking: Rank-1 %.4f  mAP %.4f" % (rr["rank1"], rr["mAP"]))
    for name, r in st.items():
        if name.startswith("search"):
            print("%s: %.2f s, %.0f gallery images/s, peak RSS %.2f GB (gallery %.2f GB)"
                  % (name, r["seconds"], r["gallery_per_second"], r["peak_rss_mb"] / 1024,
                     r["input_mb"] / 1024))
        if name.startswith("re_ranking_features"):
            print("%s: %.1f s, peak RSS %.2f GB (output %.2f GB); Rank-1 %.4f  mAP %.4f"
                  % (name, r["seconds"], r["peak_rss_mb"] / 1024, r["output_mb"] / 1024,
                     r["rank1"], r["mAP"]))
    if args.with_reference_rerank:
        a = np.load(os.path.join(workdir, "rerank.npy"))
        b = np.load(os.path.join(workdir, "rerank_ref.npy"))
        checks["rerank_max_abs_diff"] = float(np.abs(a - b).max())
    results["checks"] = checks
    print("checks:", checks)
    for c in checks.values():
        if isinstance(c, dict) and not (c["cmc_identical"] and c["mAP_abs_diff"] <= 1e-12):
            print("MISMATCH between fast metrics and oracle", file=sys.stderr)
            return 1
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
        print("wrote", args.out)
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
