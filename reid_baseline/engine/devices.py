"""Turn the configured GPUS ("auto" or GPU ids) into MXNet contexts, failing clearly when
they cannot work."""
import sys

import mxnet as mx

from ..errors import DeviceError, error_line, install_hint

GPU_INSTALL_HINT = (
    "Install a CUDA build of MXNet in a fresh virtualenv (never beside the CPU mxnet): "
    "%s (mxnet-cu112) or %s (mxnet-cu117); their "
    "kernels cover GPUs of compute capability 5.0 to 8.6, Maxwell to Ampere; for Ada and Hopper "
    "use NVIDIA's MXNet container (docs/GPU.md). scripts/doctor.py checks a machine for a config."
    % (install_hint("cu112"), install_hint("cu117")))

CPU_HINT = ("To run on the CPU (e.g. a run trained on a GPU), pass --gpus \"\" on the command "
            "line, or the overrides [\"GPUS\", \"[]\"] in Python.")

# Notes already printed by this process: the demo trains, then evaluates, and says it once.
_said = set()


def build_contexts(gpus):
    """MXNet contexts for the GPUS knob: [mx.gpu(i) for i in gpus], [mx.cpu()] when `gpus` is
    empty, and for "auto" [mx.gpu(0)] when the installed MXNet has CUDA and sees a GPU, else
    [mx.cpu()] with one line on stderr saying why (once per process).

    Explicit GPU ids MXNet cannot use (CPU build, fewer visible GPUs) raise DeviceError."""
    if gpus == "auto":
        return _auto_contexts()
    if not gpus:
        return [mx.cpu()]
    if not mx.runtime.Features().is_enabled("CUDA"):
        raise DeviceError("GPUS %s requested, but the installed MXNet was built without CUDA. %s "
                          "%s" % (list(gpus), CPU_HINT, GPU_INSTALL_HINT))
    visible = mx.context.num_gpus()
    missing = [g for g in gpus if g >= visible]
    if missing:
        raise DeviceError("GPUS %s requested, but only %d GPU(s) are visible (check "
                          "CUDA_VISIBLE_DEVICES and nvidia-smi)." % (list(gpus), visible))
    return [mx.gpu(g) for g in gpus]


def _auto_contexts():
    if not mx.runtime.Features().is_enabled("CUDA"):
        reason = "this MXNet was built without CUDA"
    else:
        try:
            visible = mx.context.num_gpus()
        except mx.base.MXNetError as exc:  # e.g. a CUDA build on a machine without the driver
            reason = "this MXNet cannot count GPUs (%s)" % error_line(exc)
        else:
            if visible:
                return [mx.gpu(0)]
            reason = "no GPU visible (check CUDA_VISIBLE_DEVICES and nvidia-smi)"
    # Said on stderr, so a run that takes days on the CPU is never a surprise.
    note = "GPUS auto: %s; using the CPU" % reason
    if note not in _said:
        _said.add(note)
        print(note, file=sys.stderr)
    return [mx.cpu()]
