"""The training loop: softmax cross-entropy on the identity classifier, epoch by epoch.

Per epoch: set the recipe's learning rate, run the batches (split over the devices), save the
checkpoint when due, evaluate when due, log. Loss and accuracy are summed on the devices and
read every SOLVER.LOG_PERIOD iterations only, so the async engine is never stalled per step;
each read also checks that training has not diverged. Nothing non-finite is ever saved.
"""
import contextlib
import json
import logging
import math
import os
import random
import sys
import time

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon
from tqdm import tqdm

from .amp import init_amp, scale_loss, skipped_steps
from .checkpoint import (find_resumable, last_checkpoint, load_checkpoint,
                         save_checkpoint, save_parameters)
from .config import save_config
from .data.loader import build_train_loader
from .data.datasets import build_datasets
from .devices import build_contexts
from .distributed import LOCAL, build_worker_group
from .errors import CheckpointError, NonFiniteParameters, RunDirError, TrainingDiverged
from .model import build_model
from .retrieval import evaluate_retrieval
from .solver import build_trainer, learning_rate_at
from .visualize import write_curves

logger = logging.getLogger("reid_baseline")

METRICS_FILE = "metrics.jsonl"




class _LogFileHandler(logging.FileHandler):
    """A FileHandler whose failed write (full disk) stops the run with one line; the logging
    module's default prints a traceback per message and goes on."""

    def handleError(self, record):
        raise RunDirError("cannot write %s: %s" % (self.baseFilename, sys.exc_info()[1]))


def setup_logging(run_dir, filename="train.log", console=True):
    """Log to `run_dir/filename` and, with `console`, to the console."""
    logger.setLevel(logging.INFO)
    logger.propagate = False  # our handlers only, whatever a library did to the root logger
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    fmt = logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S")
    handlers = [_LogFileHandler(os.path.join(run_dir, filename))]
    for handler in handlers + ([logging.StreamHandler()] if console else []):
        handler.setFormatter(fmt)
        logger.addHandler(handler)


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


def _train_epoch(net, trainer, loader, loss_fn, ctx, epoch, cfg, guard, workers=LOCAL):
    """One pass over `loader`; returns the epoch's mean loss, accuracy and images/s (of all
    the workers of a distributed job: the same figures on every worker)."""
    loss_sum = [mx.nd.zeros(1, ctx=c) for c in ctx]
    correct = [mx.nd.zeros(1, ctx=c) for c in ctx]
    seen, start, skipped = 0, time.time(), skipped_steps(trainer)
    read_loss, read_seen = 0.0, 0  # at the previous read
    loader.set_epoch(epoch)
    bar = tqdm(loader, desc="epoch %d/%d" % (epoch + 1, cfg.SOLVER.MAX_EPOCHS), leave=False,
               dynamic_ncols=True, disable=None)
    for it, (data, label) in enumerate(bar, 1):
        datas = gluon.utils.split_and_load(data, ctx)
        labels = gluon.utils.split_and_load(label, ctx)
        with autograd.record():
            outputs = [net(x)[0] for x in datas]
            losses = [loss_fn(logits, y) for logits, y in zip(outputs, labels)]
            with scale_loss(losses, trainer) as scaled:  # SOLVER.AMP's loss scaling, if on
                autograd.backward(scaled)
        for logits, y, loss, acc_loss, acc_correct in zip(outputs, labels, losses, loss_sum, correct):
            acc_loss += loss.sum()
            # float32 first: bfloat16 holds integers exactly only up to 256 (class indices)
            acc_correct += (logits.astype("float32", copy=False).argmax(axis=1)
                            == y.astype("float32")).sum()
        # The global batch: the kvstore sums the gradients of every worker's part of it.
        trainer.step(data.shape[0] * workers.num_workers)
        seen += data.shape[0]
        if it % cfg.SOLVER.LOG_PERIOD == 0 or it == len(loader):
            # The only host sync. Summed over the workers, so every worker guards the same
            # figures and a collapse stops them all at once.
            total_loss, total_correct, total_seen = workers.sum("metrics", [
                sum(l.asscalar() for l in loss_sum), sum(c.asscalar() for c in correct), seen])
            # The guard sees the iterations since the previous read: a late collapse is not
            # diluted by the epoch's earlier, healthy iterations.
            guard.check((total_loss - read_loss) / (total_seen - read_seen), epoch, it)
            read_loss, read_seen = total_loss, total_seen
            bar.set_postfix(loss="%.4f" % (total_loss / total_seen), acc="%.3f" % (total_correct / total_seen),
                            lr="%.2e" % trainer.learning_rate, ips="%.1f" % (total_seen / (time.time() - start)))
    bar.close()
    _average_running_stats(net, ctx)
    workers.average_running_stats(net)
    # The last iteration always reads: these are the whole epoch's figures.
    figures = {"loss": float(total_loss / total_seen), "train_acc": float(total_correct / total_seen),
               "images_per_sec": float(total_seen / (time.time() - start))}
    if cfg.SOLVER.AMP != "none":  # steps dropped by dynamic loss scaling (overflow), not divergence
        figures["amp_skipped_steps"] = skipped_steps(trainer) - skipped
    return figures


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


