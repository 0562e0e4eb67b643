"""A training run's folder (OUTPUT_DIR): train.log, metrics.jsonl, config.yaml and the list of
the settings changed on resume.

metrics.jsonl holds one JSON row per finished epoch. config.yaml is the run's resolved config
(it loads back with load_config); config_changes.jsonl, beside it, lists every resume that
changed a setting, with the old and new values and the time, and is only ever added to.
Every file is written through fileio.output_path (atomic, recorded in the folder's manifest):
a file there the package did not write, or wrote and a user changed since, is refused before
training starts. The writer holds the folder's lock (fileio.lock_folder) while it trains.
A resume may change only the settings that cannot change what the run trains (RESUMABLE_KEYS);
any other difference is a RunDirError listing each one.
"""
import datetime
import glob
import json
import logging
import os
import re
import sys

import yaml

from ..config import flatten, get_defaults
from ..errors import RunDirError
from ..fileio import check_output_file, file_sha256, lock_folder, output_path, read_json_object
from .checkpoint import last_checkpoint

logger = logging.getLogger("reid_baseline")

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.yaml"
CONFIG_CHANGES_FILE = "config_changes.jsonl"

# Settings a resume may change: they decide when to evaluate, log and checkpoint, how fast data
# is loaded and what is checked, never what is trained (the batches depend on (SEED, epoch,
# image) only, the learning rate of an epoch not on MAX_EPOCHS; GPUS only if every device still
# gets the same share of the batch, see _device_split_changed). TEST.* other than BATCH_SIZE stay
# fixed: metrics.jsonl rows of one run must be comparable. OUTPUT_DIR is the folder itself. The
# data roots are not here: another folder may hold other people under the same labels.
RESUMABLE_KEYS = frozenset((
    "SOLVER.MAX_EPOCHS", "SOLVER.EVAL_PERIOD", "SOLVER.LOG_PERIOD", "SOLVER.CHECKPOINT_PERIOD",
    "SOLVER.KEEP_CHECKPOINTS", "SOLVER.TENSORBOARD", "SOLVER.COLLAPSE_FACTOR",
    "SOLVER.HYBRIDIZE", "DATALOADER.NUM_WORKERS", "DATALOADER.CACHE",
    "DATASETS.VERIFY_COUNTS", "TEST.BATCH_SIZE", "GPUS", "OUTPUT_DIR"))

# Files a run writes: a run refuses a folder where one of them is not the package's own.
RUN_OUTPUTS = (CONFIG_FILE, METRICS_FILE, CONFIG_CHANGES_FILE, "model_final.params",
               "curves.png", "cmc.png", "results.json")
_ADVICE = "move it away or train into another OUTPUT_DIR"

# Temporary names of the run folder's own atomic writes (fileio.atomic_path: "<name>.tmp<pid>").
_TEMPORARY_RE = re.compile(r"^(%s|%s|model_final\.params|curves\.png)\.tmp\d*$"
                           % (re.escape(METRICS_FILE), re.escape(CONFIG_FILE)))


class _LogFileHandler(logging.FileHandler):
    """A FileHandler whose failed write (full disk) stops the run with one line; the logging
    module's default prints a traceback per message and goes on."""

    def handleError(self, record):
        raise RunDirError("cannot write %s: %s" % (self.baseFilename, sys.exc_info()[1]))


def setup_logging(run_dir, filename="train.log", console=True):
    """Log to `run_dir/filename` and, with `console`, to the console."""
    logger.setLevel(logging.INFO)
    logger.propagate = False  # our handlers only, whatever a library did to the root logger
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    fmt = logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S")
    handlers = [_LogFileHandler(os.path.join(run_dir, filename))]
    for handler in handlers + ([logging.StreamHandler()] if console else []):
        handler.setFormatter(fmt)
        logger.addHandler(handler)


def read_metrics(run_dir):
    """The per-epoch rows of metrics.jsonl ([] if none); a line cut short by a hard stop
    (kill -9 during the write) is skipped."""
    path = os.path.join(run_dir, METRICS_FILE)
    if not os.path.isfile(path):
        return []
    rows = []
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    return [r for r in rows if isinstance(r, dict) and "epoch" in r]


