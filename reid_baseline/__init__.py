"""reid_baseline: person re-identification baselines with MXNet/GluonCV."""
# MXNet is installed by the user's choice of build (docs/GPU.md), so its absence is checked
# first, without importing it: one line naming the install commands instead of an ImportError
# from deep inside a module.
import importlib.util as _importlib_util
import os as _os
import sys as _sys

from .errors import install_hint as _install_hint

MXNET_MISSING = (
    "MXNet is not installed: from the repository, %s (CPU), or %s / %s (CUDA, GPUs up to "
    "Ampere); for Ada/Hopper GPUs use NVIDIA's MXNet container (docs/GPU.md)"
    % (_install_hint("cpu"), _install_hint("cu112"), _install_hint("cu117")))

if _importlib_util.find_spec("mxnet") is None:
    # A command line of the repository (train.py, scripts/*.py) says it as the commands say
    # every error (cli.run: "error: ..." and exit 2), before its own imports fail; any other
    # importer gets an ImportError with the same line.
    _repository = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
    _main = getattr(_sys.modules.get("__main__"), "__file__", None)
    if _main and _os.path.abspath(_main).startswith(_repository + _os.sep):
        print("error: " + MXNET_MISSING, file=_sys.stderr)
        raise SystemExit(2)
    raise ImportError(MXNET_MISSING)

# oneDNN's primitive cache mistakes NCHW for NHWC at 1x1: a 2-D BatchNorm after a 1x1 one segfaults
_os.environ.setdefault("DNNL_PRIMITIVE_CACHE_CAPACITY", "0")

__all__ = ["ReIDModel", "load_config", "load_dataset"]


def __getattr__(name):
    # The public API is imported on first use: `import reid_baseline` stays light (no MXNet).
    if name == "ReIDModel":
        from .inference.reid_model import ReIDModel
        return ReIDModel
    if name == "load_config":
        from .config import load_config
        return load_config
    if name == "load_dataset":
        from .data.datasets import load_dataset
        return load_dataset
    raise AttributeError("module 'reid_baseline' has no attribute %r" % name)
