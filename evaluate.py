"""Evaluate trained parameters on query/gallery: python evaluate.py --config CFG --params FILE"""
import os

from reid_baseline.cli import build_parser, config_from_args, run


def main():
    parser = build_parser(__doc__)
    parser.add_argument("--params", required=True, help="parameters saved by train.py")
    parser.add_argument("--output", default=None,
                        help="results JSON (default beside --params: results.json, or "
                             "results_rerank.json with TEST.RERANK True); cmc.png and the rank "
                             "lists go to its folder")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing output files this package did not write")
    parser.add_argument("--visualize", type=int, default=0, metavar="N",
                        help="also write rank-list PNGs of N queries (the worst by AP and a "
                             "random sample) into ranklists/ beside the results")
    args = parser.parse_args()
    if args.visualize < 0:
        parser.error("--visualize must be >= 0, got %d" % args.visualize)
    cfg = config_from_args(args)
    from reid_baseline.evaluation.evaluator import (
        check_evaluation_outputs,
        evaluate_params,
        format_results,
        results_path,
        save_results,
        write_rank_pictures,
    )
    output = args.output or results_path(cfg, os.path.dirname(os.path.abspath(args.params)))
    folder = os.path.dirname(os.path.abspath(output))
    # found before the evaluation, not after: a folder or a user's file in an output's place
    check_evaluation_outputs(cfg, output, args.visualize, args.overwrite)
    results, ranking = evaluate_params(cfg, args.params, with_ranking=True)
    print(format_results(results))
    save_results(results, output, args.overwrite)  # the numbers first: a failing picture never costs them
    pictures = write_rank_pictures(cfg, folder, ranking, args.visualize, overwrite=args.overwrite)
    print("wrote %s and %s" % (output, pictures[0]))
    if len(pictures) > 1:
        print("wrote %d rank lists in %s" % (len(pictures) - 1, os.path.dirname(pictures[1])))


if __name__ == "__main__":
    run(main)
