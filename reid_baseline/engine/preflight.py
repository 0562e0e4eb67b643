"""The pre-training check: can this config start training here? A misfit stops in seconds.

preflight(cfg) checks, in the order a user fixes them, that the launcher's environment fits
SOLVER.KVSTORE, the data set is found, tensorboardX is there if SOLVER.TENSORBOARD, each
configured GPU runs a convolution (all problems among these raised at once as one ReIDError
line), and then that the backbone weights are there (or downloadable). The checks return findings (status, line) that the
doctor (checks/doctor.py) also reports.
"""
import collections
import importlib.metadata
import os
import re
import subprocess
import sys

import mxnet as mx

from ..data.datasets import build_datasets, query_gallery_source
from ..environment import check_launcher_env
from ..errors import ConfigError, DatasetError, DeviceError, install_hint
from ..modeling.pretrained import weights_file
from .devices import CPU_HINT
from .telemetry import tensorboard_writer_class

# status: "ok", "warn" (runs, but slower or with a caveat) or "fail" (the config cannot run).
Finding = collections.namedtuple("Finding", "status line")

NGC_ROUTE = ("use NVIDIA's MXNet container nvcr.io/nvidia/mxnet:24.06-py3 (MXNet 1.9.1, CUDA "
             "12.4) and install with %s (docs/GPU.md)" % install_hint())
WHEEL_ROUTE = ("in a fresh venv: %s (mxnet-cu112) or %s (mxnet-cu117): kernels for compute "
               "capability 5.0 to 8.6" % (install_hint("cu112"), install_hint("cu117")))
# Minimum driver for a CUDA major version under CUDA's minor-version compatibility (CUDA
# toolkit release notes, table 2).
MIN_DRIVER = {11: "450.80.02", 12: "525.60.13"}
# A convolution and a training-mode BatchNorm on one GPU, run in a child process: a build
# without kernels for the GPU, or a broken driver, fails or hangs there, not in the caller.
GPU_PROBE = """import sys
import mxnet as mx
ctx = mx.gpu(int(sys.argv[1]))
x = mx.nd.ones((2, 3, 16, 16), ctx=ctx)
w = mx.nd.ones((4, 3, 3, 3), ctx=ctx)
with mx.autograd.record(train_mode=True):
    y = mx.nd.Convolution(x, w, kernel=(3, 3), num_filter=4, no_bias=True)
    y = mx.nd.BatchNorm(y, mx.nd.ones(4, ctx=ctx), mx.nd.zeros(4, ctx=ctx),
                        mx.nd.zeros(4, ctx=ctx), mx.nd.ones(4, ctx=ctx))
y.wait_to_read()
print("ok")
"""


def version_tuple(text):
    """The first three numbers of a version text as a tuple of ints, () if none."""
    return tuple(int(p) for p in re.findall(r"\d+", text or "")[:3])


def build_cuda_version():
    """(major, minor) of the CUDA runtime MXNet was built with, or None: from the wheel's name
    (mxnet-cu112), else from the libcudart this process loaded."""
    for dist in importlib.metadata.packages_distributions().get("mxnet", []):
        match = re.match(r"mxnet-cu(\d+)(\d)$", dist)
        if match:
            return int(match.group(1)), int(match.group(2))
    try:
        with open("/proc/self/maps") as f:
            match = re.search(r"libcudart\.so\.(\d+)\.(\d+)", f.read())
    except OSError:
        match = None
    return (int(match.group(1)), int(match.group(2))) if match else None


