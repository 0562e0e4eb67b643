"""Optimizer and the per-epoch learning-rate schedule of the recipe.

lr(e) rises linearly from BASE_LR * WARMUP_FACTOR at epoch 0 to BASE_LR at epoch
WARMUP_EPOCHS - 1, stays there, and is multiplied by GAMMA at each epoch of SOLVER.STEPS.
"""
import mxnet as mx
from mxnet import gluon

from .amp import attach_loss_scaler


def build_lr_scheduler(cfg):
    """An MXNet MultiFactorScheduler called with the epoch number (not the iteration).

    MXNet warms up over `warmup_steps` updates and decays once `num_update > step`, so the
    recipe's epochs map to warmup_steps = WARMUP_EPOCHS - 1 and step = epoch - 1."""
    warmup_steps = max(cfg.SOLVER.WARMUP_EPOCHS - 1, 0)
    # MXNet needs at least one step; one after the last epoch never fires.
    return mx.lr_scheduler.MultiFactorScheduler(
        step=[s - 1 for s in cfg.SOLVER.STEPS] or [cfg.SOLVER.MAX_EPOCHS],
        factor=cfg.SOLVER.GAMMA,
        base_lr=cfg.SOLVER.BASE_LR,
        warmup_steps=warmup_steps,
        warmup_begin_lr=cfg.SOLVER.BASE_LR * cfg.SOLVER.WARMUP_FACTOR,
        warmup_mode="linear")


def learning_rate_at(cfg, epoch):
    """The learning rate of `epoch` (0-based), from a fresh scheduler: MXNet's is stateful
    and only moves forward, which a resumed run or an out-of-order query must not depend on."""
    return build_lr_scheduler(cfg)(epoch)


def build_trainer(cfg, params, kvstore=None):
    """A gluon.Trainer with one learning rate for every layer (set per epoch by the engine),
    aggregating gradients with `kvstore` (a distributed job's KVStore, see distributed.py),
    else with SOLVER.KVSTORE."""
    kvstore = cfg.SOLVER.KVSTORE if kvstore is None else kvstore
    opt_params = {"learning_rate": learning_rate_at(cfg, 0), "wd": cfg.SOLVER.WEIGHT_DECAY}
    if cfg.SOLVER.OPTIMIZER == "sgd":
        opt_params["momentum"] = cfg.SOLVER.MOMENTUM
    # Local updates (not on the kvstore) keep optimizer states readable for checkpoints, and
    # Trainer.set_learning_rate effective with a distributed kvstore (MXNet issue 15919).
    trainer = gluon.Trainer(params, cfg.SOLVER.OPTIMIZER, opt_params, kvstore=kvstore,
                            update_on_kvstore=False)
    attach_loss_scaler(trainer, cfg)  # SOLVER.AMP's dynamic loss scaling, if on
    return trainer
