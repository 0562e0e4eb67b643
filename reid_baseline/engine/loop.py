"""The training loop: softmax cross-entropy on the identity classifier, epoch by epoch.

Per epoch: set the recipe's learning rate, run the batches (train_step, split over the
devices), then the after-epoch steps (hooks) the writer (rank 0) registered: the metrics row,
the checkpoint when due, the evaluation when due, TensorBoard. Loss and accuracy are summed on
the devices and read every SOLVER.LOG_PERIOD iterations only, so the async engine is never
stalled per step; each read checks that training has not diverged and logs the progress
(telemetry.py). Nothing non-finite is ever saved. The run folder's files are run_folder.py's.
"""
import logging
import math
import os
import random

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon
from tqdm import tqdm

from ..data.datasets import build_datasets
from ..data.loader import build_train_loader
from ..errors import NonFiniteParameters, TrainingDiverged
from ..evaluation.evaluator import evaluate_retrieval
from ..modeling.network import build_model
from .amp import init_amp, scale_loss, skipped_steps
from .checkpoint import (
    last_checkpoint,
    load_checkpoint,
    repair_and_find_resumable,
    save_checkpoint,
    save_parameters,
)
from .devices import build_contexts
from .run_folder import keep_metrics_until, open_run_folder, write_metrics_row, write_run_curves
from .solver import build_trainer, learning_rate_at
from .telemetry import (
    RunClock,
    TensorBoardLog,
    bar_postfix,
    describe_network,
    log_line,
    memory_figures,
    network_line,
)
from .workers import LOCAL, build_worker_group

logger = logging.getLogger("reid_baseline")


def seed_everything(seed):
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
        if not math.isfinite(mean_loss):
            self.stop("training loss became %s at epoch %d, iteration %d"
                      % (mean_loss, epoch + 1, iteration))
        if mean_loss > self.limit:
            self.stop("training collapsed: mean loss %.4g at epoch %d, iteration %d exceeds "
                      "SOLVER.COLLAPSE_FACTOR x ln(classes) = %.3g"
                      % (mean_loss, epoch + 1, iteration, self.limit))

    def stop(self, what):
        folder = last_checkpoint(self.run_dir)
        resume = ("resume from %s with --resume" % folder if folder else
                  "no checkpoint was saved yet, so --resume restarts from epoch 1")
        raise TrainingDiverged("%s; stopping without saving the diverged model (lower "
                               "SOLVER.BASE_LR or check the data; %s)" % (what, resume))


def train_step(net, trainer, loss_fn, data, label, ctx, num_workers=1):
    """One optimizer step on a batch split over the devices `ctx`. Returns, per device, the
    (summed loss, correct predictions) NDArrays, not read (no host sync). `num_workers` > 1:
    this batch is one worker's part of the global batch the kvstore sums gradients over."""
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
    trainer.step(data.shape[0] * num_workers)
    return sums


def _train_epoch(net, trainer, loader, loss_fn, ctx, epoch, cfg, guard, workers=LOCAL,
                 clock=None, hooks=()):
    """One pass over `loader`; returns the epoch's mean loss, accuracy, images/s and data
    share (of all the workers of a distributed job: the same figures on every worker)."""
    clock = clock or RunClock(cfg.SOLVER.MAX_EPOCHS)
    loss_sum = [mx.nd.zeros(1, ctx=c) for c in ctx]
    correct = [mx.nd.zeros(1, ctx=c) for c in ctx]
    seen, skipped = 0, skipped_steps(trainer)
    read_loss, read_seen = 0.0, 0  # at the previous read
    loader.set_epoch(epoch)
    clock.start_epoch(epoch, len(loader))
    bar = tqdm(clock.timed(loader), total=len(loader), leave=False, dynamic_ncols=True,
               disable=None, desc="epoch %d/%d" % (epoch + 1, cfg.SOLVER.MAX_EPOCHS))
    for it, (data, label) in enumerate(bar, 1):
        sums = train_step(net, trainer, loss_fn, data, label, ctx, workers.num_workers)
        for (batch_loss, batch_correct), acc_loss, acc_correct in zip(sums, loss_sum, correct,
                                                                      strict=True):
            acc_loss += batch_loss
            acc_correct += batch_correct
        seen += data.shape[0]
        if it % cfg.SOLVER.LOG_PERIOD == 0 or it == len(loader):
            # The only host sync. Summed over the workers, so every worker guards the same
            # figures and a collapse stops them all at once.
            total_loss, total_correct, total_seen = workers.sum("metrics", [
                sum(x.asscalar() for x in loss_sum), sum(c.asscalar() for c in correct), seen])
            # The guard sees the iterations since the previous read: a late collapse is not
            # diluted by the epoch's earlier, healthy iterations.
            guard.check((total_loss - read_loss) / (total_seen - read_seen), epoch, it)
            read_loss, read_seen = total_loss, total_seen
            figures = dict(clock.read(it, total_seen), epoch=epoch + 1, iteration=it,
                           max_epochs=cfg.SOLVER.MAX_EPOCHS, iterations=len(loader),
                           loss=float(total_loss / total_seen), lr=trainer.learning_rate,
                           train_acc=float(total_correct / total_seen))
            logger.info(log_line(figures))
            bar.set_postfix(bar_postfix(figures))
            _call(hooks, "after_log", figures)
    bar.close()
    _average_running_stats(net, ctx)
    workers.average_running_stats(net)
    # The last iteration always reads: these are the whole epoch's figures.
    record = {k: figures[k] for k in ("loss", "train_acc", "images_per_sec", "data_share",
                                      "run_seconds_left")}
    if cfg.SOLVER.AMP != "none":  # steps dropped by dynamic loss scaling (overflow), not divergence
        record["amp_skipped_steps"] = skipped_steps(trainer) - skipped
    return record


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


