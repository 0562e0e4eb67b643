"""Evaluate trained parameters on query/gallery: python evaluate.py --config CFG --params FILE"""
import json
import os

from reid_baseline.cli import build_parser, config_from_args, run


def main():
    parser = build_parser(__doc__)
    parser.add_argument("--params", required=True, help="parameters saved by train.py")
    parser.add_argument("--output", default=None,
                        help="results JSON (default: results.json beside --params)")
    args = parser.parse_args()
    cfg = config_from_args(args)
    from reid_baseline.retrieval import evaluate_params, format_results
    results = evaluate_params(cfg, args.params)
    print(format_results(results))
    output = args.output or os.path.join(os.path.dirname(os.path.abspath(args.params)), "results.json")
    with open(output + ".tmp", "w") as f:
        json.dump(results, f, indent=1)
    os.replace(output + ".tmp", output)
    print("wrote %s" % output)


if __name__ == "__main__":
    run(main)