def query_nvidia_smi():
    """[(name, compute capability, driver version)] per GPU from nvidia-smi, [] without it."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap,driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [tuple(p.strip() for p in line.split(",")) for line in out.splitlines()
            if line.count(",") == 2]


def probe_gpu(gpu, timeout=120):
    """None when GPU `gpu` ran a convolution and a BatchNorm within `timeout` seconds, else the
    error text (or "timeout")."""
    try:
        done = subprocess.run([sys.executable, "-c", GPU_PROBE, str(gpu)], capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout"
    return None if done.returncode == 0 and "ok" in done.stdout else (done.stderr or done.stdout)


def gpu_advice(gpu, error, smi_row=None, cuda=None, timeout=120):
    """The one-line finding for a failed GPU probe: what went wrong and what to install."""
    name, cap = (smi_row[0], smi_row[1]) if smi_row else ("GPU", "")
    what = "GPU %d (%s%s)" % (gpu, name, ", compute capability %s" % cap if cap else "")
    if error == "timeout":
        return Finding("fail", "%s: a small convolution did not finish in %d s; fix: check "
                       "nvidia-smi for a busy or hung GPU" % (what, timeout))
    text = error.lower()
    if "no kernel image" in text:
        fix = NGC_ROUTE if version_tuple(cap) >= (8, 9) or not cap else WHEEL_ROUTE
        if cap and version_tuple(cap) < (5, 0):
            fix = "no MXNet 1.9.1 build has kernels for compute capability below 5.0"
        return Finding("fail", "%s: this MXNet has no kernels for it (no kernel image is "
                       "available); fix: %s" % (what, fix))
    if any(k in text for k in ("driver", "libcuda", "no cuda-capable device",
                               "cudaerrornodevice", "initialization error")):
        need = MIN_DRIVER.get(cuda[0]) if cuda else None
        return Finding("fail", "%s: the NVIDIA driver cannot run this MXNet%s; fix: install an "
                       "NVIDIA driver%s (nvidia-smi must list the GPU; in docker: --gpus all)"
                       % (what, " (CUDA %d.%d)" % cuda if cuda else "",
                          " >= %s" % need if need else ""))
    line = [ln for ln in error.strip().splitlines() if ln.strip()][-1:] or ["unknown error"]
    return Finding("fail", "%s: a small convolution failed: %s" % (what, line[0]))


def configured_gpus(cfg, features):
    """The GPU ids the config trains on (GPUS; "auto": GPU 0 when this MXNet can use one)."""
    if cfg.GPUS == "auto":
        return [0] if features.is_enabled("CUDA") and mx.context.num_gpus() else []
    return list(cfg.GPUS)


def check_mxnet(cfg):
    """MXNet's build features and what the config asks of them (GPUs, kvstore, AMP)."""
    features = mx.runtime.Features()
    names = ("CUDA", "CUDNN", "NCCL", "MKLDNN", "DIST_KVSTORE")
    out = [Finding("ok", "MXNet %s (%s): %s" % (
        mx.__version__, ", ".join(importlib.metadata.packages_distributions().get("mxnet", [])),
        ", ".join("%s %s" % (n, "on" if features.is_enabled(n) else "off") for n in names)))]
    kvstore = cfg.SOLVER.KVSTORE
    if kvstore == "nccl" and not features.is_enabled("NCCL"):
        out.append(Finding("fail", "SOLVER.KVSTORE nccl: this MXNet was built without NCCL; fix: "
                           "SOLVER.KVSTORE device"))
    if kvstore.startswith("dist") and not features.is_enabled("DIST_KVSTORE"):
        out.append(Finding("fail", "SOLVER.KVSTORE %s: this MXNet was built without the "
                           "distributed kvstore; fix: %s" % (kvstore, WHEEL_ROUTE)))
    if cfg.GPUS != "auto" and cfg.GPUS and not features.is_enabled("CUDA"):
        out.append(Finding("fail", "GPUS %s: this MXNet was built without CUDA; fix: %s; on "
                           "Ada/Hopper GPUs %s. %s" % (list(cfg.GPUS), WHEEL_ROUTE, NGC_ROUTE,
                                                       CPU_HINT)))
    return out, features


def check_gpus(cfg, features, timeout=120):
    """Visible GPUs, the driver against the build's CUDA, and a convolution on each GPU the
    config uses."""
    if not features.is_enabled("CUDA"):
        return [Finding("ok", "GPUs: not usable by this MXNet (a CPU build)")]
    smi = query_nvidia_smi()
    try:
        visible = mx.context.num_gpus()
    except mx.base.MXNetError as exc:  # a CUDA build without a working driver
        return [gpu_advice(0, str(exc), smi[0] if smi else None, build_cuda_version())]
    cuda = build_cuda_version()
    out = [Finding("ok", "GPUs visible: %d%s" % (visible, "".join(
        "; %s (compute capability %s, driver %s)" % row for row in smi)))]
    need = MIN_DRIVER.get(cuda[0]) if cuda else None
    if smi and need and version_tuple(smi[0][2]) < version_tuple(need):
        out.append(Finding("fail", "driver %s is older than CUDA %d.%d needs (%s); fix: update "
                           "the NVIDIA driver" % (smi[0][2], cuda[0], cuda[1], need)))
    for gpu in configured_gpus(cfg, features):
        if gpu >= visible:
            out.append(Finding("fail", "GPUS asks for GPU %d but %d are visible; fix: check "
                               "CUDA_VISIBLE_DEVICES and nvidia-smi, or set --gpus" % (gpu, visible)))
            continue
        error = probe_gpu(gpu, timeout)
        out.append(Finding("ok", "GPU %d runs a convolution and a BatchNorm" % gpu) if error is None
                   else gpu_advice(gpu, error, smi[gpu] if gpu < len(smi) else None, cuda, timeout))
    return out


