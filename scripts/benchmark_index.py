#!/usr/bin/env python
"""Index benchmark: build images/s with the demo network, and exact vs approximate search
(faiss shortlist re-ranked exactly; faiss's flat index as a reference) on stores of generated
2048-d features: latency per batch of queries, recall@10 of new queries, identity Rank-1 and
mAP, build time and peak memory.

  build: the demo's network (configs/demo_toy.yml: ResNet-50 at 128x64, random weights) indexes
         generated toy images (search.py index's code: ReIDModel.build_index).
  query: for each size, a store of generated features is written through the same streaming
         writer (index.build_store): IMAGES_PER_ID images per identity around its centre,
         L2-normalised, `--features structured` (low effective rank, like ReID features) or
         `isotropic` (noise in all 2048 dimensions); queries are new views of stored
         identities. The approximate index is built (and calibrated) in its own process, and
         each search mode runs in its own process: seconds per batch of queries, peak
         anonymous memory (RssAnon) and peak file pages mapped (RssFile, the store's page
         cache) sampled every 20 ms. Identity figures: a query's true matches are the
         IMAGES_PER_ID stored images of its identity; Rank-1 is the share of queries whose
         first result is one, mAP the mean average precision of the top 10 (over all 8).
Example: python scripts/benchmark_index.py --sizes 200000 1000000 --queries 100 [--out r.json]
"""
import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from benchmarking import describe_machine
from reid_baseline.fileio import check_output_file, output_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DIM = 2048
IMAGES_PER_ID = 8  # generated features: images per identity
NOISE = 0.6  # isotropic: spread of an identity's images around its centre (relative norm)
LATENT = 128  # structured: dimensions of the identity and view factors
VIEW_NOISE, ISO_NOISE = 0.5, 0.3  # structured: view factors and isotropic noise (relative)
FEATURES = ("structured", "isotropic")


@functools.lru_cache(maxsize=4)
def _factors(seed, tag):
    """(LATENT, DIM) loadings with a decaying spectrum: factor k has weight 1 / sqrt(k + 1)."""
    a = np.random.default_rng([seed, tag]).standard_normal((LATENT, DIM), np.float32)
    return a / np.sqrt(1.0 + np.arange(LATENT, dtype=np.float32))[:, None]


