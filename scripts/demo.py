#!/usr/bin/env python
"""The CPU demo: generate the toy Market-1501 set, train the recipe's network on it with
configs/demo_toy.yml, evaluate the final model and print Rank-1/mAP.

Example: OMP_NUM_THREADS=2 python scripts/demo.py [--ablation FILE] [KEY VALUE ...]
"""
import os
import shutil

from reid_baseline.cli import build_parser, config_from_args, run
from reid_baseline.data.datasets.market1501 import load_market1501
from reid_baseline.data.toy.market1501 import make_toy_market1501
from reid_baseline.engine.loop import train
from reid_baseline.errors import RunDirError
from reid_baseline.evaluation.evaluator import (
    evaluate_params,
    format_results,
    record_ids,
    results_path,
    save_results,
    write_rank_pictures,
)
from reid_baseline.evaluation.protocol import chance_rank1

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Written into OUTPUT_DIR before training: the only proof that a folder is an earlier demo run,
# and so the only folder the demo may delete.
MARKER = ".reid_demo_run"


def claim_output_dir(path):
    """Make `path` a folder holding only the demo's marker: create it, or delete and recreate
    it if it holds an earlier demo run (the marker). Any other non-empty folder raises
    RunDirError and is left untouched: the demo never deletes what it did not write."""
    if os.path.isdir(path) and os.listdir(path):
        if not os.path.isfile(os.path.join(path, MARKER)):
            raise RunDirError("OUTPUT_DIR %s is not empty and is not an earlier demo run: pick "
                              "another OUTPUT_DIR or remove it by hand" % path)
        print("replacing the previous demo run in %s" % path)
        shutil.rmtree(path)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, MARKER), "w") as f:
        f.write("written by scripts/demo.py: the next demo run may delete this folder\n")


def main(argv=None):
    """Generate the toy set if needed, then train, evaluate and report (see the module doc)."""
    parser = build_parser(__doc__.splitlines()[0],
                          default_config=os.path.join(ROOT, "configs", "demo_toy.yml"))
    cfg = config_from_args(parser.parse_args(argv))
    claim_output_dir(cfg.OUTPUT_DIR)  # first, so a refused folder costs no work
    if not os.path.isdir(cfg.DATASETS.ROOT):
        summary = make_toy_market1501(cfg.DATASETS.ROOT)
        print("generated the toy set: %d train / %d query / %d gallery images in %s"
              % (summary["train_images"], summary["query_images"], summary["gallery_images"],
                 summary["root"]))
    else:
        # The README's numbers are those of the default set: another one gives others.
        print("using the existing set in %s (remove it to generate the default toy set)"
              % cfg.DATASETS.ROOT)
    history = train(cfg)
    # The pictures the README shows: training curves (train wrote them), CMC curve and rank
    # lists of 4 queries.
    curves = os.path.join(cfg.OUTPUT_DIR, "curves.png")
    results, ranking = evaluate_params(cfg, os.path.join(cfg.OUTPUT_DIR, "model_final.params"),
                                       with_ranking=True)
    output = results_path(cfg, cfg.OUTPUT_DIR)
    save_results(results, output)
    pictures = write_rank_pictures(cfg, cfg.OUTPUT_DIR, ranking, visualize=4)
    print("trained %d epochs: loss %.3f -> %.3f" % (len(history), history[0]["loss"], history[-1]["loss"]))
    print(format_results(results))
    print("pictures: %s, %s and %d rank lists in %s"
          % (curves, pictures[0], len(pictures) - 1, os.path.dirname(pictures[-1])))
    dataset = load_market1501(cfg.DATASETS.ROOT, verify_counts=False)
    (q_pids, q_camids), (g_pids, g_camids) = record_ids(dataset.query), record_ids(dataset.gallery)
    print("a random ranking would score Rank-1 %.1f%%; results in %s"
          % (100 * chance_rank1(q_pids, g_pids, q_camids, g_camids),
             output))


if __name__ == "__main__":
    run(main)
