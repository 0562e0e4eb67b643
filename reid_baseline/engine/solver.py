"""Optimizer and the per-epoch learning-rate schedule of the recipe.

lr(e) rises linearly from BASE_LR * WARMUP_FACTOR at epoch 0 to BASE_LR at epoch
WARMUP_EPOCHS - 1 (WARMUP_EPOCHS 0 or 1: BASE_LR from epoch 0), and is multiplied by GAMMA
from each epoch of SOLVER.STEPS on. The loop sets it at the start of every epoch.
"""
from mxnet import gluon

from .amp import attach_loss_scaler


def learning_rate_at(cfg, epoch):
    """The learning rate of `epoch` (0-based): the warm-up ramp times GAMMA ** (the number of
    SOLVER.STEPS <= epoch). A plain function of the epoch, so a resumed run gets the same."""
    solver = cfg.SOLVER
    warmup = 1.0
    if epoch < solver.WARMUP_EPOCHS - 1:
        alpha = epoch / (solver.WARMUP_EPOCHS - 1)
        warmup = solver.WARMUP_FACTOR + (1.0 - solver.WARMUP_FACTOR) * alpha
    decays = sum(step <= epoch for step in solver.STEPS)
    return solver.BASE_LR * warmup * solver.GAMMA ** decays


def build_trainer(cfg, params, kvstore=None):
    """A gluon.Trainer with one learning rate for every layer (set per epoch by the loop),
    aggregating gradients with `kvstore` (a distributed job's KVStore, see process_group.py),
    else with SOLVER.KVSTORE."""
    kvstore = cfg.SOLVER.KVSTORE if kvstore is None else kvstore
    opt_params = {"learning_rate": learning_rate_at(cfg, 0), "wd": cfg.SOLVER.WEIGHT_DECAY}
    if cfg.SOLVER.OPTIMIZER == "sgd":
        opt_params["momentum"] = cfg.SOLVER.MOMENTUM
    # Local updates (not on the kvstore) keep optimizer states readable for checkpoints, and
    # Trainer.set_learning_rate effective with a distributed kvstore.
    trainer = gluon.Trainer(params, cfg.SOLVER.OPTIMIZER, opt_params, kvstore=kvstore,
                            update_on_kvstore=False)
    attach_loss_scaler(trainer, cfg)  # SOLVER.AMP's dynamic loss scaling, if on
    return trainer
