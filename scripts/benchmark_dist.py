#!/usr/bin/env python
"""Training samples/s of 1 process vs W local workers of a dist_sync job (launch_local.py), same
config and global batch, on the toy set; read from the runs' metrics.jsonl (rank 0's figures
are the whole job's), the first epoch skipped (start-up, graph building).

Example: python scripts/benchmark_dist.py --workers 2 --epochs 3 [KEY VALUE ...]
(OMP_NUM_THREADS is split over the workers: each gets threads / W.)
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

from reid_baseline.benchmarking import describe_machine
from reid_baseline.data.toy_market1501 import make_toy_market1501

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _samples_per_s(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f][1:]
    return sum(r["images_per_sec"] for r in records) / len(records)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", os.cpu_count())))
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="bench_dist_")
    root = make_toy_market1501(work, seed=0)["root"]
    common = ["--config", os.path.join(ROOT, "configs", "demo_toy.yml"), "DATASETS.ROOT", root,
              "SOLVER.MAX_EPOCHS", str(args.epochs), "SOLVER.EVAL_PERIOD", "0",
              "SOLVER.CHECKPOINT_PERIOD", str(args.epochs), "DATALOADER.NUM_WORKERS", "0",
              "GPUS", "[]"] + args.opts
    train = [sys.executable, os.path.join(ROOT, "train.py")]
    results = {"machine": describe_machine(), "epochs_timed": args.epochs - 1}
    for workers in (1, args.workers):
        run_dir = os.path.join(work, "w%d" % workers)
        env = dict(os.environ, OMP_NUM_THREADS=str(max(args.threads // workers, 1)))
        if workers == 1:
            cmd = train + common + ["OUTPUT_DIR", run_dir]
        else:
            cmd = ([sys.executable, os.path.join(ROOT, "scripts", "launch_local.py"), "--workers",
                    str(workers), "--"] + train + common
                   + ["OUTPUT_DIR", run_dir, "SOLVER.KVSTORE", "dist_sync"])
        subprocess.run(cmd, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        results["samples_per_s_%d_worker%s" % (workers, "s" if workers > 1 else "")] = _samples_per_s(run_dir)
    results["ratio"] = results["samples_per_s_%d_workers" % args.workers] / results["samples_per_s_1_worker"]
    for key, value in results.items():
        print("%-28s %s" % (key, "%.2f" % value if isinstance(value, float) else value))


if __name__ == "__main__":
    main()
