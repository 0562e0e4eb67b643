#!/usr/bin/env python
"""Run a distributed MXNet job on this machine: a scheduler, S servers and W workers.

Example (2 workers sharing each batch of 32):
  python scripts/launch_local.py --workers 2 --servers 1 -- python train.py \
      --config configs/demo_toy.yml SOLVER.KVSTORE dist_sync OUTPUT_DIR runs/demo_toy_dist
If a process fails, the others are stopped and the launcher exits non-zero naming it; with
--hang-timeout S, S seconds without a line from any worker stop the job too (exit 124).
Ctrl-C, SIGTERM and SIGHUP stop the whole job.
"""
import argparse
import sys

from reid_baseline.cli import run
from reid_baseline.launch.local import add_job_options, job_command, launch_local


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     usage="%(prog)s --workers W [--servers S] -- COMMAND ...")
    parser.add_argument("--workers", type=int, required=True, help="worker processes (W)")
    parser.add_argument("--servers", type=int, default=1, help="server processes (default 1)")
    add_job_options(parser, "the worker command, after --, e.g. python train.py ...")
    args = parser.parse_args()
    command = job_command(args)
    sys.exit(launch_local(command, args.workers, args.servers, grace=args.grace,
                          hang_timeout=args.hang_timeout))


if __name__ == "__main__":
    run(main)
