"""Argument handling and error reporting shared by the command lines."""
import argparse
import sys


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


def run(main):
    """Run a command line's main(): a user error (bad config, data, weights, devices, run
    folder, diverged training) prints one line and exits 2; Ctrl-C exits 130."""
    from .checkpoint import CheckpointError
    from .config import ConfigError
    from .data.market1501 import DatasetError
    from .devices import DeviceError
    from .engine import RunDirError, TrainingDiverged
    from .model import ModelError

    try:
        main()
    except (ConfigError, DatasetError, ModelError, CheckpointError, DeviceError, RunDirError,
            TrainingDiverged) as exc:
        print("error: %s" % exc, file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
