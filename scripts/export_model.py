#!/usr/bin/env python
"""Export the retrieval network (image -> feature) of a trained model with HybridBlock.export.

Writes PREFIX-symbol.json and PREFIX-0000.params, loadable without this package by
mx.gluon.SymbolBlock.imports(PREFIX + "-symbol.json", ["data"], PREFIX + "-0000.params").
Example: python scripts/export_model.py --config configs/market1501.yml \\
             --params runs/market1501/model_final.params --prefix runs/market1501/reid_resnet50
"""
import os
import sys

import mxnet as mx

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from reid_baseline.cli import build_parser, config_from_args, run  # noqa: E402
from reid_baseline.devices import build_contexts  # noqa: E402
from reid_baseline.model import load_trained_model  # noqa: E402


def main():
    parser = build_parser(__doc__.splitlines()[0])
    parser.add_argument("--params", required=True, help="parameters saved by train.py")
    parser.add_argument("--prefix", required=True, help="output path prefix")
    args = parser.parse_args()
    cfg = config_from_args(args)
    folder = os.path.dirname(os.path.abspath(args.prefix))
    if not os.path.isdir(folder):  # found before the model is loaded
        raise FileNotFoundError("--prefix: folder %s does not exist" % folder)
    ctx = build_contexts(cfg.GPUS)
    embedding = load_trained_model(cfg, args.params, ctx).embedding
    embedding.hybridize()
    # One forward pass builds the graph that export writes.
    embedding(mx.nd.zeros((1, 3, cfg.INPUT.HEIGHT, cfg.INPUT.WIDTH), ctx=ctx[0]))
    embedding.export(args.prefix)
    print("wrote %s-symbol.json and %s-0000.params (input: 1x3x%dx%d normalised RGB)"
          % (args.prefix, args.prefix, cfg.INPUT.HEIGHT, cfg.INPUT.WIDTH))


if __name__ == "__main__":
    run(main)
