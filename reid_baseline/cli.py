"""Argument handling shared by train.py and evaluate.py."""
import argparse


def build_parser(description):
    """A parser with --config, --gpus and trailing KEY VALUE config overrides."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default=None, help="YAML experiment file (default: the recipe)")
    parser.add_argument("--gpus", default=None,
                        help="comma-separated GPU ids, e.g. 0,1 (overrides GPUS; empty: CPU)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                        help="config overrides, e.g. SOLVER.MAX_EPOCHS 40")
    return parser


def config_from_args(args):
    """The frozen config: defaults, --config file, KEY VALUE overrides, then --gpus."""
    from .config import load_config  # imported late so --help stays fast
    overrides = list(args.opts)
    if args.gpus is not None:
        ids = [g for g in args.gpus.split(",") if g.strip()]
        overrides += ["GPUS", "[%s]" % ",".join(ids)]
    return load_config(args.config, overrides)