def dataset_fix(cfg, problem):
    """The fix for a data set that cannot be loaded: the scripts/prepare_dataset.py command
    for a set with an official archive (and, for a config that does not verify the official
    counts, such as the demo's, the generated set's command), else where DATASETS.ROOT must
    point."""
    from ..data.prepare import ARCHIVES
    name, root = cfg.DATASETS.NAME, cfg.DATASETS.ROOT
    test_name, test_root = query_gallery_source(cfg)
    if str(problem).startswith(os.path.abspath(os.path.expanduser(test_root))):
        name, root = test_name, test_root  # the query/gallery set of a cross-data-set test
    if name not in ARCHIVES:
        return "set DATASETS.ROOT to the folder of your images (docs/DATASETS.md)"
    zip_name, url, _ = ARCHIVES[name]
    fix = "python scripts/prepare_dataset.py %s --out %s%s (checks and extracts the official " \
        "zip; docs/DATASETS.md)" % (name, root, "" if url else " --zip ~/Downloads/" + zip_name)
    if not cfg.DATASETS.VERIFY_COUNTS:
        fix += "; for the generated set: python scripts/make_toy_dataset.py %s --out %s" % (
            name, root)
    return fix


def check_dataset(cfg):
    """([finding], the loaded data set or None)."""
    try:
        data = build_datasets(cfg)
    except DatasetError as exc:
        return [Finding("fail", "data set: %s; fix: %s" % (exc, dataset_fix(cfg, exc)))], None
    return [Finding("ok", "data set %s at %s: %d training images of %d identities, %d query, "
                    "%d gallery" % (cfg.DATASETS.NAME, cfg.DATASETS.ROOT, len(data.train),
                                    data.num_train_pids, len(data.query), len(data.gallery)))], data


def check_tensorboard(cfg):
    """One finding when SOLVER.TENSORBOARD is on: tensorboardX is installed, or a fail naming
    the extra that installs it; none when it is off."""
    if not cfg.SOLVER.TENSORBOARD:
        return []
    try:
        tensorboard_writer_class()
    except ConfigError as exc:
        return [Finding("fail", str(exc))]
    return [Finding("ok", "SOLVER.TENSORBOARD: tensorboardX installed")]


def preflight(cfg, gpu_timeout=120):
    """The quick part of check() before a training run: the launcher's environment fits
    SOLVER.KVSTORE; the data set is found, tensorboardX is there if SOLVER.TENSORBOARD, each
    configured GPU runs a convolution (every problem among these in one ReIDError of the first
    one's kind: DatasetError, ConfigError or DeviceError); then the weights are there (or
    downloadable, else ModelError)."""
    check_launcher_env(cfg.SOLVER.KVSTORE)  # how the process was started comes first
    found, data = check_dataset(cfg)
    problems = [(DatasetError, f.line) for f in found if f.status == "fail"]
    problems += [(ConfigError, f.line) for f in check_tensorboard(cfg) if f.status == "fail"]
    mxnet_findings, features = check_mxnet(cfg)
    problems += [(DeviceError, f.line) for f in mxnet_findings + check_gpus(
        cfg, features, gpu_timeout) if f.status == "fail"]
    if problems:  # every problem at once: the user fixes them in one go
        error, line = problems[0]
        raise error(line if len(problems) == 1 else "%d problems: %s" % (len(problems), "; ".join(
            "(%d) %s" % (i, text) for i, (_, text) in enumerate(problems, 1))))
    # Downloaded now when missing; offline, the ModelError names the file and the alternatives.
    weights_file(cfg.MODEL.BACKBONE, cfg.MODEL.PRETRAINED)