def _rewrite_metrics(run_dir, rows):
    path = os.path.join(run_dir, METRICS_FILE)
    try:
        with output_path(path, what="run file", advice=_ADVICE) as tmp, open(tmp, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    except OSError as exc:
        raise RunDirError("cannot write %s: %s" % (path, exc.strerror or exc)) from exc


def keep_metrics_until(run_dir, epoch):
    """Rewrite metrics.jsonl atomically with the rows of epochs <= `epoch` only, so a
    resumed run does not repeat the rows of the epochs it trains again."""
    _rewrite_metrics(run_dir, [r for r in read_metrics(run_dir) if r["epoch"] <= epoch])


def write_metrics_row(run_dir, metrics, replace_last=False):
    """Add an epoch's `metrics` to metrics.jsonl (rewritten atomically); with `replace_last`,
    replace the last row instead when it is the same epoch's (the row written before the
    checkpoint, now with the evaluation's results)."""
    rows = read_metrics(run_dir)
    if replace_last and rows and rows[-1]["epoch"] == metrics["epoch"]:
        rows = rows[:-1]
    _rewrite_metrics(run_dir, rows + [metrics])


def write_run_curves(run_dir, path=None, overwrite=False):
    """curves.png in `run_dir` (or `path`) from its metrics.jsonl; returns the path written.
    A run without any finished epoch is a RunDirError naming the folder."""
    from ..evaluation.plots import write_curves  # matplotlib: only when a picture is drawn

    if not os.path.isdir(run_dir):
        raise RunDirError("run folder %s does not exist" % run_dir)
    rows = read_metrics(run_dir)
    if not rows:
        raise RunDirError("no finished epoch in the run folder %s (no rows in %s)"
                          % (run_dir, METRICS_FILE))
    return write_curves(run_dir, rows, path, overwrite)


def flatten_config(node):
    """{"SECTION.KEY": value} of a (nested) config mapping, tuples as lists (YAML's form)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in flatten(node).items()}


def _device_split_changed(old, new):
    """Whether GPUS old -> new changes the images per device, and so what MXNet's (not
    synchronised) BatchNorm computes its statistics over; "auto" and [] are one device."""
    def count(gpus):
        return 1 if gpus == "auto" or not gpus else len(gpus)
    return count(old) != count(new)


def config_differences(saved, cfg):
    """(changes, refused): {"KEY": (old, new)} of the settings that differ between the run's
    saved config mapping and `cfg`, and the keys of those a resume may not change. A key the
    saved config lacks (a setting newer than the run) counts as its default."""
    old = flatten_config(get_defaults())
    old.update(flatten_config(saved))
    new = flatten_config(cfg)
    changes = {k: (old.get(k), v) for k, v in new.items() if old.get(k) != v}
    refused = [k for k in changes if k not in RESUMABLE_KEYS or (
        k == "GPUS" and not new["MODEL.BN_GROUP_SIZE"] and _device_split_changed(*changes[k]))]
    return changes, refused


def _saved_config(run_dir):
    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            saved = yaml.safe_load(f)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise RunDirError("--resume: %s cannot be read as a config (%s); the run's settings "
                          "are unknown" % (path, getattr(exc, "problem", None) or exc)) from exc
    if not isinstance(saved, dict):
        raise RunDirError("--resume: %s is not a config mapping" % path)
    return saved


def _check_resumed_config(cfg, run_dir, logged_epochs):
    """Compare `cfg` with the run's config.yaml; refuse settings that change the run, record
    the allowed ones in config_changes.jsonl and the log. Returns whether config.yaml must be
    rewritten."""
    saved = _saved_config(run_dir)
    if saved is None:
        raise RunDirError("--resume: the run's %s is missing, so there is nothing to compare "
                          "this config with; restore it, or train into another OUTPUT_DIR"
                          % os.path.join(run_dir, CONFIG_FILE))
    changes, refused = config_differences(saved, cfg)
    if refused:
        raise RunDirError("--resume: these settings differ from the run's %s and would change "
                          "what it trains: %s; resume with the run's values or train into "
                          "another OUTPUT_DIR" % (os.path.join(run_dir, CONFIG_FILE), "; ".join(
                              "%s: %r -> %r" % (k, changes[k][0], changes[k][1]) for k in refused)))
    if not changes:
        return False
    for key, (before, after) in changes.items():
        logger.info("resumed with %s: %r -> %r", key, before, after)
    entry = {"time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "logged_epochs": logged_epochs,
             "changes": {k: {"old": a, "new": b} for k, (a, b) in changes.items()}}
    path = os.path.join(run_dir, CONFIG_CHANGES_FILE)
    try:
        with output_path(path, what="run file", advice=_ADVICE) as tmp, open(tmp, "w") as f:
            f.writelines(json.dumps(e) + "\n" for e in read_config_changes(run_dir) + [entry])
    except OSError as exc:
        raise RunDirError("cannot write %s: %s" % (path, exc.strerror or exc)) from exc
    return True


def read_config_changes(run_dir):
    """The entries of config_changes.jsonl, oldest first ([] if the run never changed one)."""
    path = os.path.join(run_dir, CONFIG_CHANGES_FILE)
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def remove_stale_run_temporaries(run_dir):
    """Delete the temporary files the run folder's own atomic writes left when a run was
    stopped mid-write (e.g. metrics.jsonl.tmp1234); returns their paths."""
    stale = [p for p in glob.glob(os.path.join(glob.escape(run_dir), "*.tmp*"))
             if _TEMPORARY_RE.match(os.path.basename(p)) and os.path.isfile(p)]
    for path in stale:
        os.remove(path)
    return stale


def complete_run_line(cfg):
    """The line saying OUTPUT_DIR holds a complete run of SOLVER.MAX_EPOCHS epochs, or None.

    Complete: the last finished epoch (metrics.jsonl) is SOLVER.MAX_EPOCHS and
    model_final.params is present and no older than metrics.jsonl (the loop writes the final
    params after the last epoch's row: an extension stopped after its rows keeps an older
    model_final.params, which is not complete). Only reads the folder."""
    run_dir = cfg.OUTPUT_DIR
    final = os.path.join(run_dir, "model_final.params")
    rows = read_metrics(run_dir)
    if not rows or rows[-1]["epoch"] < cfg.SOLVER.MAX_EPOCHS or not os.path.isfile(final):
        return None
    if os.stat(final).st_mtime_ns < os.stat(os.path.join(run_dir, METRICS_FILE)).st_mtime_ns:
        return None
    results = read_json_object(os.path.join(run_dir, "results.json"))
    if results and results.get("params_sha256") not in (None, file_sha256(final)):
        return None  # its results describe an older model: the resume evaluates the final one
    return ("OUTPUT_DIR %s holds a complete run (%d epochs trained, SOLVER.MAX_EPOCHS %d, "
            "model_final.params saved): nothing to train; raise SOLVER.MAX_EPOCHS to extend it"
            % (run_dir, rows[-1]["epoch"], cfg.SOLVER.MAX_EPOCHS))


def open_run_folder(cfg, resume, is_writer=True, log_file="train.log"):
    """Check OUTPUT_DIR against the request, create it, start logging, and (the writer) check
    a resumed config against the run's and save the config. A process other than rank 0 only
    logs, into its own `log_file` there. Returns OUTPUT_DIR."""
    run_dir = cfg.OUTPUT_DIR
    if not is_writer:
        _make_folder(run_dir, lambda: setup_logging(run_dir, log_file, console=False))
        return run_dir
    started = last_checkpoint(run_dir) or read_metrics(run_dir)
    if not resume and started:
        raise RunDirError("OUTPUT_DIR %s already holds a run: continue it with --resume, or "
                          "train into another OUTPUT_DIR" % run_dir)
    if resume and not started and not os.path.isfile(os.path.join(run_dir, CONFIG_FILE)):
        raise RunDirError("--resume: no run in %s (no checkpoint, no metrics.jsonl, no "
                          "config.yaml); train without --resume to start one" % run_dir)
    _make_folder(run_dir, lambda: lock_folder(run_dir, RunDirError, "OUTPUT_DIR"))
    for name in RUN_OUTPUTS:
        check_output_file(os.path.join(run_dir, name), what="run file", advice=_ADVICE)
    _make_folder(run_dir, lambda: setup_logging(run_dir))
    rows = read_metrics(run_dir)
    rewrite = _check_resumed_config(cfg, run_dir, rows[-1]["epoch"] if rows else 0) if resume else True
    for path in remove_stale_run_temporaries(run_dir) if resume else ():
        logger.info("removed %s, left by a write that was stopped", path)
    if rewrite:
        try:
            with output_path(os.path.join(run_dir, CONFIG_FILE), what="run file",
                             advice=_ADVICE) as tmp, open(tmp, "w") as f:
                f.write(cfg.dump())
        except OSError as exc:
            raise RunDirError("OUTPUT_DIR %s cannot be written: %s"
                              % (run_dir, exc.strerror or exc)) from exc
    return run_dir


def _make_folder(run_dir, then):
    try:
        os.makedirs(run_dir, exist_ok=True)
        then()
    except OSError as exc:
        raise RunDirError("OUTPUT_DIR %s cannot be written: %s" % (run_dir, exc.strerror or exc)) from exc
