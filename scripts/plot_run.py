#!/usr/bin/env python
"""Plot a training run: RUN_DIR/curves.png from RUN_DIR/metrics.jsonl (loss, training
accuracy and learning rate per epoch; Rank-1/mAP/mINP at the evaluated epochs).

Example: python scripts/plot_run.py runs/demo_toy [--out curves.png]
"""
import argparse
import os

from reid_baseline.cli import run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a training run's OUTPUT_DIR")
    parser.add_argument("--out", default=None, help="PNG to write (default RUN_DIR/curves.png)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing output file the package did not write")
    args = parser.parse_args()
    from reid_baseline.engine.run_folder import write_run_curves
    from reid_baseline.fileio import check_output_file
    check_output_file(args.out or os.path.join(args.run_dir, "curves.png"), args.overwrite,
                      "--out" if args.out else "curves.png")
    print("wrote %s" % write_run_curves(args.run_dir, path=args.out, overwrite=args.overwrite))


if __name__ == "__main__":
    run(main)
