"""Train the ReID baseline: python train.py --config configs/market1501.yml [--ablation FILE] [--gpus 0,1] [--resume] [KEY VALUE ...]"""
from reid_baseline.cli import build_parser, config_from_args, run


def main():
    parser = build_parser(__doc__)
    parser.add_argument("--resume", action="store_true",
                        help="continue from the last checkpoint in OUTPUT_DIR")
    args = parser.parse_args()
    cfg = config_from_args(args)
    from reid_baseline.engine.preflight import preflight
    preflight(cfg)  # data set, weights, a convolution on each GPU: a misfit stops in seconds
    from reid_baseline.engine.loop import train
    train(cfg, resume=args.resume)


if __name__ == "__main__":
    run(main)
