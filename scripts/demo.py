#!/usr/bin/env python
"""The CPU demo: generate the toy Market-1501 set, train the recipe's network on it with
configs/demo_toy.yml, evaluate the final model and print Rank-1/mAP.

Example: OMP_NUM_THREADS=2 python scripts/demo.py [KEY VALUE ...]
"""
import argparse
import json
import os
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from reid_baseline.config import load_config  # noqa: E402
from reid_baseline.data.market1501 import load_market1501  # noqa: E402
from reid_baseline.data.toy_market1501 import make_toy_market1501  # noqa: E402
from reid_baseline.engine import train  # noqa: E402
from reid_baseline.evaluation import chance_rank1  # noqa: E402
from reid_baseline.retrieval import evaluate_params, format_results, record_ids  # noqa: E402


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
    if os.path.isdir(cfg.OUTPUT_DIR):  # the demo starts over; train.py would refuse
        print("replacing the previous demo run in %s" % cfg.OUTPUT_DIR)
        shutil.rmtree(cfg.OUTPUT_DIR)
    history = train(cfg)
    results = evaluate_params(cfg, os.path.join(cfg.OUTPUT_DIR, "model_final.params"))
    with open(os.path.join(cfg.OUTPUT_DIR, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    print("trained %d epochs: loss %.3f -> %.3f" % (len(history), history[0]["loss"], history[-1]["loss"]))
    print(format_results(results))
    dataset = load_market1501(cfg.DATASETS.ROOT, verify_counts=False)
    (q_pids, q_camids), (g_pids, g_camids) = record_ids(dataset.query), record_ids(dataset.gallery)
    print("a random ranking would score Rank-1 %.1f%%; results in %s"
          % (100 * chance_rank1(q_pids, g_pids, q_camids, g_camids),
             os.path.join(cfg.OUTPUT_DIR, "results.json")))


if __name__ == "__main__":
    main()
