#!/usr/bin/env python
"""Time the recipe's training step and feature extraction (ResNet-50, 384x128) on this machine.

Random inputs, so it measures the network and optimizer only (not data loading). The step timed
is the training loop's own (reid_baseline.engine.loop.train_step).
Example: OMP_NUM_THREADS=2 python scripts/benchmark_train.py --steps 3 --out bench_train.json
Mixed precision: add SOLVER.AMP bfloat16 (CPU) or float16 (GPU); one type per process (MXNet).
"""
import argparse
import json
import time

import mxnet as mx
from mxnet import gluon

from benchmarking import describe_machine
from reid_baseline.cli import config_from_args
from reid_baseline.engine.amp import init_amp
from reid_baseline.engine.devices import build_contexts
from reid_baseline.engine.loop import train_step
from reid_baseline.engine.solver import build_trainer
from reid_baseline.engine.telemetry import describe_network
from reid_baseline.modeling.network import build_model


def _time_train_steps(cfg, hybridize, steps, ctx):
    net = build_model(cfg, num_classes=751, ctx=ctx)
    if hybridize:
        net.hybridize(static_alloc=True, static_shape=True)
    trainer = build_trainer(cfg, net.collect_params())
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    batch = cfg.SOLVER.BATCH_SIZE
    # On the CPU, as the loader gives them; train_step splits them over the devices.
    data = mx.nd.random.uniform(shape=(batch, 3, cfg.INPUT.HEIGHT, cfg.INPUT.WIDTH))
    label = mx.nd.array(mx.nd.random.randint(0, 751, shape=(batch,)))

    def step():
        train_step(net, trainer, loss_fn, data, label, ctx)

    step()  # warm-up: graph construction and memory planning
    mx.nd.waitall()
    start = time.time()
    for _ in range(steps):
        step()
    mx.nd.waitall()
    return (time.time() - start) / steps, net


def _time_extraction(cfg, net, batches, ctx):
    data = mx.nd.random.uniform(shape=(cfg.TEST.BATCH_SIZE, 3, cfg.INPUT.HEIGHT, cfg.INPUT.WIDTH),
                                ctx=ctx[0])
    net.embedding(data).wait_to_read()
    start = time.time()
    for _ in range(batches):
        (net.embedding(data) + net.embedding(data.flip(axis=3))).wait_to_read()
    return batches * cfg.TEST.BATCH_SIZE / (time.time() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--gpus", default=None,
                        help="as train.py's --gpus: GPU ids, e.g. 0; \"\" for the CPU; default "
                        "GPUS auto (GPU 0 if MXNet has CUDA and sees a GPU, else the CPU)")
    parser.add_argument("--out", default=None, help="write the results as JSON")
    parser.add_argument("opts", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.out:  # found before the benchmark runs, not after
        from reid_baseline.fileio import check_output_file
        check_output_file(args.out, False, "--out")
    # ImageNet weights do not change the timing; random ones need no download.
    args.config, args.opts = None, ["MODEL.PRETRAINED", "", "TEST.BATCH_SIZE", "32"] + args.opts
    cfg = config_from_args(args)
    ctx = build_contexts(cfg.GPUS)
    init_amp(cfg, ctx)
    results = {"machine": describe_machine(), "mxnet": mx.__version__,
               "context": str(ctx), "input": [cfg.INPUT.HEIGHT, cfg.INPUT.WIDTH],
               "batch_size": cfg.SOLVER.BATCH_SIZE, "backbone": cfg.MODEL.BACKBONE,
               "bn_group_size": cfg.MODEL.BN_GROUP_SIZE, "amp": cfg.SOLVER.AMP}
    results["train_step_s_plain"], _ = _time_train_steps(cfg, False, args.steps, ctx)
    results["train_step_s_hybridized"], net = _time_train_steps(cfg, True, args.steps, ctx)
    results["extract_images_per_s_with_flip"] = _time_extraction(cfg, net, args.steps, ctx)
    results.update(describe_network(net, cfg))  # parameters, multiply-adds per image
    for key, value in results.items():
        print("%-32s %s" % (key, "%.3f" % value if isinstance(value, float) else value))
    if args.out:
        from reid_baseline.fileio import write_output
        write_output(args.out, json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
