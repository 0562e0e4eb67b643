"""The training loop: softmax cross-entropy on the identity classifier, epoch by epoch.

Per epoch: set the recipe's learning rate (solver.py), run the batches (train_step, split over
the devices), then the after-epoch steps of the process that writes the run (hooks.py): the
metrics row, the checkpoint when due, the evaluation when due, TensorBoard. Loss and accuracy
are summed on the devices and read every SOLVER.LOG_PERIOD iterations only, so the async
engine is never stalled per step; each read checks that training has not diverged and logs
the progress (telemetry.py). Nothing non-finite is ever saved.
"""
import logging
import math
import os
import random

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from ..data.datasets import build_datasets
from ..data.loader import build_train_loader
from ..errors import TrainingDiverged
from ..fileio import unlock_folder
from ..modeling.network import build_model
from ..progress import progress_bar
from .amp import init_amp, scale_loss, skipped_steps
from .checkpoint import last_checkpoint, load_checkpoint, repair_and_find_resumable
from .devices import build_contexts
from .hooks import build_hooks, call_hooks
from .process_group import LOCAL, build_process_group
from .run_folder import complete_run_line, open_run_folder
from .solver import build_trainer, learning_rate_at
from .telemetry import (
    RunClock,
    bar_postfix,
    describe_network,
    log_line,
    memory_metrics,
    network_line,
)

logger = logging.getLogger("reid_baseline")


def seed_everything(seed):
    """Seed Python's, numpy's and MXNet's random generators."""
    random.seed(seed)
    np.random.seed(seed)
    mx.random.seed(seed)


class DivergenceGuard(object):
    """Stops training whose recent mean loss is not finite or exceeds SOLVER.COLLAPSE_FACTOR
    times an untrained classifier's loss, ln(num_classes) (the recipe "can suddenly collapse")."""

    def __init__(self, cfg, num_classes, run_dir):
        factor = cfg.SOLVER.COLLAPSE_FACTOR
        self.limit = factor * math.log(max(num_classes, 2)) if factor > 0 else math.inf
        self.run_dir = run_dir

    def check(self, mean_loss, epoch, iteration):
        """Stop (TrainingDiverged) when `mean_loss` is not finite or above the limit."""
        if not math.isfinite(mean_loss):
            self.stop("training loss became %s at epoch %d, iteration %d"
                      % (mean_loss, epoch + 1, iteration))
        if mean_loss > self.limit:
            self.stop("training collapsed: mean loss %.4g at epoch %d, iteration %d exceeds "
                      "SOLVER.COLLAPSE_FACTOR x ln(classes) = %.3g"
                      % (mean_loss, epoch + 1, iteration, self.limit))

    def stop(self, what):
        """Raise TrainingDiverged saying `what` and how to resume."""
        folder = last_checkpoint(self.run_dir)
        resume = ("resume from %s with --resume" % folder if folder else
                  "no checkpoint was saved yet, so --resume restarts from epoch 1")
        raise TrainingDiverged("%s; stopping without saving the diverged model (lower "
                               "SOLVER.BASE_LR or check the data; %s)" % (what, resume))


def train(cfg, resume=False):
    """Train the configured model; returns the list of this call's per-epoch metrics.

    With a dist_* SOLVER.KVSTORE this process is one of a job's training processes (see
    process_group.py): rank 0 alone writes the run files and evaluates.

    Resuming a complete run (complete_run_line) prints one line and returns [] before
    anything is opened: no file of the run changes."""
    if resume:
        complete = complete_run_line(cfg)
        if complete:
            print(complete)
            return []
    group = build_process_group(cfg)
    with group.exit_at_once_on_error():
        try:
            return _train(cfg, resume, group)
        finally:
            unlock_folder(cfg.OUTPUT_DIR)  # open_run_folder's lock, held while this trains


