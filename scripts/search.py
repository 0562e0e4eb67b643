#!/usr/bin/env python
"""Search a folder of images with a trained model.

  index: embed every image under --images into an index folder (memory-mapped features, paths,
         config, params digest); an interrupted index resumes when run again:
    python scripts/search.py index --run RUN_DIR --images DIR --out gallery.index
           [--config CFG --params FILE] [--dtype float16] [--approximate [--target-recall 0.995]]
           [--overwrite]
  query: rank the gallery for each IMAGE with the config and parameters it was built with:
    python scripts/search.py query --gallery gallery.index IMAGE... [--topk 10] [--rerank]
           [--approximate [--nprobe N] [--shortlist N]] [--html results.html] [--png results.png]
           [--overwrite]
"""
import os
import sys

from reid_baseline.cli import build_parser, config_from_args, run


def _report_skipped(skipped, what):
    for path, reason in skipped:
        print("skipped %s" % reason if path in reason else "skipped %s: %s" % (path, reason))
    if skipped:
        print("%d unreadable %s skipped" % (len(skipped), what))


def _at_least_one(text):
    """--nlist, --nprobe and --shortlist: an integer >= 1, in both commands."""
    import argparse
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError("expected an integer >= 1, got %r" % text)
    return value


def _recall(text):
    """--target-recall: a number in (0, 1]."""
    import argparse
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError("expected a number in (0, 1], got %r" % text)
    return value


def _parse():
    parser = build_parser(__doc__.splitlines()[0])
    parser.add_argument("command", choices=("index", "query"))
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="query: query image files")
    parser.add_argument("--run", metavar="RUN_DIR", help="index: a training run folder (its "
                        "config.yaml and model_final.params)")
    parser.add_argument("--params", help="index: parameters saved by train.py; query: default "
                        "the gallery's own (another file must have the same bytes)")
    parser.add_argument("--images", dest="images_dir", metavar="DIR",
                        help="index: folder tree of images (.jpg, .jpeg, .png, .bmp)")
    parser.add_argument("--out", help="index: index folder to write")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16"),
                        help="index: stored feature precision (float16 halves the size)")
    parser.add_argument("--gallery", help="query: index folder written by index")
    parser.add_argument("--topk", type=int, default=10, help="query: results per image")
    parser.add_argument("--rerank", action="store_true",
                        help="query: k-reciprocal re-ranking (TEST.RERANK_* knobs)")
    parser.add_argument("--approximate", action="store_true", help="index: also build the "
                        "approximate (faiss) index and calibrate it; query: search with it")
    parser.add_argument("--nlist", type=_at_least_one, help="index --approximate: IVF cells "
                        "(>= 1; default about 4 x the square root of the images)")
    parser.add_argument("--nprobe", type=_at_least_one, help="--approximate: cells scanned "
                        "per query (>= 1; default the calibrated one)")
    parser.add_argument("--shortlist", type=_at_least_one, help="--approximate: candidates "
                        "re-ranked exactly per query (>= 1; default the calibrated one)")
    parser.add_argument("--target-recall", type=_recall, help="index --approximate: recall@10 "
                        "against exact search the calibration aims at (default 0.995)")
    parser.add_argument("--force", action="store_true", help="index: use a config that "
                        "changes the features of the run the params belong to (warned)")
    parser.add_argument("--html", help="query: also write the results as this HTML page")
    parser.add_argument("--png", help="query: also write the results as this PNG")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing output that this package did not write")
    args = parser.parse_args()
    # The positional IMAGEs and KEY VALUE overrides share the free words: override keys are
    # upper-case dotted names (TEST.BATCH_SIZE) or GPUS, the rest are images.
    words, args.opts = args.opts, []
    it = iter(args.images + words)
    args.images = []
    for word in it:
        if word.isupper() and (word == "GPUS" or "." in word) and not os.path.exists(word):
            args.opts += [word, next(it, "")]
        else:
            args.images.append(word)
    return parser, args


# Options of one command only, with their defaults: given to the other, they are an error
# rather than silently ignored.
INDEX_ONLY = {"--run": ("run", None), "--images": ("images_dir", None), "--out": ("out", None),
              "--dtype": ("dtype", "float32"), "--nlist": ("nlist", None),
              "--target-recall": ("target_recall", None)}
QUERY_ONLY = {"--gallery": ("gallery", None), "--topk": ("topk", 10),
              "--rerank": ("rerank", False), "--html": ("html", None), "--png": ("png", None)}


def _refuse_options_of_the_other_command(parser, args, options, command):
    for flag, (dest, default) in options.items():
        if getattr(args, dest) != default:
            parser.error("%s is not an option of %s" % (flag, command))


