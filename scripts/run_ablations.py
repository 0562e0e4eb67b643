#!/usr/bin/env python
"""Ablation study in one command: train and evaluate the base config and every ablation R times
(finished runs are skipped, interrupted ones resumed), then write report.md, report.json and
report.png in --out (see reid_baseline/ablation/study.py).

Examples:
  OMP_NUM_THREADS=2 python scripts/run_ablations.py --toy
  python scripts/run_ablations.py --base configs/market1501.yml --configs configs/ablations/*.yml --repeats 3 --gpus 0
"""
import argparse
import glob
import os
import sys

from reid_baseline.cli import config_from_args, run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ABLATIONS = sorted(glob.glob(os.path.join(ROOT, "configs", "ablations", "*.yml")))


def main(argv=None):
    """Parse the options, run the study, exit 1 if a run failed."""
    # Not cli.build_parser: its --config/--ablation name one config, a study takes a base and
    # many ablations. KEY VALUE overrides are the leftover words, as in the other commands.
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     usage="%(prog)s [options] [KEY VALUE ...]",
                                     epilog="KEY VALUE ...: config overrides for every run")
    parser.add_argument("--base", default=None, help="base YAML config (default: "
                        "configs/market1501.yml; with --toy configs/ablation_study_toy.yml)")
    parser.add_argument("--configs", nargs="+", default=ABLATIONS, metavar="FILE",
                        help="ablation files, each applied to the base (default: "
                        "configs/ablations/*.yml)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs per config, seeds SOLVER.SEED + 0..R-1 (default: 1)")
    parser.add_argument("--gpus", default=None,
                        help='comma-separated GPU ids, "" for the CPU, or auto (as train.py)')
    parser.add_argument("--out", default=None, help="study folder (default: runs/ablations; "
                        "with --toy runs/ablations_toy)")
    parser.add_argument("--toy", action="store_true",
                        help="the study on the generated set (written to data/toy_market1501 "
                        "if missing) at the toy base's small scale, on the CPU in minutes")
    args, overrides = parser.parse_known_args(argv)
    # --configs takes every following word: those from the first one that is not a YAML file
    # on are KEY VALUE overrides (keys never end in .yml).
    first = next((i for i, word in enumerate(args.configs)
                  if not word.endswith((".yml", ".yaml"))), len(args.configs))
    args.configs, overrides = args.configs[:first], args.configs[first:] + overrides
    bad = [word for word in overrides if word.startswith("--")]
    if bad:
        parser.error("unknown option %s" % bad[0])
    if args.gpus is not None:  # --gpus as train.py reads it, passed on as the GPUS override
        gpus = config_from_args(argparse.Namespace(config=None, gpus=args.gpus, opts=[])).GPUS
        overrides += ["GPUS", str(gpus)]
    base = args.base or os.path.relpath(os.path.join(
        ROOT, "configs", "ablation_study_toy.yml" if args.toy else "market1501.yml"))
    out = args.out or os.path.join("runs", "ablations_toy" if args.toy else "ablations")
    from reid_baseline.ablation.study import run_study
    report = run_study(base, args.configs, args.repeats, out, overrides, toy=args.toy)
    print("report: %s" % os.path.join(out, "report.md"))
    if report["failed"]:
        sys.exit("error: %d run(s) failed (listed in the report): %s"
                 % (len(report["failed"]), "; ".join(report["failed"])))


if __name__ == "__main__":
    run(main)