def _train(cfg, resume, group):
    run_dir = open_run_folder(cfg, resume, group.is_writer, group.log_file)
    seed_everything(cfg.SOLVER.SEED)
    ctx = build_contexts(cfg.GPUS)
    init_amp(cfg, ctx)  # before the network is built
    dataset = build_datasets(cfg)
    logger.info("dataset %s\n%s", dataset.root, dataset.summary())
    loader = build_train_loader(cfg, dataset.train, group.num_processes, group.rank)
    net = build_model(cfg, dataset.num_train_pids, ctx)
    if cfg.SOLVER.HYBRIDIZE:
        net.hybridize(static_alloc=True, static_shape=True)
    network = describe_network(net, cfg)
    logger.info(network_line(network, cfg, ctx, group))
    trainer = build_trainer(cfg, net.collect_params(), group.kvstore)
    completed = _resume(run_dir, net, trainer, ctx, group) if resume else 0
    group.start_together(net, trainer, completed, cfg, ctx)
    guard = DivergenceGuard(cfg, dataset.num_train_pids, run_dir)
    hooks = build_hooks(cfg, run_dir, net, trainer, dataset, ctx, guard, group.is_writer)
    clock, loss_fn, history = RunClock(cfg.SOLVER.MAX_EPOCHS), gluon.loss.SoftmaxCrossEntropyLoss(), []
    try:
        call_hooks(hooks, "before_train", completed)
        for epoch in range(completed, cfg.SOLVER.MAX_EPOCHS):
            trainer.set_learning_rate(learning_rate_at(cfg, epoch))
            metrics = {"epoch": epoch + 1, "lr": trainer.learning_rate}
            metrics.update(_train_epoch(net, trainer, loader, loss_fn, ctx, epoch, cfg, guard,
                                        group, clock, hooks), **network, **memory_metrics(ctx))
            completed = epoch + 1
            try:
                call_hooks(hooks, "after_epoch", metrics)
            finally:  # the training metrics are logged even when the evaluation fails
                _log_epoch(metrics)
            history.append(metrics)
        call_hooks(hooks, "after_train")
    except KeyboardInterrupt:
        # The processes of a job stop at different points: rank 0 saves its own statistics.
        _average_running_stats(net, ctx)
        call_hooks(hooks, "on_interrupt", completed)
        raise
    finally:
        call_hooks(hooks, "close")
    return history


def _train_epoch(net, trainer, loader, loss_fn, ctx, epoch, cfg, guard, group=LOCAL,
                 clock=None, hooks=()):
    """One pass over `loader`; returns the epoch's mean loss, accuracy, images/s and data
    share (of all the processes of a distributed job: the same numbers in every process)."""
    clock = clock or RunClock(cfg.SOLVER.MAX_EPOCHS)
    loss_sum = [mx.nd.zeros(1, ctx=c) for c in ctx]
    correct = [mx.nd.zeros(1, ctx=c) for c in ctx]
    seen, skipped = 0, skipped_steps(trainer)
    read_loss, read_seen = 0.0, 0  # at the previous read
    loader.set_epoch(epoch)
    clock.start_epoch(epoch, len(loader))
    # A bar on a terminal; in a log, the LOG_PERIOD lines below are the progress.
    bar = progress_bar(clock.timed(loader), total=len(loader), log_lines=False,
                       desc="epoch %d/%d" % (epoch + 1, cfg.SOLVER.MAX_EPOCHS))
    for it, (data, label) in enumerate(bar, 1):
        sums = train_step(net, trainer, loss_fn, data, label, ctx, group.num_processes)
        for (batch_loss, batch_correct), acc_loss, acc_correct in zip(sums, loss_sum, correct,
                                                                      strict=True):
            acc_loss += batch_loss
            acc_correct += batch_correct
        seen += data.shape[0]
        if it % cfg.SOLVER.LOG_PERIOD == 0 or it == len(loader):
            # The only host sync. Summed over the processes, so each guards the same numbers
            # and a collapse stops them all at once.
            total_loss, total_correct, total_seen = group.sum("metrics", [
                sum(x.asscalar() for x in loss_sum), sum(c.asscalar() for c in correct), seen])
            # The guard sees the iterations since the previous read: a late collapse is not
            # diluted by the epoch's earlier, healthy iterations.
            guard.check((total_loss - read_loss) / (total_seen - read_seen), epoch, it)
            read_loss, read_seen = total_loss, total_seen
            progress = dict(clock.read(it, total_seen), epoch=epoch + 1, iteration=it,
                            max_epochs=cfg.SOLVER.MAX_EPOCHS, iterations=len(loader),
                            loss=float(total_loss / total_seen), lr=trainer.learning_rate,
                            train_acc=float(total_correct / total_seen))
            logger.info(log_line(progress))
            bar.set_postfix(bar_postfix(progress))
            call_hooks(hooks, "after_log", progress)
    bar.close()
    _average_running_stats(net, ctx)
    group.average_running_stats(net)
    # The last iteration always reads: its progress is the whole epoch's.
    metrics = {k: progress[k] for k in ("loss", "train_acc", "images_per_sec", "data_share",
                                        "run_seconds_left")}
    if cfg.SOLVER.AMP != "none":  # steps dropped by dynamic loss scaling (overflow), not divergence
        metrics["amp_skipped_steps"] = skipped_steps(trainer) - skipped
    return metrics


