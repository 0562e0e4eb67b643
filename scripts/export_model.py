#!/usr/bin/env python
"""Export the retrieval model (image -> feature) of a trained run, as ReIDModel.extract() computes it.

The exported graph gives what ReIDModel.extract() gives: the image and its horizontal mirror
through the network, averaged, then L2-normalised (as TEST.FLIP_FEATURES and
TEST.NORMALIZE_FEATURES say); --raw exports the network's feature alone.
--format mxnet (default): PREFIX-symbol.json and PREFIX-0000.params (HybridBlock.export),
loadable without this package by mx.gluon.SymbolBlock.imports(PREFIX + "-symbol.json",
["data"], PREFIX + "-0000.params"). --format onnx: PREFIX.onnx (mx.onnx, dynamic batch).
Before the files get their names, random and real images go through the exported model, MXNet
and extract(); exits 2 if the features differ by more than 1e-4. Input: N x 3 x INPUT.HEIGHT x
INPUT.WIDTH RGB, normalised with INPUT.PIXEL_MEAN/STD (docs/INFERENCE.md).
Example: python scripts/export_model.py --config configs/market1501.yml \\
             --params runs/market1501/model_final.params --prefix runs/market1501/reid --format onnx
"""
import os
import sys

from reid_baseline.cli import build_parser, config_from_args, run


def main():
    parser = build_parser(__doc__.splitlines()[0])
    parser.add_argument("--params", required=True, help="parameters saved by train.py")
    parser.add_argument("--prefix", required=True, help="output path prefix")
    parser.add_argument("--format", default="mxnet", choices=("mxnet", "onnx"),
                        help="mxnet: symbol JSON + params; onnx: PREFIX.onnx")
    parser.add_argument("--raw", action="store_true",
                        help="export the network's feature alone, without the mirror and the "
                             "L2 normalisation of extract()")
    parser.add_argument("--check-images", default=None, metavar="DIR",
                        help="real images for the parity check: the first 8 under DIR "
                             "(default: DATASETS.ROOT, if it exists)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing exported files this package did not write")
    parser.add_argument("--force", action="store_true", help="use a config that changes the "
                        "features of the run the params belong to (warned)")
    args = parser.parse_args()
    cfg = config_from_args(args)
    from reid_baseline.data.images import find_images
    from reid_baseline.errors import DatasetError
    from reid_baseline.inference.export import export_model, parity_text
    folder = args.check_images or cfg.DATASETS.ROOT
    if args.check_images and not os.path.isdir(folder):
        raise DatasetError("--check-images: folder %s does not exist" % folder)
    images = find_images(folder)[:8] if os.path.isdir(folder) else []
    out = export_model(cfg, args.params, args.prefix, args.format, check_images=images,
                       overwrite=args.overwrite, raw=args.raw, force=args.force)
    if "warning" in out:
        print("warning: " + out["warning"], file=sys.stderr)
    if not images:
        print("note: no images under %s: the parity check used random images only" % folder)
    what = ("the network's raw feature" if args.raw else
            "features as ReIDModel.extract() computes them")
    print("wrote %s: %s (input: Nx3x%dx%d normalised RGB)"
          % (" and ".join(out["files"]), what, cfg.INPUT.HEIGHT, cfg.INPUT.WIDTH))
    print("parity, largest |difference| of the features against MXNet%s: %s (tolerance 1e-4): OK"
          % ("" if args.raw else " and extract()", parity_text(out)))


if __name__ == "__main__":
    run(main)
