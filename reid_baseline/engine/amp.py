"""Mixed precision (SOLVER.AMP) with MXNet's own `mxnet.contrib.amp`: float16 on GPUs, bfloat16
on the CPU (oneDNN).

MXNet's AMP is process-wide: `amp.init` rewrites MXNet's operator functions so that networks
built afterwards compute in the low-precision type where that is safe, and it cannot be undone
or switched to another type in the same process. Its dynamic loss scaling (`amp.init_trainer`,
`amp.scale_loss`) multiplies the loss before backward and makes `Trainer.step` skip any step
whose gradients overflowed, halving the scale; this module counts the skipped steps and saves
and restores the scaler with the checkpoints.
"""
import contextlib
import logging

from mxnet.contrib import amp
from mxnet.contrib.amp.loss_scaler import LossScaler

from ..errors import DeviceError
from ..evaluation import distances  # noqa: F401  binds float32 distance kernels before amp.init wraps ops

logger = logging.getLogger("reid_baseline")

_initialized = None  # the type amp.init was called with in this process (MXNet's state mirrored)


def init_amp(cfg, ctx):
    """Start AMP for SOLVER.AMP on the devices `ctx`; call before the network is built.

    float16 needs GPUs (tensor cores) and bfloat16 the CPU (MXNet 1.9 has bfloat16 kernels in
    oneDNN only): any other pairing, or a second type in one process, is a DeviceError."""
    global _initialized
    mode = cfg.SOLVER.AMP
    if _initialized not in (None, mode):  # e.g. an in-process study: a "none" run after AMP
        raise DeviceError("SOLVER.AMP %s: this process already started AMP with %s, which "
                          "MXNet cannot undo; run it in a new process" % (mode, _initialized))
    if mode == "none":
        return
    on_gpu = all(c.device_type == "gpu" for c in ctx)
    if mode == "float16" and not on_gpu:
        raise DeviceError("SOLVER.AMP float16 needs GPUs (training runs on %s); use bfloat16 on "
                          "the CPU, or none" % ctx)
    if mode == "bfloat16" and on_gpu:
        raise DeviceError("SOLVER.AMP bfloat16 runs on the CPU only in MXNet 1.9; use float16 "
                          "on GPUs")
    amp.init(target_dtype=mode)
    _initialized = mode


class CountingLossScaler(LossScaler):
    """MXNet's dynamic loss scaler, counting the steps it made the Trainer skip."""

    def __init__(self):
        super().__init__()
        self.skipped = 0

    def has_overflow(self, params):
        overflow = super().has_overflow(params)
        self.skipped += int(overflow)
        return overflow


def attach_loss_scaler(trainer, cfg):
    """Give `trainer` AMP's dynamic loss scaling when SOLVER.AMP is on (after init_amp)."""
    if cfg.SOLVER.AMP == "none":
        return
    amp.init_trainer(trainer)
    # Our gluon loss is not one of the symbolic loss outputs AMP's own scaler also drives, so a
    # counting scaler of the same class can take its place.
    trainer._amp_loss_scaler = CountingLossScaler()


def skipped_steps(trainer):
    """How many steps the loss scaler has skipped so far (0 without AMP)."""
    scaler = getattr(trainer, "_amp_loss_scaler", None)
    return scaler.skipped if isinstance(scaler, CountingLossScaler) else 0


@contextlib.contextmanager
def scale_loss(losses, trainer):
    """amp.scale_loss when the trainer has a loss scaler, else the losses unchanged."""
    if getattr(trainer, "_amp_loss_scaler", None) is None:
        yield losses
    else:
        with amp.scale_loss(losses, trainer) as scaled:
            yield scaled


def loss_scaler_state(trainer):
    """The loss scaler's state as a JSON-able dict, or None without AMP."""
    scaler = getattr(trainer, "_amp_loss_scaler", None)
    if scaler is None:
        return None
    return {"loss_scale": scaler._loss_scale, "next_loss_scale": scaler._next_loss_scale,
            "unskipped": scaler._unskipped, "skipped": getattr(scaler, "skipped", 0)}


def restore_loss_scaler(trainer, state, folder):
    """Put a checkpoint's loss-scaler state (loss_scaler_state) back on `trainer`."""
    scaler = getattr(trainer, "_amp_loss_scaler", None)
    if scaler is None or state is None:
        if scaler is not None or state is not None:
            logger.info("%s was saved %s AMP and this run trains %s it: the loss scale %s",
                        folder, "with" if state else "without", "without" if state else "with",
                        "is not used" if state else "starts afresh")
        return
    scaler._loss_scale = state["loss_scale"]
    scaler._next_loss_scale = state["next_loss_scale"]
    scaler._unskipped = state["unskipped"]
    if isinstance(scaler, CountingLossScaler):
        scaler.skipped = state["skipped"]
