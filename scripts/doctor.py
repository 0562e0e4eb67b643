#!/usr/bin/env python
"""Can this machine run a config? python scripts/doctor.py --config configs/market1501.yml [--gpus 0,1] [KEY VALUE ...]

One line per fact (Python and packages, MXNet's build, GPUs and a convolution on each, driver,
BLAS, /dev/shm, the image cache, ImageNet weights, the data set), each problem with its fix.
Exit 0 when the config can run, 1 when it cannot, 2 for a bad config."""
import sys

from reid_baseline.cli import build_parser, config_from_args, run


def main():
    parser = build_parser(__doc__.splitlines()[0])
    parser.add_argument("--gpu-timeout", type=float, default=120,
                        help="seconds a GPU gets to run the test convolution (default 120)")
    args = parser.parse_args()
    cfg = config_from_args(args)
    from reid_baseline.checks import doctor
    sys.exit(doctor.report(doctor.check(cfg, gpu_timeout=args.gpu_timeout)))


if __name__ == "__main__":
    run(main)