def index(parser, args):
    """search.py index: build (or resume) an index folder."""
    from reid_baseline import ReIDModel
    _refuse_options_of_the_other_command(parser, args, QUERY_ONLY, "index")
    if args.images:
        parser.error("index takes no IMAGE arguments (got %s); the folder is --images"
                     % args.images[0])
    if not args.images_dir or not args.out:
        parser.error("index needs --images and --out")
    from reid_baseline.inference.store import check_store_output
    check_store_output(args.out, args.overwrite)  # before the network is loaded
    if args.run:
        model = ReIDModel.load(args.run, config=args.config, params=args.params,
                               overrides=_overrides(args), force=args.force)
    elif args.config and args.params:
        from reid_baseline.evaluation.provenance import check_run_config
        cfg = config_from_args(args)
        # the run's config.yaml beside the params: a config that changes the features is refused
        warning = check_run_config(cfg, args.params, force=args.force).warning
        if warning:
            print("warning: " + warning, file=sys.stderr)
        model = ReIDModel(cfg, args.params)
    else:
        parser.error("index needs --run, or --config and --params")
    manifest = model.build_index(args.images_dir, args.out, dtype=args.dtype,
                                 overwrite=args.overwrite, approximate=args.approximate,
                                 nlist=args.nlist, nprobe=args.nprobe,
                                 shortlist=args.shortlist, target_recall=args.target_recall)
    _report_skipped(manifest["skipped"], "files")
    print("indexed %d images (%d-d %s features) into %s"
          % (manifest["count"], manifest["dim"], manifest["dtype"], args.out))
    if args.approximate:
        info = manifest["approximate"]
        print("approximate index: %s, nprobe %d, shortlist %d re-ranked exactly; recall@10 "
              "against exact search %.3f (target %g%s; %d stored images held out of training "
              "as queries)" % (info["codec"], info["nprobe"], info["shortlist"],
                               info["recall_at_10"], info["target_recall"],
                               "" if info["target_met"] else ", not reached",
                               info["recall_queries"]))


def _overrides(args):
    """The KEY VALUE overrides and --gpus, as ReIDModel.load takes them."""
    extra = list(args.opts)
    if args.gpus is not None:
        ids = [g.strip() for g in args.gpus.split(",") if g.strip()]
        extra += ["GPUS", "auto" if args.gpus.strip() == "auto" else "[%s]" % ",".join(ids)]
    return extra


def query(parser, args):
    """search.py query: rank an index for each query image."""
    from reid_baseline import ReIDModel
    from reid_baseline.fileio import check_output_file
    from reid_baseline.inference import pages
    from reid_baseline.inference.store import open_gallery
    _refuse_options_of_the_other_command(parser, args, INDEX_ONLY, "query")
    if not args.gallery or not args.images:
        parser.error("query needs --gallery and at least one IMAGE")
    if args.topk < 1:
        parser.error("--topk must be >= 1, got %d" % args.topk)
    if args.config:
        parser.error("query takes the config from the gallery; --config is for index")
    if args.html:
        check_output_file(args.html, args.overwrite, "--html")
    if args.png:
        check_output_file(args.png, args.overwrite, "--png")
    gallery = open_gallery(args.gallery)
    model = ReIDModel.for_gallery(gallery, args.params, _overrides(args))
    model.check_gallery(gallery)  # before embedding the queries
    feats, kept, skipped = model.extract_files(args.images, desc="queries")
    _report_skipped(skipped, "query images")
    if not kept:
        from reid_baseline.errors import DatasetError
        raise DatasetError("no query image could be read: %s" % "; ".join(r for _, r in skipped))
    idx, dist = model.rank(feats, gallery, args.topk, args.rerank, args.approximate, args.nprobe,
                           args.shortlist)
    from reid_baseline.inference.reid_model import ranked_paths
    queries = list(zip(kept, ranked_paths(gallery, idx, dist), strict=True))
    for name, ranked in queries:
        print("%s (gallery of %d%s):" % (name, len(gallery), ", re-ranked" if args.rerank
                                         else ", approximate" if args.approximate else ""))
        for rank, (path, d) in enumerate(ranked, 1):
            print("  %3d  %.4f  %s" % (rank, d, path))
    if args.html:
        pages.write_html(args.html, queries, args.overwrite)
        print("wrote %s" % args.html)
    if args.png:
        pages.write_png(args.png, queries, args.overwrite)
        print("wrote %s" % args.png)


def main():
    parser, args = _parse()
    (index if args.command == "index" else query)(parser, args)


if __name__ == "__main__":
    run(main)