def _resume(run_dir, net, trainer, ctx, workers=LOCAL):
    """Load the newest intact checkpoint; returns the number of finished epochs it holds, 0 if
    the run has none yet. The writer tidies and repairs the checkpoints first (checkpoint.py);
    the other workers of a job skip the damaged ones too."""
    folder, state = repair_and_find_resumable(run_dir, repair=workers.is_writer)
    if folder is None:
        logger.info("no checkpoint in %s yet: restarting from epoch 1",
                    os.path.join(run_dir, "checkpoints"))
        return 0
    epoch = load_checkpoint(folder, net, trainer, ctx, state=state)["epoch"]
    logger.info("resumed from %s at epoch %d", folder, epoch + 1)
    return epoch


class Hook(object):
    """A step of the training loop (fast-reid's hooks): the loop calls every registered hook's
    methods in order; each does nothing unless a subclass says otherwise."""

    def before_train(self, completed):
        """Before the first epoch; `completed` epochs were finished before (resume)."""

    def after_log(self, figures):
        """After each log read (every SOLVER.LOG_PERIOD iterations): telemetry's figures."""

    def after_epoch(self, record):
        """After each epoch, with its record (a hook may add figures to it)."""

    def on_interrupt(self, completed):
        """On Ctrl-C, after `completed` finished epochs."""

    def after_train(self):
        """After the last epoch."""

    def close(self):
        """Always, last."""


class MetricsRow(Hook):
    """The epoch's row of metrics.jsonl, written before the checkpoint: a stop while the
    checkpoint is written never loses it. Resuming drops the rows of epochs trained again."""

    def __init__(self, run_dir):
        self.run_dir = run_dir

    def before_train(self, completed):
        keep_metrics_until(self.run_dir, completed)

    def after_epoch(self, record):
        write_metrics_row(self.run_dir, record)


class Checkpoint(Hook):
    """Checkpoints every SOLVER.CHECKPOINT_PERIOD epochs and at the last, on Ctrl-C (the
    mid-epoch weights; --resume restarts the unfinished epoch from them), the final model."""

    def __init__(self, cfg, run_dir, net, trainer, guard):
        self.cfg, self.run_dir, self.net, self.trainer, self.guard = cfg, run_dir, net, trainer, guard

    def _save(self, epoch, interrupted=False):
        try:
            return save_checkpoint(self.run_dir, self.net, self.trainer, epoch,
                                   interrupted=interrupted, keep=self.cfg.SOLVER.KEEP_CHECKPOINTS)
        except NonFiniteParameters as exc:
            self.guard.stop("the weights became non-finite after %d epochs (%s)" % (epoch, exc))

    def after_epoch(self, record):
        # Saved before evaluating: an evaluation error never costs the epoch's checkpoint.
        epoch = record["epoch"]
        if epoch % self.cfg.SOLVER.CHECKPOINT_PERIOD == 0 or epoch == self.cfg.SOLVER.MAX_EPOCHS:
            self._save(epoch)

    def on_interrupt(self, completed):
        folder = self._save(completed, interrupted=True)
        logger.info("interrupted after %d finished epochs: saved %s; continue with --resume",
                    completed, folder)

    def after_train(self):
        final = os.path.join(self.run_dir, "model_final.params")
        try:
            save_parameters(self.net, final)
        except NonFiniteParameters as exc:
            self.guard.stop(str(exc))
        logger.info("saved %s", final)


