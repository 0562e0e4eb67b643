"""Evaluate trained parameters on query/gallery: python evaluate.py --config CFG --params FILE"""
import os

from reid_baseline.cli import build_parser, config_from_args, run


def main():
    parser = build_parser(__doc__)
    parser.add_argument("--params", required=True, help="parameters saved by train.py")
    parser.add_argument("--output", default=None,
                        help="results JSON (default beside --params: results.json, or "
                             "results_rerank.json with TEST.RERANK True)")
    args = parser.parse_args()
    cfg = config_from_args(args)
    from reid_baseline.retrieval import evaluate_params, format_results, results_path, save_results
    output = args.output or results_path(cfg, os.path.dirname(os.path.abspath(args.params)))
    folder = os.path.dirname(os.path.abspath(output))
    if args.output and not os.path.isdir(folder):  # found before the evaluation, not after
        raise FileNotFoundError("--output: folder %s does not exist" % folder)
    results = evaluate_params(cfg, args.params)
    print(format_results(results))
    save_results(results, output)
    print("wrote %s" % output)


if __name__ == "__main__":
    run(main)
