"""Can this machine run this config? One finding per fact, each problem with its fix.

check(cfg) returns the findings (Python and packages, MXNet's build, GPUs and whether they run a
convolution, the driver, numpy's BLAS, /dev/shm, the image cache, ImageNet weights, the data
set); preflight(cfg) runs the quick part (data set, weights, device) and raises the first
problem as a ReIDError, so a misfit stops a training run in seconds.
"""
import collections
import importlib.metadata
import os
import re
import subprocess
import sys

import mxnet as mx

from ..config import worker_count
from ..data.cache import cache_slot_bytes, check_cache_fits
from ..data.datasets import build_datasets
from ..engine.telemetry import tensorboard_writer_class
from ..environment import check_launcher_env, installed_version
from ..errors import DatasetError, DeviceError
from ..modeling.pretrained import weights_file, weights_status

# status: "ok", "warn" (runs, but slower or with a caveat) or "fail" (the config cannot run).
Finding = collections.namedtuple("Finding", "status line")

NGC_ROUTE = ("use NVIDIA's MXNet container nvcr.io/nvidia/mxnet:24.06-py3 (MXNet 1.9.1, CUDA "
             "12.4) and install with pip install -c constraints.txt -e . (docs/GPU.md)")
WHEEL_ROUTE = ("in a fresh venv: pip install -c constraints.txt -e '.[cu112]' (mxnet-cu112) or "
               "'.[cu117]' (mxnet-cu117): kernels for compute capability 5.0 to 8.6")
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


def _version_tuple(text):
    return tuple(int(p) for p in re.findall(r"\d+", text or "")[:3])


def check_packages():
    """Python, MXNet, numpy, GluonCV and OpenCV against what the package needs."""
    out = []
    py = sys.version_info[:2]
    out.append(Finding("ok" if (3, 10) <= py < (3, 12) else "warn",
                       "Python %d.%d%s" % (py + ("" if (3, 10) <= py < (3, 12) else
                                                 ": tested on 3.10 and 3.11 only",))))
    numpy_version = installed_version("numpy")
    out.append(Finding("ok", "numpy %s" % numpy_version) if _version_tuple(numpy_version) < (1, 24)
               else Finding("fail", "numpy %s: MXNet 1.9.1 needs numpy < 1.24 (np.bool); fix: "
                            "pip install -c constraints.txt 'numpy<1.24'" % numpy_version))
    gluoncv = installed_version("gluoncv")
    out.append(Finding("ok", "GluonCV %s" % gluoncv) if gluoncv and _version_tuple(gluoncv) >= (0, 7)
               else Finding("fail", "GluonCV %s: 0.7 or later needed; fix: pip install -c "
                            "constraints.txt -e ." % gluoncv))
    opencv = sorted(set(importlib.metadata.packages_distributions().get("cv2", [])))
    out.append(Finding("ok", "OpenCV: %s" % (", ".join(opencv) or "cv2 installed outside pip"))
               if len(opencv) <= 1 else Finding(
        "warn", "OpenCV: %s share the cv2 folder (one overwrites the other); fix: pip uninstall "
        "%s, then pip install --force-reinstall -c constraints.txt opencv-python"
        % (" and ".join(opencv), " ".join(opencv))))
    return out


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
        fix = NGC_ROUTE if _version_tuple(cap) >= (8, 9) or not cap else WHEEL_ROUTE
        if cap and _version_tuple(cap) < (5, 0):
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


def _configured_gpus(cfg, features):
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
                           "Ada/Hopper GPUs %s" % (list(cfg.GPUS), WHEEL_ROUTE, NGC_ROUTE)))
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
    if smi and need and _version_tuple(smi[0][2]) < _version_tuple(need):
        out.append(Finding("fail", "driver %s is older than CUDA %d.%d needs (%s); fix: update "
                           "the NVIDIA driver" % (smi[0][2], cuda[0], cuda[1], need)))
    for gpu in _configured_gpus(cfg, features):
        if gpu >= visible:
            out.append(Finding("fail", "GPUS asks for GPU %d but %d are visible; fix: check "
                               "CUDA_VISIBLE_DEVICES and nvidia-smi, or set --gpus" % (gpu, visible)))
            continue
        error = probe_gpu(gpu, timeout)
        out.append(Finding("ok", "GPU %d runs a convolution and a BatchNorm" % gpu) if error is None
                   else gpu_advice(gpu, error, smi[gpu] if gpu < len(smi) else None, cuda, timeout))
    return out


def check_blas():
    """numpy's BLAS and the CPU kernel it chose (OpenBLAS's generic one means it did not
    recognise the CPU)."""
    import numpy  # noqa: F401  (loads its BLAS for threadpoolctl to see)
    from threadpoolctl import threadpool_info
    infos = [i for i in threadpool_info() if i.get("user_api") == "blas"
             and "numpy" in i.get("filepath", "")] or [{}]
    info = infos[0]
    line = "numpy BLAS: %s %s, CPU kernel %s" % (info.get("internal_api", "unknown"),
                                                 info.get("version") or "", info.get("architecture"))
    if info.get("internal_api") == "openblas" and info.get("architecture") in (None, "Prescott",
                                                                               "Generic"):
        return [Finding("warn", line + ": OpenBLAS did not recognise this CPU (slow generic "
                        "kernel); fix: OPENBLAS_CORETYPE=Haswell (or the CPU's family)")]
    return [Finding("ok", line)]


