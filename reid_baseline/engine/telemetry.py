"""Watching a run: the network's size and cost, speed, data-loading share, time left, memory,
and the TensorBoard writer (the hook is hooks.TensorBoard).

Timing is taken on the host without any extra device sync: the share of time waiting for data
is the wall time the loop spent getting the next batch from the loader, over the wall time
since the epoch started, read at the log reads (every SOLVER.LOG_PERIOD iterations) that
already wait for the device.
"""
import datetime
import json
import resource
import time

import mxnet as mx
import numpy as np

from ..errors import ConfigError, install_hint

# Layers counted for the cost of a forward pass: multiply-adds of convolutions and dense layers
# (pooling, BatchNorm, activations and additions are a few percent and not counted, as in the
# numbers usually published: ResNet-50 4.09 GMACs at 224x224).
COUNTED_OPS = ("Convolution", "FullyConnected", "Deconvolution")


def count_parameters_and_macs(net, height, width):
    """(parameters, multiply-adds) of one forward pass of a Gluon HybridBlock on one
    3 x height x width image: parameters are the graph's arguments (weights, biases, BatchNorm
    scales; running statistics not counted), multiply-adds those of its convolutions and
    dense layers (output elements x weights per output element). Read from the symbol graph,
    so it works hybridized or not, before or after the parameters are initialised."""
    out = net(mx.sym.var("data"))
    sym = mx.sym.Group(list(out)) if isinstance(out, (list, tuple)) else out
    shape = (1, 3, height, width)
    internals = sym.get_internals()
    _, out_shapes, _ = internals.infer_shape(data=shape)
    outputs = dict(zip(internals.list_outputs(), out_shapes, strict=True))
    arg_shapes, _, _ = sym.infer_shape(data=shape)
    args = dict(zip(sym.list_arguments(), arg_shapes, strict=True))
    nodes = json.loads(sym.tojson())["nodes"]
    macs = 0
    for node in nodes:
        if node["op"] in COUNTED_OPS:
            weight = args[nodes[node["inputs"][1][0]]["name"]]
            macs += int(np.prod(outputs[node["name"] + "_output"])) * int(np.prod(weight[1:]))
    params = sum(int(np.prod(s)) for name, s in args.items() if name != "data")
    return params, macs


def describe_network(net, cfg):
    """{"params": ..., "gmacs_per_image": ...} of the training network at the input size."""
    params, macs = count_parameters_and_macs(net, cfg.INPUT.HEIGHT, cfg.INPUT.WIDTH)
    return {"params": params, "gmacs_per_image": macs / 1e9}


def network_line(network, cfg, ctx, group):
    """The start-of-run log line: size and cost per image (`network`, describe_network's;
    multiply-adds, not FLOPs), devices and, in a distributed job, this process's place in its
    `group` (a process_group.ProcessGroup)."""
    return ("network %s: %.2f M parameters, %.2f GMACs per %dx%d image (multiply-adds of its "
            "convolutions and dense layers; FLOPs = 2 x MACs); devices %s%s"
            % (cfg.MODEL.BACKBONE, network["params"] / 1e6, network["gmacs_per_image"],
               cfg.INPUT.HEIGHT, cfg.INPUT.WIDTH, ", ".join(str(c) for c in ctx),
               "; distributed training: %s" % group if group.num_processes > 1 else ""))


def memory_metrics(ctx):
    """The process's peak resident memory so far (peak_rss_mb) and, on GPUs, the memory in
    use on each (gpu_memory_used_mb, from mx.context.gpu_memory_info)."""
    metrics = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    gpus = [c for c in ctx if c.device_type == "gpu"]
    if gpus:
        used = []
        for c in gpus:
            free, total = mx.context.gpu_memory_info(c.device_id)
            used.append((total - free) / 2.0 ** 20)
        metrics["gpu_memory_used_mb"] = used
    return metrics


