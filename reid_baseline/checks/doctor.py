"""Can this machine run this config? One finding per fact, each problem with its fix.

check(cfg) returns the findings (Python and packages, MXNet's build, GPUs and whether they run a
convolution, the driver, numpy's BLAS, /dev/shm, the image cache, ImageNet weights, the data
set); report(findings) prints them. The quick part that train.py runs before training (data
set, weights, devices) is the engine's pre-training check, engine/preflight.py.
"""
import importlib.metadata
import os
import sys

from ..config import worker_count
from ..data.cache import cache_slot_bytes, check_cache_fits
from ..engine.preflight import (
    Finding,
    check_dataset,
    check_gpus,
    check_mxnet,
    check_tensorboard,
    version_tuple,
)
from ..environment import installed_version
from ..errors import DatasetError, install_hint
from ..modeling.pretrained import weights_status


def check_packages():
    """Python, MXNet, numpy, GluonCV and OpenCV against what the package needs."""
    out = []
    py = sys.version_info[:2]
    out.append(Finding("ok" if (3, 10) <= py < (3, 12) else "warn",
                       "Python %d.%d%s" % (py + ("" if (3, 10) <= py < (3, 12) else
                                                 ": tested on 3.10 and 3.11 only",))))
    numpy_version = installed_version("numpy")
    out.append(Finding("ok", "numpy %s" % numpy_version) if version_tuple(numpy_version) < (1, 24)
               else Finding("fail", "numpy %s: MXNet 1.9.1 needs numpy < 1.24 (np.bool); fix: %s "
                            "(constraints.txt pins numpy 1.23.5)" % (numpy_version, install_hint())))
    gluoncv = installed_version("gluoncv")
    out.append(Finding("ok", "GluonCV %s" % gluoncv) if gluoncv and version_tuple(gluoncv) >= (0, 7)
               else Finding("fail", "GluonCV %s: 0.7 or later needed; fix: %s"
                            % (gluoncv, install_hint())))
    opencv = sorted(set(importlib.metadata.packages_distributions().get("cv2", [])))
    out.append(Finding("ok", "OpenCV: %s" % (", ".join(opencv) or "cv2 installed outside pip"))
               if len(opencv) <= 1 else Finding(
        "warn", "OpenCV: %s share the cv2 folder (one overwrites the other); fix: pip uninstall "
        "%s, then %s (it installs opencv-python alone)"
        % (" and ".join(opencv), " ".join(opencv), install_hint())))
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
    findings = check_packages() + check_tensorboard(cfg)
    mxnet_findings, features = check_mxnet(cfg)
    findings += mxnet_findings + check_gpus(cfg, features, gpu_timeout) + check_blas()
    findings += check_shm(cfg)
    dataset_findings, data = check_dataset(cfg)
    findings += dataset_findings + check_cache(cfg, data) + check_weights(cfg, check_source=True)
    return findings


def report(findings, stream=None):
    """Print one line per finding (to `stream`, default stdout); 0 when nothing fails, else 1."""
    stream = stream or sys.stdout
    for finding in findings:
        print("[%s] %s" % (finding.status, finding.line), file=stream)
    failed = sum(f.status == "fail" for f in findings)
    print("the config can run on this machine" if not failed else
          "%d problem(s): the config cannot run on this machine as it is" % failed, file=stream)
    return 1 if failed else 0
