#!/usr/bin/env python
"""Search a folder of images with a trained model.

  index: embed every image under --images into a gallery file (paths, features, config):
    python scripts/search.py index --config CFG --params FILE --images DIR --out gallery.npz
  query: rank the gallery for each IMAGE with the config and parameters it was made with:
    python scripts/search.py query --gallery gallery.npz IMAGE... [--topk 10] [--rerank]
           [--html results.html] [--png results.png]
"""
import os


from reid_baseline.cli import build_parser, config_from_args, run


def _report_skipped(skipped, what):
    for path, reason in skipped:
        print("skipped %s" % reason if path in reason else "skipped %s: %s" % (path, reason))
    if skipped:
        print("%d unreadable %s skipped" % (len(skipped), what))


def main():
    parser = build_parser(__doc__.splitlines()[0])
    parser.add_argument("command", choices=("index", "query"))
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="query: query image files")
    parser.add_argument("--params", help="index: parameters saved by train.py; query: "
                        "default the ones the gallery was made with")
    parser.add_argument("--images", dest="images_dir", metavar="DIR",
                        help="index: folder tree of images")
    parser.add_argument("--out", help="index: gallery file to write (.npz)")
    parser.add_argument("--gallery", help="query: gallery file written by index")
    parser.add_argument("--topk", type=int, default=10, help="query: results per image")
    parser.add_argument("--rerank", action="store_true",
                        help="query: k-reciprocal re-ranking (TEST.RERANK_* knobs)")
    parser.add_argument("--html", help="query: also write the results as this HTML page")
    parser.add_argument("--png", help="query: also write the results as this PNG")
    args = parser.parse_args()
    # The positional IMAGEs and KEY VALUE overrides share the free words: override keys are
    # upper-case dotted names (TEST.BATCH_SIZE) or GPUS, the rest are images.
    words, args.opts = args.opts, []
    it = iter(args.images + words)
    images = []
    for word in it:
        if word.isupper() and (word == "GPUS" or "." in word) and not os.path.exists(word):
            args.opts += [word, next(it, "")]
        else:
            images.append(word)
    from reid_baseline import search
    if args.command == "index":
        if images:
            parser.error("index takes no IMAGE arguments (got %s); the folder is --images"
                         % images[0])
        for name in ("params", "images_dir", "out"):
            if not getattr(args, name):
                parser.error("index needs --%s" % name.replace("_dir", ""))
        summary = search.build_index(config_from_args(args), args.params, args.images_dir,
                                     args.out)
        _report_skipped(summary["skipped"], "files")
        print("indexed %d images (%d-d features) into %s"
              % (summary["count"], summary["dim"], summary["path"]))
        return
    if not args.gallery or not images:
        parser.error("query needs --gallery and at least one IMAGE")
    if args.topk < 1:
        parser.error("--topk must be >= 1, got %d" % args.topk)
    for path in (args.html, args.png):
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise FileNotFoundError("output folder %s does not exist"
                                    % os.path.dirname(os.path.abspath(path)))
    if args.config:
        parser.error("query takes the config from the gallery file; --config is for index")
    index = search.load_index(args.gallery)
    with search.index_config_file(index) as args.config:
        cfg = config_from_args(args)
    queries, skipped = search.query_index(index, cfg, images, args.params, args.topk, args.rerank)
    _report_skipped(skipped, "query images")
    for query, ranked in queries:
        print("%s (gallery of %d%s):" % (query, len(index["paths"]),
                                         ", re-ranked" if args.rerank else ""))
        for rank, (path, dist) in enumerate(ranked, 1):
            print("  %3d  %.4f  %s" % (rank, dist, path))
    if args.html:
        search.write_html(args.html, queries)
        print("wrote %s" % args.html)
    if args.png:
        search.write_png(args.png, queries)
        print("wrote %s" % args.png)


if __name__ == "__main__":
    run(main)
