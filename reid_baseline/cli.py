"""Argument handling and error reporting shared by the command lines."""
import argparse
import sys


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose leftover words are the KEY VALUE overrides (args.opts), so the
    options may come before, between or after them."""

    def parse_args(self, args=None, namespace=None):
        """Parse the options; every other word, in order, goes to args.opts."""
        args, rest = self.parse_known_args(args, namespace)
        for word in rest:
            # Override keys never start with "-" and values like -1 are numbers, so a leftover
            # "--word" is a mistyped option, which must not reach the config as a key.
            if word.startswith("--"):
                self.error("unknown option %s" % word)
        args.opts = rest
        return args


def build_parser(description, default_config=None):
    """A parser with --config (default: `default_config`, else the recipe), --ablation, --gpus
    and KEY VALUE config overrides, which may come before, between or after the options
    (parse_args puts them in args.opts)."""
    parser = _Parser(description=description, usage="%(prog)s [options] [KEY VALUE ...]",
                     epilog="KEY VALUE ...: config overrides, e.g. SOLVER.MAX_EPOCHS 40")
    parser.add_argument("--config", default=default_config,
                        help="YAML experiment file (default: %s)"
                        % (default_config or "the recipe"))
    parser.add_argument("--ablation", default=None, metavar="FILE",
                        help="apply only the knobs this ablation file sets (e.g. "
                        "configs/ablations/no_pad_crop.yml) to --config; OUTPUT_DIR becomes "
                        "<OUTPUT_DIR>_ablations/<file name> unless overridden")
    parser.add_argument("--gpus", default=None,
                        help="comma-separated GPU ids, e.g. 0,1; \"\" for the CPU; auto (the "
                        "default GPUS): GPU 0 if this MXNet has CUDA and sees a GPU, else the "
                        "CPU (overrides GPUS)")
    return parser


def config_from_args(args):
    """The frozen config: defaults, --config file, --ablation knobs, KEY VALUE overrides, then
    --gpus."""
    from .config import load_config  # imported late so --help stays fast
    from .errors import ConfigError
    overrides = list(args.opts)
    if args.gpus is not None and args.gpus.strip() == "auto":
        overrides += ["GPUS", "auto"]
    elif args.gpus is not None:
        ids = [g.strip() for g in args.gpus.split(",") if g.strip()]
        if not all(g.isdigit() for g in ids):
            raise ConfigError('--gpus expects auto, "" (the CPU) or comma-separated GPU ids, '
                              'e.g. 0,1; got %r' % args.gpus)
        overrides += ["GPUS", "[%s]" % ",".join(ids)]  # "" -> [], the CPU
    return load_config(args.config, overrides, ablation=getattr(args, "ablation", None))


def run(main):
    """Run a command line's main(): a user error (bad config, data, weights, devices, run
    folder, diverged training) or a failed file operation (OSError) prints one line and exits
    2; Ctrl-C exits 130. File names print as their bytes (surrogateescape), never an error."""
    from .errors import ReIDError

    for stream in (sys.stdout, sys.stderr):  # file names that are not UTF-8 print as their bytes
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="surrogateescape")
    try:
        main()
    except ReIDError as exc:
        print("error: %s" % exc, file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except OSError as exc:
        # Last resort (permission denied, disk full, a missing folder): whatever file operation
        # failed, the user gets one line naming the path, never a traceback.
        where = [str(f) for f in (exc.filename, exc.filename2) if f is not None]
        print("error: %s" % ": ".join([exc.strerror or str(exc)] + where), file=sys.stderr)
        sys.exit(2)
