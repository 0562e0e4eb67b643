#!/usr/bin/env python
"""Training input pipeline speed: images/s per CPU core, MXNet/GluonCV per-image blocks vs the
package's OpenCV/NumPy batches, at each DATALOADER.CACHE mode.

Generates a Market-1501-sized set (12,936 JPEGs of 64x128, the toy generator's images) once in
--data, then times training batches of 32 at 384x128 (the recipe: flip, pad 10 + crop):
- "MXNet/GluonCV blocks": MXNet's decoder and Gluon/GluonCV transform blocks per image (the
  usual Gluon pipeline, written out below), in this process;
- "package": build_train_loader with NUM_WORKERS 0 (one process: its images/s is per core) for
  each cache mode, epoch 1 (cache being filled) and epoch 2 (served from RAM);
- with --workers N also NUM_WORKERS N, whose CPU time is summed over all processes.
"images/CPU-s" divides by the CPU time used (process + workers), which load on a shared
machine changes less than the wall clock.

    OMP_NUM_THREADS=2 python scripts/benchmark_input.py --data data/market_sized --out bench.json
"""
import argparse
import json
import os
import random
import sys
import time

import numpy as np

from benchmarking import describe_machine
from reid_baseline.config import load_config
from reid_baseline.data.datasets.base import Record
from reid_baseline.data.loader import build_train_loader
from reid_baseline.data.toy.market1501 import make_toy_market1501

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


def gluon_train_transform(cfg):
    """The recipe's training augmentation as Gluon/GluonCV blocks on one HWC NDArray: resize,
    random flip, zero-pad + random crop, random erasing, to tensor, normalise."""
    from gluoncv.data.transforms.block import RandomCrop, RandomErasing
    from mxnet.gluon import nn
    from mxnet.gluon.data.vision import transforms

    steps = [transforms.Resize(size=(cfg.INPUT.WIDTH, cfg.INPUT.HEIGHT), interpolation=1)]
    if cfg.INPUT.FLIP_PROB > 0:
        flip = nn.HybridLambda(lambda F, x: F.flip(x, axis=1))
        steps.append(transforms.RandomApply(flip, p=cfg.INPUT.FLIP_PROB))
    if cfg.INPUT.PAD > 0:
        steps.append(RandomCrop(size=(cfg.INPUT.WIDTH, cfg.INPUT.HEIGHT), pad=cfg.INPUT.PAD))
    if cfg.INPUT.ERASING_PROB > 0:
        mean = tuple(round(m * 255) for m in cfg.INPUT.PIXEL_MEAN)
        steps.append(RandomErasing(probability=float(cfg.INPUT.ERASING_PROB), mean=mean))
    return transforms.Compose(steps + [transforms.ToTensor(), transforms.Normalize(
        mean=tuple(cfg.INPUT.PIXEL_MEAN), std=tuple(cfg.INPUT.PIXEL_STD))])


def time_gluon_blocks(cfg, records, batches):
    """MXNet's decoder and the Gluon/GluonCV blocks, image by image, in this process."""
    import mxnet as mx

    transform, bs = gluon_train_transform(cfg), cfg.SOLVER.BATCH_SIZE
    wall, cpu = time.perf_counter(), time.process_time()
    for b in range(batches):
        batch = []
        for i in range(b * bs, (b + 1) * bs):
            random.seed(i)  # the blocks draw from Python's and NumPy's random state
            np.random.seed(i)
            with open(records[i].path, "rb") as f:
                image = mx.image.imdecode(f.read(), flag=1, to_rgb=True)
            batch.append(transform(image))
        mx.nd.stack(*batch).wait_to_read()
    return _row("MXNet/GluonCV blocks, 0 workers", batches * bs,
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
        rows.append(_row("package, cache %s, %d workers, epoch %d" % (
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
    ap.add_argument("--gluon-batches", type=int, default=20,
                    help="batches timed for the MXNet/GluonCV blocks (they are slow)")
    ap.add_argument("--batches", type=int, default=0, help="limit the package pipeline's batches "
                    "per epoch (default: whole epochs)")
    ap.add_argument("--workers", type=int, default=0, help="also time NUM_WORKERS N")
    ap.add_argument("--out", help="write the results as JSON")
    args = ap.parse_args(argv)
    if args.out:  # found before the benchmark runs, not after
        from reid_baseline.fileio import check_output_file
        check_output_file(args.out, False, "--out")

    records = market_sized_records(args.data, args.images)
    base = ["MODEL.PRETRAINED", "", "DATASETS.VERIFY_COUNTS", "False", "GPUS", "[]"]
    results = dict(machine=describe_machine(), load_average=os.getloadavg(), images=len(records),
                   rows=[])
    print("| pipeline | images | images/s (wall) | images/CPU-s |\n|---|---:|---:|---:|")
    results["rows"].append(time_gluon_blocks(load_config(None, base), records,
                                              args.gluon_batches))
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
        from reid_baseline.fileio import write_output
        write_output(args.out, json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