def _centres(ids, seed, features="isotropic"):
    """Each identity's centre, from (seed, identity) alone: isotropic in DIM dimensions, or
    (structured) a point of the LATENT-dimensional identity factors, unit norm."""
    width = DIM if features == "isotropic" else LATENT
    z = np.stack([np.random.default_rng([seed, int(pid)]).standard_normal(width, np.float32)
                  for pid in ids])
    if features == "isotropic":
        return z
    c = z @ _factors(seed, 7)
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def _views(ids, rng, seed, features="isotropic"):
    """L2-normalised noisy views (images) of identities `ids`. isotropic: centre + NOISE x
    Gaussian noise in all DIM dimensions (another identity's image is at cosine 0 +- 0.02,
    so beyond its 8 true matches a query's neighbours are noise). structured: like ReID
    features, of low effective rank (256 dimensions hold about 94% of the variance): centre +
    VIEW_NOISE x LATENT view factors (pose, camera) + ISO_NOISE x isotropic noise; another
    identity's image is at cosine 0 +- 0.16."""
    unique, inverse = np.unique(ids, return_inverse=True)
    out = _centres(unique, seed, features)[inverse]
    if features == "isotropic":
        out += NOISE * rng.standard_normal(out.shape, np.float32)
    else:
        views = _factors(seed, 8)
        out += (VIEW_NOISE / np.sqrt((views ** 2).sum())) * (
            rng.standard_normal((len(ids), LATENT), np.float32) @ views)
        out += (ISO_NOISE / np.sqrt(DIM)) * rng.standard_normal(out.shape, np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def _generated(first, count, seed, features="isotropic"):
    """Generated features of store rows first .. first + count - 1 (row r: identity
    r // IMAGES_PER_ID), a function of (seed, first) only."""
    ids = np.arange(first, first + count) // IMAGES_PER_ID
    return _views(ids, np.random.default_rng([seed, first, 1]), seed, features)


def write_store(folder, size, dtype, seed=0, overwrite=True, features="structured"):
    """A store of `size` generated features, streamed through index.build_store (a store the
    package did not write is replaced only with `overwrite`)."""
    from reid_baseline.inference import store as index
    names = ["gen/%08d.jpg" % i for i in range(size)]

    def embed(part):
        return _generated(int(part[0][4:12]), len(part), seed, features), part, []
    start = time.time()
    index.build_store(folder, names, embed, "generated features\n", None, "0" * 64, dtype=dtype,
                      overwrite=overwrite, chunk=8192)
    return time.time() - start


def _peak_memory(stop, peaks):
    while not stop.is_set():
        with open("/proc/self/status") as f:
            for line in f:
                key = line.split(":")[0]
                if key in ("RssAnon", "RssFile"):
                    peaks[key] = max(peaks.get(key, 0), int(line.split()[1]) / 1024.0)
        time.sleep(0.02)


def _sampled(fn):
    """(fn's result, peak RssAnon MB, peak RssFile MB) of fn() run in this process."""
    stop, peaks = threading.Event(), {}
    sampler = threading.Thread(target=_peak_memory, args=(stop, peaks), daemon=True)
    sampler.start()
    try:
        out = fn()
    finally:
        stop.set()
        sampler.join()
    return out, peaks.get("RssAnon"), peaks.get("RssFile")


def identity_scores(indices, query_ids):
    """(Rank-1, mAP) of ranked store rows against the queries' identities (row r is an image
    of identity r // IMAGES_PER_ID); AP over the ranked rows, IMAGES_PER_ID true matches."""
    hits = (np.asarray(indices) // IMAGES_PER_ID) == np.asarray(query_ids)[:, None]
    hits &= np.asarray(indices) >= 0
    precision = np.cumsum(hits, axis=1) / np.arange(1, hits.shape[1] + 1)
    ap = (precision * hits).sum(axis=1) / IMAGES_PER_ID
    return float(hits[:, 0].mean()), float(ap.mean())


def build(folder, nlist=None):
    """Build and calibrate the approximate index in this process: its manifest entry,
    seconds and peak memory."""
    from reid_baseline.inference.approximate import build_approximate
    from reid_baseline.inference.store import FeatureStore
    start = time.time()
    info, anon, mapped = _sampled(lambda: build_approximate(FeatureStore(folder), nlist=nlist))
    return {"approximate_build_s": time.time() - start, "approximate_index": info,
            "build_peak_rss_anon_mb": anon, "build_peak_rss_file_mb": mapped}


def measure(folder, mode, queries, batches, seed=0, features="structured"):
    """One search mode in this process: seconds per batch, peak memory, the results and the
    queries' identities. faiss_flat: faiss's IndexFlatIP over the whole store in RAM (float32;
    its loading time is reported apart)."""
    from reid_baseline.inference import store as index
    store = index.FeatureStore(folder)
    rng = np.random.default_rng(seed + 1)
    batches_of = [rng.integers(0, len(store) // IMAGES_PER_ID, queries) for _ in range(batches)]
    # new views (fresh noise) of stored identities
    batches_of = [(ids, _views(ids, rng, seed, features)) for ids in batches_of]
    extra = {}

    def run():
        flat = None
        if mode == "faiss_flat":
            import faiss
            start = time.time()
            flat = faiss.IndexFlatIP(store.features.shape[1])
            for a in range(0, len(store), 1 << 16):
                flat.add(np.asarray(store.features[a:a + (1 << 16)], np.float32))
            extra["load_s"] = time.time() - start
        times, found = [], []
        for _, q in batches_of:
            start = time.time()
            if mode == "exact":
                from reid_baseline.inference.exact import exact_top_k
                idx, _ = exact_top_k(q, store.features, 10)
            elif mode == "faiss_flat":
                _, idx = flat.search(q, 10)
            else:
                from reid_baseline.inference.approximate import approximate_top_k
                idx, _ = approximate_top_k(store, q, 10)
            times.append(time.time() - start)
            found.append(idx)
        return times, found
    (times, found), anon, mapped = _sampled(run)
    return dict(extra, seconds_per_batch=times, peak_rss_anon_mb=anon, peak_rss_file_mb=mapped,
                indices=np.concatenate(found).tolist(),
                query_ids=np.concatenate([ids for ids, _ in batches_of]).tolist())


def _in_subprocess(folder, mode, args):
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--measure", mode,
                          "--store", folder, "--queries", str(args.queries), "--batches",
                          str(args.batches), "--features", args.features]
                         + (["--nlist", str(args.nlist)] if args.nlist else []),
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def build_throughput(work, images):
    """Images/s of ReIDModel.build_index with the demo network on generated toy images."""
    from reid_baseline import ReIDModel
    from reid_baseline.config import load_config
    from reid_baseline.data.toy.market1501 import make_toy_market1501
    from reid_baseline.modeling.network import build_model
    cfg = load_config(os.path.join(ROOT, "configs", "demo_toy.yml"),
                      ["GPUS", "[]", "DATALOADER.NUM_WORKERS", "0"])
    root = make_toy_market1501(os.path.join(work, "toy"), seed=0)["root"]
    folder = os.path.join(work, "photos")
    os.makedirs(folder)
    sources = sorted(os.path.join(root, d, n) for d in ("bounding_box_test", "query",
                                                         "bounding_box_train")
                     for n in os.listdir(os.path.join(root, d)))
    for i in range(images):
        os.link(sources[i % len(sources)], os.path.join(folder, "%06d.jpg" % i))
    params = os.path.join(work, "demo.params")
    import mxnet as mx
    net = build_model(cfg, 10)
    net(mx.nd.zeros((1, 3, cfg.INPUT.HEIGHT, cfg.INPUT.WIDTH)))  # completes deferred shapes
    net.save_parameters(params)
    model = ReIDModel(cfg, params)
    model.extract(sources[:cfg.TEST.BATCH_SIZE])  # warm-up: graph building, memory pool
    start = time.time()
    model.build_index(folder, os.path.join(work, "photos.index"))
    return images / (time.time() - start)


def main():
    from reid_baseline.inference.approximate import recall_at_10
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200000, 1000000])
    parser.add_argument("--dtype", default="float16", choices=("float16", "float32"))
    parser.add_argument("--features", default="structured", choices=FEATURES,
                        help="generated features (module docstring)")
    parser.add_argument("--queries", type=int, default=100, help="queries per batch")
    parser.add_argument("--batches", type=int, default=3, help="timed query batches")
    parser.add_argument("--nlist", type=int, help="IVF cells (default: the package's)")
    parser.add_argument("--modes", nargs="+", default=["exact", "approximate", "faiss_flat"],
                        choices=("exact", "approximate", "faiss_flat"))
    parser.add_argument("--flat-max-size", type=int, default=200000,
                        help="faiss_flat (the whole store in RAM as float32) up to this size")
    parser.add_argument("--build-images", type=int, default=1024)
    parser.add_argument("--work", help="folder for the stores (default: a temporary one)")
    parser.add_argument("--out", help="also write the results as JSON to this file")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(build(args.store, args.nlist) if args.measure == "build" else
                         measure(args.store, args.measure, args.queries, args.batches,
                                 features=args.features)))
        return
    if args.out:
        check_output_file(args.out, False, "--out")
    work = args.work or tempfile.mkdtemp(prefix="bench_index_")
    os.makedirs(work, exist_ok=True)
    results = {"machine": describe_machine(), "dtype": args.dtype, "features": args.features,
               "queries_per_batch": args.queries, "nlist": args.nlist, "sizes": {}}
    if args.build_images:
        results["build_images_per_s"] = build_throughput(os.path.join(work, "build"),
                                                         args.build_images)
        print("index build: %.1f images/s" % results["build_images_per_s"], flush=True)
    for size in args.sizes:
        folder = os.path.join(work, "store_%d_%s" % (size, args.features))
        # In a temporary folder the store is always replaced; in --work never a foreign one.
        row = {"write_s": write_store(folder, size, args.dtype, overwrite=not args.work,
                                      features=args.features),
               "load_average_before": os.getloadavg()}
        print("%d: store written in %.0f s" % (size, row["write_s"]), flush=True)
        if "approximate" in args.modes:
            row.update(_in_subprocess(folder, "build", args))
            print("%d: approximate index in %.0f s: %s" % (size, row["approximate_build_s"],
                                                          row["approximate_index"]), flush=True)
        for mode in args.modes:
            if mode == "faiss_flat" and size > args.flat_max_size:
                continue
            row[mode] = _in_subprocess(folder, mode, args)
            row[mode]["rank1"], row[mode]["mAP"] = identity_scores(row[mode]["indices"],
                                                                   row[mode]["query_ids"])
            print("%d: %s %s" % (size, mode, {k: v for k, v in row[mode].items()
                                              if k not in ("indices", "query_ids")}), flush=True)
        exact = np.array(row["exact"]["indices"]) if "exact" in row else None
        for mode in ("approximate", "faiss_flat"):
            if exact is not None and mode in row:
                row[mode]["recall_at_10_of_new_queries"] = recall_at_10(
                    exact, np.array(row[mode]["indices"]))
        if "approximate" in row:
            row["recall_at_10_of_new_queries"] = row["approximate"].get(
                "recall_at_10_of_new_queries")
        for mode in ("exact", "approximate", "faiss_flat"):
            for key in ("indices", "query_ids"):
                row.get(mode, {}).pop(key, None)
        row["load_average_after"] = os.getloadavg()
        results["sizes"][size] = row
        print(json.dumps({size: row}), flush=True)
        if not args.work:
            shutil.rmtree(folder)
    results["load_average_after"] = os.getloadavg()
    if args.out:
        with output_path(args.out, False, "--out") as tmp, open(tmp, "w") as f:
            json.dump(results, f, indent=1)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