def format_seconds(seconds):
    """H:MM:SS (days as "Nd H:MM:SS")."""
    return str(datetime.timedelta(seconds=int(round(seconds))))


class RunClock(object):
    """Timing of a training process: per epoch, the time waiting for data, images/s and the time
    left for the epoch and for the run."""

    def __init__(self, max_epochs):
        self.max_epochs = max_epochs
        self.epoch_seconds = []  # whole epochs of this process, after-epoch steps included
        self._epoch_start = None

    def start_epoch(self, epoch, iterations):
        """Call before the epoch's first batch (it closes the previous epoch's time)."""
        now = time.perf_counter()
        if self._epoch_start is not None:
            self.epoch_seconds.append(now - self._epoch_start)
        self.epoch, self.iterations = epoch, iterations
        self._epoch_start, self.data_seconds = now, 0.0

    def timed(self, loader):
        """Iterate `loader`, adding the time spent waiting for each batch to data_seconds."""
        batches = iter(loader)
        while True:
            start = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                return
            self.data_seconds += time.perf_counter() - start
            yield batch

    def read(self, iteration, images):
        """Speed, data share and time left after `iteration` of the epoch and `images` trained
        in it (by all the processes of a job)."""
        elapsed = max(time.perf_counter() - self._epoch_start, 1e-9)
        per_iteration = elapsed / iteration
        left_epoch = (self.iterations - iteration) * per_iteration
        whole = (float(np.mean(self.epoch_seconds)) if self.epoch_seconds
                 else self.iterations * per_iteration)
        return {"images_per_sec": images / elapsed,
                "data_share": min(max(self.data_seconds / elapsed, 0.0), 1.0),
                "epoch_seconds_left": left_epoch,
                "run_seconds_left": left_epoch + (self.max_epochs - self.epoch - 1) * whole}


def log_line(progress):
    """The line logged every SOLVER.LOG_PERIOD iterations, from the log read's progress."""
    return ("epoch %d/%d iter %d/%d: loss %.4f acc %.3f lr %.2e %.1f images/s data %.2f "
            "left %s epoch, %s run" % (
                progress["epoch"], progress["max_epochs"], progress["iteration"],
                progress["iterations"], progress["loss"], progress["train_acc"], progress["lr"],
                progress["images_per_sec"], progress["data_share"],
                format_seconds(progress["epoch_seconds_left"]),
                format_seconds(progress["run_seconds_left"])))


def bar_postfix(progress):
    """The tqdm bar's postfix: the log line's numbers, short."""
    return {"loss": "%.4f" % progress["loss"], "acc": "%.3f" % progress["train_acc"],
            "lr": "%.2e" % progress["lr"], "ips": "%.1f" % progress["images_per_sec"],
            "data": "%.2f" % progress["data_share"],
            "left": format_seconds(progress["run_seconds_left"])}


# TensorBoard tags: (tag, key of a log read's progress or an epoch's metrics).
LOG_SCALARS = (("train/loss", "loss"), ("train/accuracy", "train_acc"), ("train/lr", "lr"),
               ("train/images_per_sec", "images_per_sec"), ("train/data_share", "data_share"))
EPOCH_SCALARS = (("epoch/loss", "loss"), ("epoch/accuracy", "train_acc"), ("epoch/lr", "lr"),
                 ("epoch/images_per_sec", "images_per_sec"), ("epoch/data_share", "data_share"),
                 ("eval/rank1", "rank1"), ("eval/mAP", "mAP"), ("eval/mINP", "mINP"))


def tensorboard_writer_class():
    """tensorboardX's SummaryWriter (an optional extra); a ConfigError naming the extra when it
    is not installed (checked before training starts: preflight.py)."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError as exc:
        raise ConfigError("SOLVER.TENSORBOARD needs tensorboardX: %s"
                          % install_hint("tensorboard")) from exc
    return SummaryWriter


def open_tensorboard(logdir):
    """A tensorboardX SummaryWriter on `logdir`."""
    return tensorboard_writer_class()(logdir=logdir)
