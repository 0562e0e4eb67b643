#!/usr/bin/env python
"""Generate the synthetic toy Market-1501 set (exact Market layout) for CPU demos and tests.

Example: python scripts/make_toy_market1501.py --out data/toy
Train on it with the config key DATASETS.VERIFY_COUNTS False (it is not the official set).
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from reid_baseline.data.datasets.base import DatasetError  # noqa: E402
from reid_baseline.data.toy_market1501 import make_toy_market1501  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder (gets Market-1501-v15.09.15/)")
    parser.add_argument("--num-train-ids", type=int, default=32)
    parser.add_argument("--num-test-ids", type=int, default=32)
    parser.add_argument("--images-per-id-per-camera", type=int, default=3)
    parser.add_argument("--num-cameras", type=int, default=6)
    parser.add_argument("--num-distractors", type=int, default=48)
    parser.add_argument("--num-junk", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing toy set")
    args = parser.parse_args(argv)
    start = time.time()
    try:
        summary = make_toy_market1501(
            args.out, num_train_ids=args.num_train_ids, num_test_ids=args.num_test_ids,
            images_per_id_per_camera=args.images_per_id_per_camera,
            num_cameras=args.num_cameras, num_distractors=args.num_distractors,
            num_junk=args.num_junk, seed=args.seed, overwrite=args.overwrite)
    except (DatasetError, ValueError) as err:
        print("error: %s" % err, file=sys.stderr)
        return 1
    for key in sorted(summary):
        print("%-15s %s" % (key, summary[key]))
    print("generated in %.1f s" % (time.time() - start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
