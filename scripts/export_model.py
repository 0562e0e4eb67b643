#!/usr/bin/env python
"""Export the retrieval network (image -> feature) of a trained model.

--format mxnet (default): PREFIX-symbol.json and PREFIX-0000.params (HybridBlock.export),
loadable without this package by mx.gluon.SymbolBlock.imports(PREFIX + "-symbol.json",
["data"], PREFIX + "-0000.params"). --format onnx: PREFIX.onnx (mx.onnx, dynamic batch), then
random and real images through MXNet and onnxruntime; exits 2 if the features differ by more
than 1e-4 (PREFIX.onnx is written only after the check passes). Input: N x 3 x INPUT.HEIGHT x INPUT.WIDTH RGB, normalised with INPUT.PIXEL_MEAN/STD.
Example: python scripts/export_model.py --config configs/market1501.yml \\
             --params runs/market1501/model_final.params --prefix runs/market1501/reid --format onnx
"""
import os

from reid_baseline.cli import build_parser, config_from_args, run


def main():
    parser = build_parser(__doc__.splitlines()[0])
    parser.add_argument("--params", required=True, help="parameters saved by train.py")
    parser.add_argument("--prefix", required=True, help="output path prefix")
    parser.add_argument("--format", default="mxnet", choices=("mxnet", "onnx"),
                        help="mxnet: symbol JSON + params; onnx: PREFIX.onnx + parity check")
    parser.add_argument("--check-images", default=None, metavar="DIR",
                        help="real images for the ONNX parity check: the first 8 under DIR "
                             "(default: DATASETS.ROOT, if it exists)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing PREFIX.onnx this package did not write")
    args = parser.parse_args()
    cfg = config_from_args(args)
    from reid_baseline.data.images import find_images
    from reid_baseline.inference.export import export_model
    images = []
    if args.format == "onnx":
        folder = args.check_images or cfg.DATASETS.ROOT
        if args.check_images and not os.path.isdir(folder):
            raise FileNotFoundError("--check-images: folder %s does not exist" % folder)
        images = find_images(folder)[:8] if os.path.isdir(folder) else []
        if not images:
            print("note: no images under %s: the parity check uses random images only" % folder)
    out = export_model(cfg, args.params, args.prefix, args.format, check_images=images,
                       overwrite=args.overwrite)
    print("wrote %s (input: Nx3x%dx%d normalised RGB)"
          % (" and ".join(out["files"]), cfg.INPUT.HEIGHT, cfg.INPUT.WIDTH))
    if args.format == "onnx":
        print("parity MXNet vs onnxruntime, largest |difference| of the features: %s "
              "(tolerance 1e-4): OK" % ", ".join("%s images %.2e" % kv
                                               for kv in out["max_abs_diff"].items()))


if __name__ == "__main__":
    run(main)
