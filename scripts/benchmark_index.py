#!/usr/bin/env python
"""Index benchmark: build images/s with the demo network, and exact vs approximate (faiss IVF)
query latency, peak memory and recall@10 on stores of generated 2048-d features.

  build: the demo's network (configs/demo_toy.yml: ResNet-50 at 128x64, random weights) indexes
         generated toy images (search.py index's code: ReIDModel.build_index).
  query: for each size, a store of generated features is written through the same streaming
         writer (index.build_store): clustered like ReID features (IDS_PER_IMAGE images per
         identity around its centre), L2-normalised; queries are new noisy views of stored
         identities. Each measurement runs in its own process: latency per batch of queries,
         and peak anonymous memory (RssAnon) and peak file pages mapped (RssFile, the store's
         page cache) sampled every 20 ms.
Example: python scripts/benchmark_index.py --sizes 100000 1000000 --queries 100 [--out r.json]
"""
import argparse
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
from reid_baseline.fileio import PRODUCER, atomic_path, check_output_file, json_is_ours

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DIM = 2048
IMAGES_PER_ID = 8  # generated features: images per identity
NOISE = 0.6  # spread of an identity's images around its centre (relative to the centre norm)


def _centres(ids, seed):
    """Each identity's centre, from (seed, identity) alone."""
    return np.stack([np.random.default_rng([seed, int(pid)]).standard_normal(DIM, np.float32)
                     for pid in ids])


def _views(ids, rng, seed):
    """L2-normalised noisy views (images) of identities `ids`."""
    unique, inverse = np.unique(ids, return_inverse=True)
    out = _centres(unique, seed)[inverse]
    out += NOISE * rng.standard_normal(out.shape, np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def _generated(first, count, seed):
    """Generated features of store rows first .. first + count - 1 (row r: identity
    r // IMAGES_PER_ID), a function of (seed, first) only."""
    ids = np.arange(first, first + count) // IMAGES_PER_ID
    return _views(ids, np.random.default_rng([seed, first, 1]), seed)


def write_store(folder, size, dtype, seed=0, overwrite=True):
    """A store of `size` generated features, streamed through index.build_store (a store the
    package did not write is replaced only with `overwrite`)."""
    from reid_baseline.inference import store as index
    names = ["gen/%08d.jpg" % i for i in range(size)]

    def embed(part):
        return _generated(int(part[0][4:12]), len(part), seed), part, []
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


def measure(folder, mode, queries, batches, seed=0):
    """One measurement in this process: (seconds per batch list, peak memory MB)."""
    from reid_baseline.inference import store as index
    stop, peaks = threading.Event(), {}
    sampler = threading.Thread(target=_peak_memory, args=(stop, peaks), daemon=True)
    sampler.start()
    store = index.FeatureStore(folder)
    rng = np.random.default_rng(seed + 1)
    times, found = [], []
    for _ in range(batches):
        # new views (fresh noise) of stored identities
        q = _views(rng.integers(0, len(store) // IMAGES_PER_ID, queries), rng, seed)
        start = time.time()
        if mode == "exact":
            from reid_baseline.inference.exact import exact_top_k
            idx, _ = exact_top_k(q, store.features, 10)
        else:
            from reid_baseline.inference.approximate import approximate_top_k
            idx, _ = approximate_top_k(store, q, 10)
        times.append(time.time() - start)
        found.append(idx)
    stop.set()
    sampler.join()
    return {"seconds_per_batch": times, "peak_rss_anon_mb": peaks.get("RssAnon"),
            "peak_rss_file_mb": peaks.get("RssFile"),
            "indices": np.concatenate(found).tolist()}


def _in_subprocess(folder, mode, queries, batches):
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--measure", mode,
                          "--store", folder, "--queries", str(queries), "--batches",
                          str(batches)], check=True, capture_output=True, text=True)
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
    from reid_baseline.inference.approximate import build_approximate, recall_at_10
    from reid_baseline.inference.store import FeatureStore
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100000, 1000000])
    parser.add_argument("--dtype", default="float16", choices=("float16", "float32"))
    parser.add_argument("--queries", type=int, default=100, help="queries per batch")
    parser.add_argument("--batches", type=int, default=3, help="timed query batches")
    parser.add_argument("--nlist", type=int, default=1024, help="IVF cells")
    parser.add_argument("--recall-queries", type=int, default=200)
    parser.add_argument("--build-images", type=int, default=1024)
    parser.add_argument("--work", help="folder for the stores (default: a temporary one)")
    parser.add_argument("--out", help="also write the results as JSON to this file")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.store, args.measure, args.queries, args.batches)))
        return
    if args.out:
        check_output_file(args.out, False, json_is_ours, "--out")
    work = args.work or tempfile.mkdtemp(prefix="bench_index_")
    os.makedirs(work, exist_ok=True)
    results = {"machine": describe_machine(), "dtype": args.dtype,
               "queries_per_batch": args.queries, "nlist": args.nlist, "sizes": {}}
    if args.build_images:
        results["build_images_per_s"] = build_throughput(os.path.join(work, "build"),
                                                         args.build_images)
        print("index build: %.1f images/s" % results["build_images_per_s"], flush=True)
    for size in args.sizes:
        folder = os.path.join(work, "store_%d" % size)
        # In a temporary folder the store is always replaced; in --work never a foreign one.
        row = {"write_s": write_store(folder, size, args.dtype, overwrite=not args.work)}
        print("%d: store written in %.0f s" % (size, row["write_s"]), flush=True)
        start = time.time()
        info = build_approximate(FeatureStore(folder), nlist=min(args.nlist, size // 39),
                                 recall_queries=args.recall_queries)
        row.update(approximate_build_s=time.time() - start, approximate_index=info)
        print("%d: approximate index in %.0f s: %s" % (size, row["approximate_build_s"], info),
              flush=True)
        for mode in ("exact", "approximate"):
            row[mode] = _in_subprocess(folder, mode, args.queries, args.batches)
            print("%d: %s %s" % (size, mode, {k: v for k, v in row[mode].items()
                                              if k != "indices"}), flush=True)
        exact = np.array(row["exact"].pop("indices"))
        approx = np.array(row["approximate"].pop("indices"))
        row["recall_at_10_of_new_queries"] = recall_at_10(exact, approx)
        results["sizes"][size] = row
        print(json.dumps({size: row}), flush=True)
        if not args.work:
            shutil.rmtree(folder)
    results["load_average_after"] = os.getloadavg()
    if args.out:
        with atomic_path(args.out) as tmp, open(tmp, "w") as f:
            json.dump(dict(results, written_by=PRODUCER), f, indent=1)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