def read_metrics(run_dir):
    """The per-epoch records of metrics.jsonl ([] if none); a line cut short by a hard stop
    (kill -9 during the write) is skipped."""
    path = os.path.join(run_dir, METRICS_FILE)
    if not os.path.isfile(path):
        return []
    records = []
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    return [r for r in records if isinstance(r, dict) and "epoch" in r]


def _keep_metrics_until(run_dir, epoch):
    """Rewrite metrics.jsonl atomically with the records of epochs <= `epoch` only, so a
    resumed run does not repeat the rows of the epochs it trains again."""
    rows = [r for r in read_metrics(run_dir) if r["epoch"] <= epoch]
    path = os.path.join(run_dir, METRICS_FILE)
    with _writing(path + ".tmp", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    os.replace(path + ".tmp", path)


@contextlib.contextmanager
def _writing(path, mode):
    """open(path, mode) for writing; any failure (full disk) is a RunDirError naming the file."""
    try:
        with open(path, mode) as f:
            yield f
    except OSError as exc:
        raise RunDirError("cannot write %s: %s" % (path, exc.strerror or exc)) from exc


def _open_run_dir(cfg, resume, workers=LOCAL):
    """Check OUTPUT_DIR against the request, create it, start logging and save the config;
    a worker other than rank 0 only logs, into its own file there."""
    run_dir = cfg.OUTPUT_DIR
    if not workers.is_writer:
        try:
            os.makedirs(run_dir, exist_ok=True)
            setup_logging(run_dir, workers.log_file, console=False)
        except OSError as exc:
            raise RunDirError("OUTPUT_DIR %s cannot be written: %s" % (run_dir, exc.strerror or exc)) from exc
        return
    started = last_checkpoint(run_dir) or read_metrics(run_dir)
    if not resume and started:
        raise RunDirError("OUTPUT_DIR %s already holds a run: continue it with --resume, or "
                          "train into another OUTPUT_DIR" % run_dir)
    if resume and not started and not os.path.isfile(os.path.join(run_dir, "config.yaml")):
        raise RunDirError("--resume: no run in %s (no checkpoint, no metrics.jsonl, no "
                          "config.yaml); train without --resume to start one" % run_dir)
    try:
        os.makedirs(run_dir, exist_ok=True)
        setup_logging(run_dir)
        save_config(cfg, os.path.join(run_dir, "config.yaml"))
    except OSError as exc:
        raise RunDirError("OUTPUT_DIR %s cannot be written: %s" % (run_dir, exc.strerror or exc)) from exc


def _resume(run_dir, net, trainer, ctx, writer=True):
    """Load the newest intact checkpoint; returns the number of finished epochs it holds, 0 if
    the run has none yet. Damaged newer ones are renamed *.damaged (kept, never loaded again),
    each with a log line, by the `writer` (the other workers of a job skip them too)."""
    folder, state, damaged = find_resumable(run_dir)
    for bad, reason in damaged if writer else ():
        aside = bad + ".damaged"
        for n in range(2, 1000):  # an earlier resume may have moved one aside already
            if not os.path.exists(aside):
                break
            aside = "%s.damaged%d" % (bad, n)
        logger.info("%s; moved aside to %s", reason, aside)
        os.replace(bad, aside)
    if folder is None and damaged:
        raise CheckpointError("--resume: every checkpoint in %s is damaged (renamed *.damaged); "
                              "train without --resume into a new OUTPUT_DIR to start over"
                              % os.path.join(run_dir, "checkpoints"))
    if folder is None:
        logger.info("no checkpoint in %s yet: restarting from epoch 1",
                    os.path.join(run_dir, "checkpoints"))
        return 0
    epoch = load_checkpoint(folder, net, trainer, ctx, state=state)["epoch"]
    logger.info("resumed from %s at epoch %d", folder, epoch + 1)
    return epoch


def _save(run_dir, net, trainer, epoch, cfg, guard, interrupted=False):
    try:
        return save_checkpoint(run_dir, net, trainer, epoch, interrupted=interrupted,
                               keep=cfg.SOLVER.KEEP_CHECKPOINTS)
    except NonFiniteParameters as exc:
        guard.stop("the weights became non-finite after %d epochs (%s)" % (epoch, exc))


def train(cfg, resume=False):
    """Train the configured model; returns the list of this call's per-epoch records.

    With a dist_* SOLVER.KVSTORE this process is one worker of a job (see distributed.py):
    rank 0 alone writes the run files and evaluates."""
    workers = build_worker_group(cfg)
    with workers.exit_at_once_on_error():
        return _train(cfg, resume, workers)


def _train(cfg, resume, workers):
    run_dir = cfg.OUTPUT_DIR
    _open_run_dir(cfg, resume, workers)
    if workers.num_workers > 1:
        logger.info("distributed training: %s", workers)
    seed_everything(cfg.SOLVER.SEED)
    ctx = build_contexts(cfg.GPUS)
    init_amp(cfg, ctx)  # before the network is built
    dataset = build_datasets(cfg)
    logger.info("devices %s; dataset %s\n%s", ctx, dataset.root, dataset.summary())
    loader = build_train_loader(cfg, dataset.train, workers.num_workers, workers.rank)
    net = build_model(cfg, dataset.num_train_pids, ctx)
    if cfg.SOLVER.HYBRIDIZE:
        net.hybridize(static_alloc=True, static_shape=True)
    trainer = build_trainer(cfg, net.collect_params(), workers.kvstore)
    completed = _resume(run_dir, net, trainer, ctx, workers.is_writer) if resume else 0
    workers.start_together(net, trainer, completed, cfg, ctx)
    if workers.is_writer:
        _keep_metrics_until(run_dir, completed)
    guard = DivergenceGuard(cfg, dataset.num_train_pids, run_dir)
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    history = []
    try:
        for epoch in range(completed, cfg.SOLVER.MAX_EPOCHS):
            trainer.set_learning_rate(learning_rate_at(cfg, epoch))
            record = {"epoch": epoch + 1, "lr": trainer.learning_rate}
            record.update(_train_epoch(net, trainer, loader, loss_fn, ctx, epoch, cfg, guard, workers))
            completed = epoch + 1
            # Saved before evaluating: an evaluation error never costs the epoch's checkpoint.
            if workers.is_writer and (completed % cfg.SOLVER.CHECKPOINT_PERIOD == 0
                                      or completed == cfg.SOLVER.MAX_EPOCHS):
                _save(run_dir, net, trainer, completed, cfg, guard)
            try:
                if workers.is_writer and cfg.SOLVER.EVAL_PERIOD and completed % cfg.SOLVER.EVAL_PERIOD == 0:
                    record.update(evaluate_retrieval(cfg, net, dataset, ctx))
            finally:  # the training figures are logged even when the evaluation fails
                _log_epoch(run_dir, record, workers.is_writer)
            history.append(record)
    except KeyboardInterrupt:
        # Mid-epoch weights are kept; --resume restarts the unfinished epoch from them. (The
        # workers of a job stop at different points: rank 0 saves its own running statistics.)
        _average_running_stats(net, ctx)
        if workers.is_writer:
            folder = _save(run_dir, net, trainer, completed, cfg, guard, interrupted=True)
            logger.info("interrupted after %d finished epochs: saved %s; continue with --resume",
                        completed, folder)
        raise
    if not workers.is_writer:
        return history
    final = os.path.join(run_dir, "model_final.params")
    try:
        save_parameters(net, final)
    except NonFiniteParameters as exc:
        guard.stop(str(exc))
    logger.info("saved %s and %s", final, write_curves(run_dir))
    return history


def _log_epoch(run_dir, record, writer=True):
    logger.info("epoch %d: %s", record["epoch"], ", ".join(
        "%s %.4g" % (k, v) for k, v in record.items()
        if isinstance(v, float) or k == "amp_skipped_steps"))
    if not writer:  # metrics.jsonl is rank 0's
        return
    with _writing(os.path.join(run_dir, METRICS_FILE), "a") as f:
        f.write(json.dumps(record) + "\n")
