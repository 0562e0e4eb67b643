"""Evaluate a trained run or parameter file on query/gallery: python evaluate.py --run DIR, or --config CFG --params FILE"""
import os
import sys

from reid_baseline.cli import build_parser, config_from_args, run


def main():
    parser = build_parser(__doc__)
    parser.add_argument("--run", default=None, metavar="DIR",
                        help="a training run folder: its config.yaml (unless --config) and "
                             "model_final.params (unless --params, e.g. one of its "
                             "checkpoints/epoch_XXXX/model.params)")
    parser.add_argument("--params", default=None,
                        help="parameters saved by train.py (required without --run)")
    parser.add_argument("--force", action="store_true",
                        help="evaluate even when the config changes keys that define the "
                             "features (input size, pixel mean/std, MODEL.*, TEST.FLIP_FEATURES"
                             ") from the run's config.yaml; a warning, recorded in the results")
    parser.add_argument("--output", default=None,
                        help="results JSON (default beside --params: results.json for the "
                             "run's own test set, results_<set>.json for another; "
                             "_rerank added with TEST.RERANK True); cmc.png and the rank "
                             "lists go to its folder with the same suffix")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing output files this package did not write")
    parser.add_argument("--visualize", type=int, default=0, metavar="N",
                        help="also write rank-list PNGs of N queries (the worst by AP and a "
                             "random sample) into ranklists/ beside the results")
    args = parser.parse_args()
    if args.visualize < 0:
        parser.error("--visualize must be >= 0, got %d" % args.visualize)
    from reid_baseline.errors import RunDirError
    if args.run is not None:
        if not os.path.isdir(args.run):
            raise RunDirError("--run %s: no such run folder" % args.run)
        if args.config is None and not os.path.isfile(os.path.join(args.run, "config.yaml")):
            raise RunDirError("--run %s has no config.yaml: not a training run folder"
                              % args.run)
        args.config = args.config or os.path.join(args.run, "config.yaml")
        if args.params is not None and not os.path.isfile(args.params):
            raise RunDirError("--params %s: no such file" % args.params)
        args.params = args.params or os.path.join(args.run, "model_final.params")
        if not os.path.isfile(args.params):
            raise RunDirError("--run %s has no model_final.params (training has not "
                              "finished); evaluate a checkpoint with --params %s"
                              % (args.run, os.path.join(args.run, "checkpoints", "epoch_XXXX",
                                                        "model.params")))
    elif args.params is None:
        parser.error("--params FILE or --run DIR is required")
    cfg = config_from_args(args)
    from reid_baseline.evaluation.evaluator import (
        check_evaluation_outputs,
        evaluate_params,
        format_results,
        save_results,
        write_rank_pictures,
    )
    from reid_baseline.evaluation.provenance import check_run_config, other_set_tag, output_suffix
    # the run's config.yaml beside the params: a config that changes the features is refused
    match = check_run_config(cfg, args.params, force=args.force)
    if match.warning:
        print("warning: " + match.warning, file=sys.stderr)
    tag = other_set_tag(cfg, match.run_values)
    if match.changes:  # forced: the numbers are not the run's, so never under the run's names
        tag = "forced" + ("_" + tag if tag else "")
    suffix = output_suffix(cfg, tag)
    own = os.path.join(os.path.dirname(os.path.abspath(args.params)), "results.json")
    output = args.output or os.path.join(os.path.dirname(own), "results%s.json" % suffix)
    if tag and os.path.abspath(output) == own:
        from reid_baseline.errors import OutputError
        raise OutputError("--output %s: the run's own results file; these results are %s "
                          "(results%s.json), so they never take its name"
                          % (output, "another model's" if match.changes else "another set's",
                             suffix))
    folder = os.path.dirname(os.path.abspath(output))
    # found before the evaluation, not after: a folder or a user's file in an output's place
    check_evaluation_outputs(cfg, output, args.visualize, args.overwrite, suffix)
    results, ranking = evaluate_params(cfg, args.params, with_ranking=True)
    if match.warning:
        results["warning"] = match.warning
        results["forced_config_changes"] = {k: {"run": a, "given": b}
                                            for k, a, b in match.changes}
    print(format_results(results))
    save_results(results, output, args.overwrite)  # the numbers first: a failing picture never costs them
    pictures = write_rank_pictures(cfg, folder, ranking, args.visualize,
                                   overwrite=args.overwrite, suffix=suffix)
    print("wrote %s and %s" % (output, pictures[0]))
    if len(pictures) > 1:
        print("wrote %d rank lists in %s" % (len(pictures) - 1, os.path.dirname(pictures[1])))


if __name__ == "__main__":
    run(main)