class Evaluation(Hook):
    """Query/gallery retrieval every SOLVER.EVAL_PERIOD epochs; its figures join the record
    and replace the epoch's metrics row."""

    def __init__(self, cfg, run_dir, net, dataset, ctx):
        self.cfg, self.run_dir, self.net, self.dataset, self.ctx = cfg, run_dir, net, dataset, ctx

    def after_epoch(self, record):
        period = self.cfg.SOLVER.EVAL_PERIOD
        if period and record["epoch"] % period == 0:
            record.update(evaluate_retrieval(self.cfg, self.net, self.dataset, self.ctx))
            write_metrics_row(self.run_dir, record, replace_last=True)


class Curves(Hook):
    """curves.png from metrics.jsonl at the end of the run."""

    def __init__(self, run_dir):
        self.run_dir = run_dir

    def after_train(self):
        logger.info("saved %s", write_run_curves(self.run_dir))


def build_hooks(cfg, run_dir, net, trainer, dataset, ctx, guard, workers=LOCAL):
    """The loop's after-epoch steps, in order. Only the writer (rank 0) has any: the other
    workers of a job write nothing and do not evaluate."""
    if not workers.is_writer:
        return []
    hooks = [MetricsRow(run_dir), Checkpoint(cfg, run_dir, net, trainer, guard),
             Evaluation(cfg, run_dir, net, dataset, ctx), Curves(run_dir)]
    if cfg.SOLVER.TENSORBOARD:
        hooks.append(TensorBoardLog(os.path.join(run_dir, "tensorboard")))
    return hooks


def _call(hooks, method, *args):
    for hook in hooks:
        getattr(hook, method)(*args)


def train(cfg, resume=False):
    """Train the configured model; returns the list of this call's per-epoch records.

    With a dist_* SOLVER.KVSTORE this process is one worker of a job (see distributed.py):
    rank 0 alone writes the run files and evaluates."""
    workers = build_worker_group(cfg)
    with workers.exit_at_once_on_error():
        return _train(cfg, resume, workers)


def _train(cfg, resume, workers):
    run_dir = open_run_folder(cfg, resume, workers.is_writer, workers.log_file)
    seed_everything(cfg.SOLVER.SEED)
    ctx = build_contexts(cfg.GPUS)
    init_amp(cfg, ctx)  # before the network is built
    dataset = build_datasets(cfg)
    logger.info("dataset %s\n%s", dataset.root, dataset.summary())
    loader = build_train_loader(cfg, dataset.train, workers.num_workers, workers.rank)
    net = build_model(cfg, dataset.num_train_pids, ctx)
    if cfg.SOLVER.HYBRIDIZE:
        net.hybridize(static_alloc=True, static_shape=True)
    network = describe_network(net, cfg)
    logger.info(network_line(network, cfg, ctx, workers))
    trainer = build_trainer(cfg, net.collect_params(), workers.kvstore)
    completed = _resume(run_dir, net, trainer, ctx, workers) if resume else 0
    workers.start_together(net, trainer, completed, cfg, ctx)
    guard = DivergenceGuard(cfg, dataset.num_train_pids, run_dir)
    hooks = build_hooks(cfg, run_dir, net, trainer, dataset, ctx, guard, workers)
    clock, loss_fn, history = RunClock(cfg.SOLVER.MAX_EPOCHS), gluon.loss.SoftmaxCrossEntropyLoss(), []
    try:
        _call(hooks, "before_train", completed)
        for epoch in range(completed, cfg.SOLVER.MAX_EPOCHS):
            trainer.set_learning_rate(learning_rate_at(cfg, epoch))
            record = {"epoch": epoch + 1, "lr": trainer.learning_rate}
            record.update(_train_epoch(net, trainer, loader, loss_fn, ctx, epoch, cfg, guard,
                                       workers, clock, hooks), **network, **memory_figures(ctx))
            completed = epoch + 1
            try:
                _call(hooks, "after_epoch", record)
            finally:  # the training figures are logged even when the evaluation fails
                _log_epoch(record)
            history.append(record)
        _call(hooks, "after_train")
    except KeyboardInterrupt:
        # The workers of a job stop at different points: rank 0 saves its own statistics.
        _average_running_stats(net, ctx)
        _call(hooks, "on_interrupt", completed)
        raise
    finally:
        _call(hooks, "close")
    return history


def _log_epoch(record):
    logger.info("epoch %d: %s", record["epoch"], ", ".join(
        "%s %.4g" % (k, v) for k, v in record.items()
        if isinstance(v, float) or k == "amp_skipped_steps"))