def train_step(net, trainer, loss_fn, data, label, ctx, num_processes=1):
    """One optimizer step on a batch split over the devices `ctx`. Returns, per device, the
    (summed loss, correct predictions) NDArrays, not read (no host sync). `num_processes` > 1:
    this batch is one process's part of the global batch the kvstore sums gradients over."""
    datas = gluon.utils.split_and_load(data, ctx)
    labels = gluon.utils.split_and_load(label, ctx)
    with autograd.record():
        outputs = [net(x)[0] for x in datas]
        losses = [loss_fn(logits, y) for logits, y in zip(outputs, labels, strict=True)]
        with scale_loss(losses, trainer) as scaled:  # SOLVER.AMP's loss scaling, if on
            autograd.backward(scaled)
    # float32 first: bfloat16 holds integers exactly only up to 256 (class indices)
    sums = [(loss.sum(), (logits.astype("float32", copy=False).argmax(axis=1)
                          == y.astype("float32")).sum())
            for logits, y, loss in zip(outputs, labels, losses, strict=True)]
    trainer.step(data.shape[0] * num_processes)
    return sums


def _average_running_stats(net, ctx):
    """Average BatchNorm running statistics over the devices.

    Each device updates its own copy from its part of the batch (they are not gradients, so
    the kvstore never syncs them); without this, features would depend on the device count."""
    if len(ctx) < 2:
        return
    for param in net.collect_params().values():
        if param.grad_req == "null" and param._data is not None:
            copies = param.list_data()
            mean = mx.nd.add_n(*[c.as_in_context(ctx[0]) for c in copies]) / len(copies)
            param.set_data(mean)


def _resume(run_dir, net, trainer, ctx, group=LOCAL):
    """Load the newest intact checkpoint; returns the number of finished epochs it holds, 0 if
    the run has none yet. The writer tidies and repairs the checkpoints first (checkpoint.py);
    the other processes of a job skip the damaged ones too."""
    folder, state = repair_and_find_resumable(run_dir, repair=group.is_writer)
    if folder is None:
        logger.info("no checkpoint in %s yet: restarting from epoch 1",
                    os.path.join(run_dir, "checkpoints"))
        return 0
    epoch = load_checkpoint(folder, net, trainer, ctx, state=state)["epoch"]
    logger.info("resumed from %s at epoch %d", folder, epoch + 1)
    return epoch


def _log_epoch(metrics):
    logger.info("epoch %d: %s", metrics["epoch"], ", ".join(
        "%s %.4g" % (k, v) for k, v in metrics.items()
        if isinstance(v, float) or k == "amp_skipped_steps"))
