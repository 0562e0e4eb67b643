"""What the process environment asks of a run: the launcher's DMLC_* variables (how many
workers share each batch) and the devices the config names.

A leaf module (it imports only errors.py), so loading and checking a config never imports
MXNet; engine/process_group.py builds the process group from the same answers.
"""
import importlib.metadata
import os

from .errors import ConfigError

LAUNCHER_ENV = ("DMLC_ROLE", "DMLC_PS_ROOT_URI", "DMLC_PS_ROOT_PORT", "DMLC_NUM_SERVER",
                "DMLC_NUM_WORKER")
HOW_TO_LAUNCH = ("start it with a launcher: python scripts/launch_local.py --workers 2 "
                 "--servers 1 -- python train.py ... on one machine, python "
                 "scripts/launch_hosts.py -H hosts ... across machines (docs/DISTRIBUTED.md)")


def is_distributed(kvstore):
    """True for the SOLVER.KVSTORE values that make a process one worker of a job."""
    return kvstore.startswith("dist")


def launcher_worker_count(kvstore, environ=None):
    """How many workers share each batch: DMLC_NUM_WORKER for a dist_* kvstore started by
    MXNet's launcher, else 1 (also for a dist_* config read outside a job, e.g. by evaluate.py)."""
    environ = os.environ if environ is None else environ
    if not is_distributed(kvstore) or "DMLC_NUM_WORKER" not in environ:
        return 1
    return _positive_int(environ, "DMLC_NUM_WORKER")


def _positive_int(environ, name):
    value = environ[name]
    if not value.isdigit() or int(value) < 1:
        raise ConfigError("environment variable %s must be a number >= 1 (set by MXNet's "
                          "launcher), got %r" % (name, value))
    return int(value)


def check_launcher_env(kvstore, environ=None):
    """Raise ConfigError, saying how to launch, when SOLVER.KVSTORE and the launcher's
    environment disagree: a dist_* kvstore without it, or a single-machine kvstore inside a
    job of several workers (each would train alone, all into one OUTPUT_DIR)."""
    environ = os.environ if environ is None else environ
    if is_distributed(kvstore):
        missing = [name for name in LAUNCHER_ENV if not environ.get(name)]
        if missing:
            raise ConfigError("SOLVER.KVSTORE %s makes this process one worker of a distributed "
                              "job, but the launcher's environment is missing (%s is not set): %s"
                              % (kvstore, ", ".join(missing), HOW_TO_LAUNCH))
        if environ["DMLC_ROLE"] != "worker":
            raise ConfigError("SOLVER.KVSTORE %s: DMLC_ROLE is %r; training runs in the processes "
                              "the launcher starts as workers" % (kvstore, environ["DMLC_ROLE"]))
        for name in ("DMLC_NUM_WORKER", "DMLC_NUM_SERVER"):
            _positive_int(environ, name)
    elif environ.get("DMLC_ROLE") == "worker" and environ.get("DMLC_NUM_WORKER", "1") != "1":
        raise ConfigError("this process is one of %s workers started by MXNet's launcher, but "
                          "SOLVER.KVSTORE is %s: the workers would train separately; set "
                          "SOLVER.KVSTORE dist_sync (dist_device_sync with GPUs)"
                          % (environ["DMLC_NUM_WORKER"], kvstore))


def device_count(cfg):
    """How many devices each training batch is split over: the number of GPUS ids, or 1 for
    [] (the CPU) and for "auto" (GPU 0 or the CPU, see devices.build_contexts)."""
    return 1 if cfg.GPUS == "auto" else max(len(cfg.GPUS), 1)


def worker_count(cfg):
    """How many workers share each batch: those of the job MXNet's launcher started for a
    dist_* SOLVER.KVSTORE (its DMLC_* environment), else 1."""
    return launcher_worker_count(cfg.SOLVER.KVSTORE)


def device_batch(cfg):
    """Images per device and step: SOLVER.BATCH_SIZE over the workers and their devices."""
    return cfg.SOLVER.BATCH_SIZE // (worker_count(cfg) * device_count(cfg))


def installed_version(name):
    """The installed version of distribution `name`, or None when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
