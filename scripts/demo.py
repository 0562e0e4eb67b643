#!/usr/bin/env python
"""The CPU demo: generate the toy Market-1501 set, train the recipe's network on it with
configs/demo_toy.yml, evaluate the final model and print Rank-1/mAP.

Example: OMP_NUM_THREADS=2 python scripts/demo.py [--ablation FILE] [KEY VALUE ...]
"""
import os
import re
import shutil

from reid_baseline.cli import build_parser, config_from_args, run
from reid_baseline.data.datasets.market1501 import load_market1501
from reid_baseline.data.toy.market1501 import make_toy_market1501
from reid_baseline.engine.checkpoint import STATE_FILE, list_checkpoints, verify_checkpoint
from reid_baseline.engine.loop import train
from reid_baseline.engine.run_folder import RUN_OUTPUTS
from reid_baseline.errors import CheckpointError, RunDirError
from reid_baseline.evaluation.evaluator import (
    evaluate_params,
    format_results,
    record_ids,
    results_path,
    save_results,
    write_rank_pictures,
)
from reid_baseline.evaluation.protocol import chance_rank1
from reid_baseline.evaluation.provenance import output_suffix
from reid_baseline.fileio import (
    OUTPUTS_MANIFEST,
    is_ours,
    remove_output,
    write_output,
    written_outputs,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The evaluation outputs of a run folder (results*.json, cmc*.png, ranklists*/): the package's
# own ones describe the model a new demo run replaces, so they go with it.
EVALUATION_FILE = re.compile(r"^(results(_.+)?\.json|cmc(_.+)?\.png)$")
RANK_LISTS = re.compile(r"^ranklists(_.+)?$")
RANK_LIST_FILE = re.compile(r"^(worst|random)_.*_query.*\.png$")  # write_rank_pictures' names
_ADVICE = "move it away or pass --overwrite"
# Written (through the output rule) into every folder a demo run starts in: only a folder with
# the package's own marker is an earlier demo run, so a run trained by train.py is never touched.
DEMO_MARKER = ".reid_demo_run"
_RUN_FILES = ("config.yaml", "metrics.jsonl", "model_final.params", "checkpoints")


def _only_package_files(folder, listed=()):
    """The first file or folder under `folder` that is neither in `listed` nor the package's own
    unedited file (fileio.is_ours; a subfolder counts when all its files do), or None."""
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name in listed or name == OUTPUTS_MANIFEST or (os.path.isfile(path) and is_ours(path)):
            continue
        if not (os.path.isdir(path) and _only_package_files(path) is None):
            return path
    return None


def _foreign_checkpoint_file(run_dir):
    """The first entry of run_dir/checkpoints that the package did not write, or None.

    Checkpoints are not in the manifest: a checkpoint folder counts as the package's when it
    is intact (verify_checkpoint: model.params and optimizer.nd match the SHA-256 digests of
    its state.json) and every other file in it is recorded as the package's (an evaluation of
    that checkpoint); beside them only the `last` pointer may sit. Anything else (a user's
    file, a damaged or renamed checkpoint) keeps the folder."""
    root = os.path.join(run_dir, "checkpoints")
    names = set(list_checkpoints(run_dir))
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if name == "last" and os.path.isfile(path):
            continue
        if name not in names or not os.path.isdir(path):
            return path
        try:
            state = verify_checkpoint(path)
        except CheckpointError:
            return path
        foreign = _only_package_files(path, listed=set(state["files"]) | {STATE_FILE})
        if foreign:
            return foreign
    return None


def _mark(path):
    write_output(os.path.join(path, DEMO_MARKER), "a demo run's folder (scripts/demo.py)\n")


def claim_output_dir(cfg, overwrite=False):
    """Prepare OUTPUT_DIR for a new demo run (create it if needed, and mark it DEMO_MARKER).
    A folder holding a run without the package's own marker is a RunDirError (a run train.py
    trained there is never removed). In an earlier demo run's folder, remove only what the
    package wrote there and nobody changed since (the folder's manifest, fileio.is_ours):
    the run's files, evaluation results, CMC plots and rank lists, and checkpoints/ when every
    file in it is the package's (_foreign_checkpoint_file). A user's file under a name the demo
    writes is a RunDirError before anything is removed, unless `overwrite`; every other file
    of a user's stays. train.log is kept: the new run's lines follow the earlier ones."""
    path = cfg.OUTPUT_DIR
    if not os.path.exists(path):
        os.makedirs(path)
        _mark(path)
        return
    if not os.path.isdir(path):
        raise RunDirError("OUTPUT_DIR %s is a file; expected a folder" % path)
    held = [n for n in _RUN_FILES if os.path.lexists(os.path.join(path, n))]
    if held and not is_ours(os.path.join(path, DEMO_MARKER)):
        # Never with --overwrite either: that flag is for single files, not another's run.
        raise RunDirError("OUTPUT_DIR %s holds a run that the demo did not start (%s, and no "
                          "%s marker): the demo replaces only its own runs; give it another "
                          "OUTPUT_DIR" % (path, ", ".join(held), DEMO_MARKER))
    own = set(RUN_OUTPUTS) | {os.path.basename(results_path(cfg, path))}
    own_lists = "ranklists" + output_suffix(cfg)
    remove = []
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if os.path.isfile(full) and (name in own or EVALUATION_FILE.match(name)):
            if is_ours(full) or (name in own and overwrite):
                remove.append(full)
            elif name in own:
                raise RunDirError("OUTPUT_DIR %s: %s is not a file the package wrote (or was "
                                  "changed since) and a demo run writes that name; %s"
                                  % (path, full, _ADVICE))
        elif os.path.isdir(full) and RANK_LISTS.match(name):
            for picture in sorted(os.listdir(full)):
                png = os.path.join(full, picture)
                # the demo's own rank lists replace every earlier worst_*/random_* picture
                mine = name == own_lists and RANK_LIST_FILE.match(picture)
                if os.path.isfile(png) and (is_ours(png) or (mine and overwrite)):
                    remove.append(png)
                elif mine:
                    raise RunDirError("OUTPUT_DIR %s: %s is not a file the package wrote (or "
                                      "was changed since) and a demo run replaces it; %s"
                                      % (path, png, _ADVICE))
    checkpoints = os.path.join(path, "checkpoints")
    if os.path.lexists(checkpoints):
        foreign = (checkpoints if not os.path.isdir(checkpoints)
                   else _foreign_checkpoint_file(path))
        if foreign and not overwrite:
            raise RunDirError("OUTPUT_DIR %s: %s is not a checkpoint file the package wrote, so "
                              "the earlier run's checkpoints cannot be replaced; %s"
                              % (path, foreign, _ADVICE))
    if remove or os.path.lexists(checkpoints):
        print("replacing the previous demo run in %s (the package's own files only)" % path)
    for full in remove:
        if os.path.basename(full) in written_outputs(os.path.dirname(full)):
            remove_output(full)
        else:
            os.remove(full)  # a user's file under a demo name, with --overwrite
    if os.path.isdir(checkpoints):
        shutil.rmtree(checkpoints)
    elif os.path.lexists(checkpoints):
        os.remove(checkpoints)
    _mark(path)


def main(argv=None):
    """Generate the toy set if needed, then train, evaluate and report (see the module doc)."""
    parser = build_parser(__doc__.splitlines()[0],
                          default_config=os.path.join(ROOT, "configs", "demo_toy.yml"))
    parser.add_argument("--overwrite", action="store_true",
                        help="replace files in OUTPUT_DIR under the names a demo run writes "
                             "even when the package did not write them")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    claim_output_dir(cfg, args.overwrite)  # first, so a refused folder costs no work
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