def shm_needed_bytes(cfg):
    """/dev/shm bytes the loader's workers hold at most: MXNet's DataLoader keeps 2 batches
    per worker in flight (its default prefetch) plus the one being used, each a float32 NCHW
    file (data/shared_batch.py)."""
    if cfg.DATALOADER.NUM_WORKERS == 0:
        return 0
    image = 3 * cfg.INPUT.HEIGHT * cfg.INPUT.WIDTH * 4
    train_batch = cfg.SOLVER.BATCH_SIZE // worker_count(cfg)  # this worker's share
    return (2 * cfg.DATALOADER.NUM_WORKERS + 1) * max(train_batch, cfg.TEST.BATCH_SIZE) * image


def check_shm(cfg, shm_dir="/dev/shm"):
    """/dev/shm free space against what the loader's workers need for the config."""
    need = shm_needed_bytes(cfg)
    if not need:
        return [Finding("ok", "/dev/shm: not used (DATALOADER.NUM_WORKERS 0)")]
    try:
        stat = os.statvfs(shm_dir)
    except OSError:
        return [Finding("warn", "/dev/shm: missing; batches go through a pipe (slower)")]
    free = stat.f_bavail * stat.f_frsize
    line = "/dev/shm: %.2f GB free, the loader needs up to %.2f GB" % (free / 1e9, need / 1e9)
    if free < need:
        return [Finding("fail", line + "; fix: docker run --ipc=host (or --shm-size=%dg), or "
                        "fewer DATALOADER.NUM_WORKERS" % max(1, -(-need // 10 ** 9) * 2))]
    return [Finding("ok", line)]


def check_dataset(cfg):
    """([finding], the loaded data set or None)."""
    try:
        data = build_datasets(cfg)
    except DatasetError as exc:
        return [Finding("fail", "data set: %s" % exc)], None
    return [Finding("ok", "data set %s at %s: %d training images of %d identities, %d query, "
                    "%d gallery" % (cfg.DATASETS.NAME, cfg.DATASETS.ROOT, len(data.train),
                                    data.num_train_pids, len(data.query), len(data.gallery)))], data


def check_cache(cfg, data):
    """DATALOADER.CACHE against the memory available (data/cache.py's own estimate)."""
    mode = cfg.DATALOADER.CACHE
    if mode == "none" or data is None:
        return []
    paths = [r.path for r in data.train]
    nbytes = int(cache_slot_bytes(mode, paths, cfg.INPUT.HEIGHT, cfg.INPUT.WIDTH).sum())
    try:
        check_cache_fits(nbytes, len(paths), mode)
    except DatasetError as exc:
        return [Finding("fail", str(exc))]
    return [Finding("ok", "DATALOADER.CACHE %s: %.2f GB fits in memory" % (mode, nbytes / 1e9))]


def check_weights(cfg, check_source=False):
    """One finding for the backbone weights MODEL.PRETRAINED names: cached or not (a missing
    store or Hub file is downloaded when training starts, so only a caveat) and, with
    `check_source`, whether its source answers now."""
    status = weights_status(cfg, check_source=check_source)
    if status["kind"] == "none":
        return [Finding("ok", "weights: random initialisation (MODEL.PRETRAINED \"\")")]
    if status["problem"]:
        return [Finding("fail", "weights: %s" % status["problem"])]
    answers = {None: "", True: "; its source answers", False: "; its source does not answer "
               "now (%s): see docs/WEIGHTS.md for the alternatives" % status["source"]}
    if status["cached"]:
        return [Finding("ok", "weights: %s (MODEL.PRETRAINED %s)%s" % (
            status["path"], status["pretrained"], answers[status["source_ok"]]))]
    line = ("weights: %s is not in %s; training downloads it from %s (needs the network)%s"
            % (os.path.basename(status["path"]), os.path.dirname(status["path"]),
               status["source"], answers[status["source_ok"]]))
    return [Finding("fail" if status["source_ok"] is False else "warn", line)]


def check(cfg, gpu_timeout=120):
    """Every finding for `cfg` on this machine, in the order a user fixes them."""
    findings = check_packages()
    mxnet_findings, features = check_mxnet(cfg)
    findings += mxnet_findings + check_gpus(cfg, features, gpu_timeout) + check_blas()
    findings += check_shm(cfg)
    dataset_findings, data = check_dataset(cfg)
    findings += dataset_findings + check_cache(cfg, data) + check_weights(cfg, check_source=True)
    return findings


def preflight(cfg, gpu_timeout=120):
    """The quick part of check() before a training run: the launcher's environment fits
    SOLVER.KVSTORE, the data set is found, the weights are there (or downloadable),
    tensorboardX is there if SOLVER.TENSORBOARD, each configured GPU runs a convolution.
    Raises the first problem as a ReIDError (ConfigError, DatasetError, ModelError or
    DeviceError)."""
    check_launcher_env(cfg.SOLVER.KVSTORE)  # how the process was started comes first
    found, data = check_dataset(cfg)
    if data is None:
        raise DatasetError(found[0].line)
    # Downloaded now when missing; offline, the ModelError names the file and the alternatives.
    weights_file(cfg.MODEL.BACKBONE, cfg.MODEL.PRETRAINED)
    if cfg.SOLVER.TENSORBOARD:
        tensorboard_writer_class()
    mxnet_findings, features = check_mxnet(cfg)
    problems = [f for f in mxnet_findings + check_gpus(cfg, features, gpu_timeout)
                if f.status == "fail"]
    if problems:
        raise DeviceError(problems[0].line)


def report(findings, stream=None):
    """Print one line per finding (to `stream`, default stdout); 0 when nothing fails, else 1."""
    stream = stream or sys.stdout
    for finding in findings:
        print("[%s] %s" % (finding.status, finding.line), file=stream)
    failed = sum(f.status == "fail" for f in findings)
    print("the config can run on this machine" if not failed else
          "%d problem(s): the config cannot run on this machine as it is" % failed, file=stream)
    return 1 if failed else 0
