#!/usr/bin/env python
"""Training input pipeline speed: images/s per CPU core, old MXNet/GluonCV blocks vs the new
OpenCV/NumPy batches, at each DATALOADER.CACHE mode.

Generates a Market-1501-sized set (12,936 JPEGs of 64x128, the toy generator's images) once in
--data, then times training batches of 32 at 384x128 (the recipe: flip, pad 10 + crop):
- "old": today's blocks before issue 10 (tests/reference_pipeline.py), in this process;
- "new": build_train_loader with NUM_WORKERS 0 (one process: its images/s is per core) for
  each cache mode, epoch 1 (cache being filled) and epoch 2 (served from RAM);
- with --workers N also NUM_WORKERS N, whose CPU time is summed over all processes.
"images/CPU-s" divides by the CPU time used (process + workers), which load on a shared
machine changes less than the wall clock.

    OMP_NUM_THREADS=2 python scripts/benchmark_input.py --data /tmp/market_sized --out bench.json
"""
import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _p in (ROOT, os.path.join(ROOT, "tests"), os.path.join(ROOT, "scripts")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from benchmark_eval import machine_info  # noqa: E402  (same folder)
from reid_baseline.config import load_config  # noqa: E402
from reid_baseline.data.datasets.base import Record  # noqa: E402
from reid_baseline.data.loader import build_train_loader  # noqa: E402
from reid_baseline.data.toy_market1501 import make_toy_market1501  # noqa: E402

MARKET_TRAIN_IMAGES = 12936


def market_sized_records(folder, count):
    """`count` toy training images (216 ids x 6 cameras x 10), generated on first use."""
    train = os.path.join(folder, "Market-1501-v15.09.15", "bounding_box_train")
    if not os.path.isdir(train):
        print("generating %d images in %s ..." % (count, folder), flush=True)
        per_id = -(-count // (216 * 6))
        make_toy_market1501(folder, num_train_ids=216, num_test_ids=1, cameras_per_id=(6, 6),
                            images_per_id_per_camera=per_id, num_distractors=1, num_junk=0)
    names = sorted(os.listdir(train))[:count]
    return [Record(os.path.join(train, n), i % 751, 0) for i, n in enumerate(names)]


def _cpu_seconds(pids):
    """user + system CPU seconds of processes `pids` (/proc/<pid>/stat fields 14 and 15)."""
    total = 0
    for pid in pids:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def time_old(cfg, records, batches):
    """The pre-issue-10 pipeline, as its loader ran with NUM_WORKERS 0."""
    import mxnet as mx
    from reference_pipeline import old_read_image, old_train_sample, old_train_transform

    transform, bs = old_train_transform(cfg), cfg.SOLVER.BATCH_SIZE
    wall, cpu = time.perf_counter(), time.process_time()
    for b in range(batches):
        batch = [old_train_sample(transform, old_read_image(records[i].path), 0, i)
                 for i in range(b * bs, (b + 1) * bs)]
        mx.nd.stack(*batch).wait_to_read()
    return _row("old blocks (MXNet/GluonCV), 0 workers", batches * bs,
                time.perf_counter() - wall, time.process_time() - cpu)


def time_new(cfg, records, epochs, batches):
    """build_train_loader's batches; one row per epoch."""
    loader = build_train_loader(cfg, records)
    pool = getattr(loader, "_worker_pool", None)
    workers = [p.pid for p in pool._pool] if pool is not None else []
    rows = []
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        n, wall = 0, time.perf_counter()
        cpu = time.process_time() + _cpu_seconds(workers)
        for i, (data, _) in enumerate(loader):
            n += data.shape[0]
            if i + 1 == batches:
                break
        cpu = time.process_time() + _cpu_seconds(workers) - cpu
        rows.append(_row("new, cache %s, %d workers, epoch %d" % (
            cfg.DATALOADER.CACHE, cfg.DATALOADER.NUM_WORKERS, epoch + 1), n,
            time.perf_counter() - wall, cpu))
    return rows


def _row(name, images, wall, cpu):
    row = dict(name=name, images=images, wall_s=wall, cpu_s=cpu, images_per_s=images / wall,
               images_per_cpu_s=images / cpu)
    print("| %s | %d | %.0f | %.0f |" % (name, images, row["images_per_s"],
                                         row["images_per_cpu_s"]), flush=True)
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="folder of the generated set (made if absent)")
    ap.add_argument("--images", type=int, default=MARKET_TRAIN_IMAGES)
    ap.add_argument("--old-batches", type=int, default=20,
                    help="batches timed for the old pipeline (it is slow)")
    ap.add_argument("--batches", type=int, default=0, help="limit the new pipeline's batches "
                    "per epoch (default: whole epochs)")
    ap.add_argument("--workers", type=int, default=0, help="also time NUM_WORKERS N")
    ap.add_argument("--out", help="write the results as JSON")
    args = ap.parse_args(argv)

    records = market_sized_records(args.data, args.images)
    base = ["MODEL.PRETRAINED", "", "DATASETS.VERIFY_COUNTS", "False", "GPUS", "[]"]
    results = dict(machine=machine_info(), load_average=os.getloadavg(), images=len(records),
                   rows=[])
    print("| pipeline | images | images/s (wall) | images/CPU-s |\n|---|---:|---:|---:|")
    results["rows"].append(time_old(load_config(None, base), records, args.old_batches))
    runs = [("0", mode) for mode in ("none", "decoded", "resized")]
    if args.workers:
        runs += [(str(args.workers), mode) for mode in ("none", "resized")]
    for workers, mode in runs:
        cfg = load_config(None, base + ["DATALOADER.NUM_WORKERS", workers,
                                        "DATALOADER.CACHE", mode])
        results["rows"] += time_new(cfg, records, 1 if mode == "none" else 2, args.batches)
    results["load_average_after"] = os.getloadavg()
    print("load average before %s, after %s" % (results["load_average"],
                                                results["load_average_after"]))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
