"""Turn the configured GPU ids into MXNet contexts, failing clearly when they cannot work."""
import mxnet as mx

GPU_INSTALL_HINT = (
    "Install MXNet's CUDA build in a fresh virtualenv (never beside the CPU mxnet): "
    "REID_MXNET=mxnet-cu112 pip install -e . (needs CUDA 11.2 and cuDNN 8 on the system; its "
    "kernels cover GPUs of compute capability 5.0 to 8.6, Maxwell to Ampere; not Ada or Hopper).")


class DeviceError(RuntimeError):
    """The requested devices are not usable with the installed MXNet."""


def build_contexts(gpus):
    """[mx.gpu(i) for i in gpus], or [mx.cpu()] when `gpus` is empty."""
    if not gpus:
        return [mx.cpu()]
    if not mx.runtime.Features().is_enabled("CUDA"):
        raise DeviceError("GPUS %s requested, but the installed MXNet was built without CUDA. %s"
                          % (list(gpus), GPU_INSTALL_HINT))
    visible = mx.context.num_gpus()
    missing = [g for g in gpus if g >= visible]
    if missing:
        raise DeviceError("GPUS %s requested, but only %d GPU(s) are visible (check "
                          "CUDA_VISIBLE_DEVICES and nvidia-smi)." % (list(gpus), visible))
    return [mx.gpu(g) for g in gpus]
