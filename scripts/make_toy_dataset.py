#!/usr/bin/env python
"""Generate the synthetic toy set in the layout of a registered data set, for CPU runs and tests.

Examples:
  python scripts/make_toy_dataset.py msmt17 --out data/toy_msmt17
  python train.py --config configs/demo_toy.yml DATASETS.NAME msmt17 DATASETS.ROOT data/toy_msmt17 OUTPUT_DIR runs/toy_msmt17
The images are those of the toy Market-1501 set (reid_baseline/data/toy/market1501.py), named and
laid out as the data set's own files by the layout's writer in reid_baseline/data/toy/; train on
it with DATASETS.VERIFY_COUNTS False.
"""
import argparse
import time

from reid_baseline.cli import run
from reid_baseline.data.datasets import load_dataset
from reid_baseline.data.toy import NAMES, make_toy_dataset


def main(argv=None):
    """Write the toy set and print what was loaded back from it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("name", choices=NAMES, help="layout to write")
    parser.add_argument("--out", required=True, help="output folder (DATASETS.ROOT for it)")
    parser.add_argument("--num-train-ids", type=int, default=32)
    parser.add_argument("--num-test-ids", type=int, default=32)
    parser.add_argument("--images-per-id-per-camera", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing toy set")
    args = parser.parse_args(argv)
    start = time.time()
    try:
        make_toy_dataset(args.name, args.out, seed=args.seed, overwrite=args.overwrite,
                         num_train_ids=args.num_train_ids, num_test_ids=args.num_test_ids,
                         images_per_id_per_camera=args.images_per_id_per_camera)
    except ValueError as exc:  # sizes out of range
        parser.error(str(exc))
    print(load_dataset(args.name, args.out, verify_counts=False).summary())
    print("generated in %.1f s" % (time.time() - start))


if __name__ == "__main__":
    run(main)
