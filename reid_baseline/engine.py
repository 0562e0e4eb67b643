"""The training loop: softmax cross-entropy on the identity classifier, epoch by epoch.

Per epoch: set the recipe's learning rate, run the batches (split over the devices), log,
optionally evaluate, checkpoint. Loss and accuracy are summed on the devices and read every
SOLVER.LOG_PERIOD iterations only, so the async engine is never stalled per step.
"""
import json
import logging
import math
import os
import random
import time

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon
from tqdm import tqdm

from .checkpoint import last_checkpoint, load_checkpoint, save_checkpoint
from .config import save_config
from .data.loader import build_train_loader
from .data.market1501 import load_market1501
from .devices import build_contexts
from .model import build_model
from .retrieval import evaluate_retrieval
from .solver import build_trainer, learning_rate_at

logger = logging.getLogger("reid_baseline")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; nothing from the diverged state is saved."""


class RunDirError(RuntimeError):
    """OUTPUT_DIR does not fit the request: a new run over an old one, or --resume without one."""


def setup_logging(run_dir):
    """Log to `run_dir/train.log` and to the console."""
    logger.setLevel(logging.INFO)
    logger.propagate = False  # our handlers only, whatever a library did to the root logger
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    fmt = logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S")
    for handler in (logging.FileHandler(os.path.join(run_dir, "train.log")), logging.StreamHandler()):
        handler.setFormatter(fmt)
        logger.addHandler(handler)


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    mx.random.seed(seed)


def _train_epoch(net, trainer, loader, loss_fn, ctx, epoch, cfg):
    """One pass over `loader`; returns the epoch's mean loss, accuracy and images/s."""
    loss_sum = [mx.nd.zeros(1, ctx=c) for c in ctx]
    correct = [mx.nd.zeros(1, ctx=c) for c in ctx]
    seen, start = 0, time.time()
    bar = tqdm(loader, desc="epoch %d/%d" % (epoch + 1, cfg.SOLVER.MAX_EPOCHS), leave=False,
               dynamic_ncols=True, disable=None)
    for it, (data, label) in enumerate(bar, 1):
        datas = gluon.utils.split_and_load(data, ctx)
        labels = gluon.utils.split_and_load(label, ctx)
        with autograd.record():
            outputs = [net(x)[0] for x in datas]
            losses = [loss_fn(logits, y) for logits, y in zip(outputs, labels)]
        autograd.backward(losses)
        for logits, y, loss, acc_loss, acc_correct in zip(outputs, labels, losses, loss_sum, correct):
            acc_loss += loss.sum()
            acc_correct += (logits.argmax(axis=1) == y.astype("float32")).sum()
        trainer.step(data.shape[0])
        seen += data.shape[0]
        if it % cfg.SOLVER.LOG_PERIOD == 0 or it == len(loader):
            mean_loss = sum(l.asscalar() for l in loss_sum) / seen  # the only host sync
            _check_finite(mean_loss, epoch, it)
            bar.set_postfix(loss="%.4f" % mean_loss, acc="%.3f" % (sum(c.asscalar() for c in correct) / seen),
                            lr="%.2e" % trainer.learning_rate, ips="%.1f" % (seen / (time.time() - start)))
    bar.close()
    _average_running_stats(net, ctx)
    return {"loss": sum(l.asscalar() for l in loss_sum) / seen,
            "train_acc": sum(c.asscalar() for c in correct) / seen,
            "images_per_sec": seen / (time.time() - start)}


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


def _check_finite(mean_loss, epoch, iteration):
    if not math.isfinite(mean_loss):
        raise TrainingDiverged(
            "training loss became %s at epoch %d, iteration %d; stopping without saving the "
            "diverged model (lower SOLVER.BASE_LR or check the data; resume from the last "
            "checkpoint with --resume)" % (mean_loss, epoch + 1, iteration))


def train(cfg, resume=False):
    """Train the configured model; returns the list of per-epoch records (metrics.jsonl)."""
    run_dir = cfg.OUTPUT_DIR
    if not resume and (last_checkpoint(run_dir) or os.path.exists(os.path.join(run_dir, "metrics.jsonl"))):
        raise RunDirError("OUTPUT_DIR %s already holds a run: continue it with --resume, or "
                          "train into another OUTPUT_DIR" % run_dir)
    os.makedirs(run_dir, exist_ok=True)
    setup_logging(run_dir)
    save_config(cfg, os.path.join(run_dir, "config.yaml"))
    seed_everything(cfg.SOLVER.SEED)
    ctx = build_contexts(cfg.GPUS)
    dataset = load_market1501(cfg.DATASETS.ROOT, verify_counts=cfg.DATASETS.VERIFY_COUNTS)
    logger.info("dataset %s\n%s", dataset.root, dataset.summary())
    loader = build_train_loader(cfg, dataset.train)
    net = build_model(cfg, dataset.num_train_pids, ctx)
    if cfg.SOLVER.HYBRIDIZE:
        net.hybridize(static_alloc=True, static_shape=True)
    trainer = build_trainer(cfg, net.collect_params())
    start_epoch = 0
    if resume:
        folder = last_checkpoint(run_dir)
        if folder is None:
            raise RunDirError("--resume: no checkpoint in %s" % os.path.join(run_dir, "checkpoints"))
        start_epoch = load_checkpoint(folder, net, trainer, ctx)["epoch"]
        logger.info("resumed from %s at epoch %d", folder, start_epoch + 1)
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    history = []
    completed = start_epoch
    try:
        for epoch in range(start_epoch, cfg.SOLVER.MAX_EPOCHS):
            trainer.set_learning_rate(learning_rate_at(cfg, epoch))
            record = {"epoch": epoch + 1, "lr": trainer.learning_rate}
            record.update(_train_epoch(net, trainer, loader, loss_fn, ctx, epoch, cfg))
            completed = epoch + 1
            if cfg.SOLVER.EVAL_PERIOD and completed % cfg.SOLVER.EVAL_PERIOD == 0:
                record.update(evaluate_retrieval(cfg, net, dataset, ctx))
            history.append(record)
            logger.info("epoch %d: %s", completed, ", ".join(
                "%s %.4g" % (k, v) for k, v in record.items() if isinstance(v, float)))
            with open(os.path.join(run_dir, "metrics.jsonl"), "a") as f:
                f.write(json.dumps(record) + "\n")
            if completed % cfg.SOLVER.CHECKPOINT_PERIOD == 0 or completed == cfg.SOLVER.MAX_EPOCHS:
                save_checkpoint(run_dir, net, trainer, completed)
    except KeyboardInterrupt:
        # Mid-epoch weights are kept; --resume restarts the unfinished epoch from them.
        _average_running_stats(net, ctx)
        folder = save_checkpoint(run_dir, net, trainer, completed, interrupted=True)
        logger.info("interrupted after %d finished epochs: saved %s; continue with --resume",
                    completed, folder)
        raise
    final = os.path.join(run_dir, "model_final.params")
    net.save_parameters(final + ".tmp")
    os.replace(final + ".tmp", final)
    logger.info("saved %s", final)
    return history
