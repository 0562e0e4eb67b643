#!/usr/bin/env python
"""The CPU demo: generate the toy Market-1501 set, train the recipe's network on it with
configs/demo_toy.yml, evaluate the final model and print Rank-1/mAP.

Example: OMP_NUM_THREADS=2 python scripts/demo.py [KEY VALUE ...]
"""
import argparse
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from reid_baseline.config import load_config  # noqa: E402
from reid_baseline.data.market1501 import load_market1501  # noqa: E402
from reid_baseline.data.toy_market1501 import make_toy_market1501  # noqa: E402
from reid_baseline.engine import train  # noqa: E402
from reid_baseline.retrieval import evaluate_params, format_results  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=os.path.join(ROOT, "configs", "demo_toy.yml"))
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.opts)
    if not os.path.isdir(cfg.DATASETS.ROOT):
        summary = make_toy_market1501(cfg.DATASETS.ROOT)
        print("generated the toy set: %d train / %d query / %d gallery images in %s"
              % (summary["train_images"], summary["query_images"], summary["gallery_images"],
                 summary["root"]))
    history = train(cfg)
    results = evaluate_params(cfg, os.path.join(cfg.OUTPUT_DIR, "model_final.params"))
    with open(os.path.join(cfg.OUTPUT_DIR, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    print("trained %d epochs: loss %.3f -> %.3f" % (len(history), history[0]["loss"], history[-1]["loss"]))
    print(format_results(results))
    print("a random ranking would score Rank-1 %.1f%%; results in %s"
          % (chance_rank1(load_market1501(cfg.DATASETS.ROOT, verify_counts=False)),
             os.path.join(cfg.OUTPUT_DIR, "results.json")))


def chance_rank1(dataset):
    """Expected Rank-1 (percent) of a random gallery order under the Market-1501 protocol."""
    q_pid, q_cam = (np.array([[r.pid, r.camid] for r in dataset.query]).T)[:, :, None]
    g_pid, g_cam = np.array([[r.pid, r.camid] for r in dataset.gallery]).T
    same_pid = q_pid == g_pid[None]
    valid = ~(same_pid & (q_cam == g_cam[None]))
    matches = (same_pid & valid).sum(axis=1)
    has_match = matches > 0
    return 100 * float(np.mean(matches[has_match] / valid.sum(axis=1)[has_match]))


if __name__ == "__main__":
    main()
