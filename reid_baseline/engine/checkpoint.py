"""Atomic checkpoints: parameters, optimizer state and progress, and resuming from them.

A checkpoint is a folder `checkpoints/epoch_XXXX/` with `model.params`, `optimizer.nd` and
`state.json`. It is written under a temporary name and renamed, then the `last` pointer is
replaced, so an interrupted write never leaves a half checkpoint behind `last`; a write stopped
by an error or Ctrl-C removes its temporary folder, one stopped harder (kill -9) leaves it for
`remove_stale_checkpoint_temporaries` at the next start. `state.json` records the size and
SHA-256 of the two array files: a damaged checkpoint (truncated copy, full disk, bad sector) is
recognised when it is loaded, and resuming falls back to the newest intact one. Parameters
that are not finite are never written. Optimizer state is stored as NDArrays plus JSON (optimizer_state.py): loading a checkpoint
never unpickles anything.
"""
import json
import logging
import os
import re
import shutil

import mxnet as mx

from ..errors import CheckpointError, NonFiniteParameters, OutputError, error_line
from ..fileio import OUTPUTS_MANIFEST, atomic_path, file_sha256, is_ours, output_path
from .amp import loss_scaler_state, restore_loss_scaler
from .optimizer_state import optimizer_arrays, restore_optimizer

logger = logging.getLogger("reid_baseline")

STATE_FILE = "state.json"
PARAMS_FILE = "model.params"
OPTIMIZER_FILE = "optimizer.nd"


_NAME_RE = re.compile(r"^epoch_(\d{4,})(_interrupted)?$")
# What an interrupted save_checkpoint can leave in checkpoints/: its temporary folder, the
# earlier same-named folder moved aside, the pointer's temporary file (fileio.atomic_path).
_TEMPORARY_RE = re.compile(r"^(epoch_\d{4,}(?:_interrupted)?)(\.tmp|\.old)$|^last\.tmp\d*$")


def non_finite_arrays(named_arrays):
    """Names of the (name, NDArray) pairs holding NaN or infinity, [] if none.

    One fused MXNet op (multi_all_finite, as AMP uses) per array and a single host read."""
    named_arrays = list(named_arrays)
    if not named_arrays:
        return []
    flags = [mx.nd.multi_all_finite(array, num_arrays=1).as_in_context(mx.cpu())
             for _, array in named_arrays]
    ok = mx.nd.concat(*flags, dim=0).asnumpy()
    return sorted({name for (name, _), good in zip(named_arrays, ok, strict=True) if not good})


def non_finite_parameters(net):
    """Names of the parameters of `net` holding NaN or infinity (on any device), [] if none."""
    return non_finite_arrays((name, copy) for name, param in net._collect_params_with_prefix().items()
                             if param._data is not None for copy in param.list_data())


def _refuse_non_finite(bad, what):
    if bad:
        raise NonFiniteParameters("not writing %s: %d arrays hold NaN or infinity (%s%s)"
                                  % (what, len(bad), ", ".join(bad[:3]), ", ..." if len(bad) > 3 else ""))


def _file_digest(path):
    return {"bytes": os.path.getsize(path), "sha256": file_sha256(path)}


def save_parameters(net, path):
    """Write `net`'s parameters to `path` through fileio.output_path (atomic, recorded), refusing non-finite values
    (NonFiniteParameters) and turning a failed write into a CheckpointError."""
    _refuse_non_finite(non_finite_parameters(net), path)
    try:  # recorded in the folder's manifest: the next run may replace it, a user's file never
        with output_path(path, what="run file") as tmp:
            net.save_parameters(tmp)
    except (OSError, OutputError, mx.base.MXNetError) as exc:  # OutputError: a full disk
        raise CheckpointError("could not write %s: %s" % (path, error_line(exc))) from exc


def _remove(path):
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.remove(path)


def save_checkpoint(run_dir, net, trainer, epoch, interrupted=False, keep=0):
    """Save the state after `epoch` finished epochs; returns the checkpoint folder.

    An interrupted run's state (mid-epoch weights) gets its own folder, so it never replaces
    the clean checkpoint of the same epoch. Non-finite parameters raise NonFiniteParameters
    and a failed write a CheckpointError; either way the previous checkpoints and `last` are
    untouched and no temporary folder remains. `keep` > 0 then deletes all but the newest
    `keep` clean checkpoints (and interrupted ones they supersede)."""
    root = os.path.join(run_dir, "checkpoints")
    name = "epoch_%04d" % epoch + ("_interrupted" if interrupted else "")
    final = os.path.join(root, name)
    arrays, optimizer_meta = optimizer_arrays(trainer)
    # Adam's second moment can overflow while the weights stay finite: check both.
    _refuse_non_finite(non_finite_parameters(net) + non_finite_arrays(
        ("optimizer state " + key, array) for key, array in arrays.items()), "checkpoint " + final)
    tmp, old = final + ".tmp", final + ".old"
    placed = False
    try:
        _remove(tmp)
        os.makedirs(tmp)
        net.save_parameters(os.path.join(tmp, PARAMS_FILE))
        mx.nd.save(os.path.join(tmp, OPTIMIZER_FILE), arrays)
        state = {"epoch": epoch, "interrupted": interrupted, "learning_rate": trainer.learning_rate,
                 "optimizer": optimizer_meta, "loss_scaler": loss_scaler_state(trainer),
                 "files": {f: _file_digest(os.path.join(tmp, f)) for f in (PARAMS_FILE, OPTIMIZER_FILE)}}
        with open(os.path.join(tmp, STATE_FILE), "w") as f:
            json.dump(state, f, indent=1)
        # A same-named earlier folder (a re-run epoch) is moved aside, not deleted, until the
        # new one and the pointer are in place.
        _remove(old)
        if os.path.exists(final):
            os.replace(final, old)
        os.replace(tmp, final)
        placed = True
        with atomic_path(os.path.join(root, "last")) as pointer_tmp, open(pointer_tmp, "w") as f:
            f.write(name + "\n")
    except BaseException as exc:  # Ctrl-C too: no temporary folder stays behind
        for path in (tmp,) + ((final,) if placed else ()):
            _remove(path)
        if os.path.exists(old):  # put the earlier folder back
            os.replace(old, final)
        if not isinstance(exc, (OSError, OutputError, mx.base.MXNetError)):
            raise
        raise CheckpointError("could not write checkpoint %s (%s); the earlier checkpoints are "
                              "intact" % (final, error_line(exc))) from exc
    _remove(old)
    if keep > 0 and not interrupted:
        _prune(root, epoch, keep)
    return final


def _prune(root, epoch, keep):
    """Delete clean checkpoints older than the newest `keep`, and interrupted ones older than
    `epoch` (their mid-epoch weights are superseded by the clean checkpoint just written)."""
    names = list_checkpoints(os.path.dirname(root))
    clean = [n for n in names if not n.endswith("_interrupted")]
    stale = clean[:-keep] + [n for n in names if n.endswith("_interrupted")
                             and int(_NAME_RE.match(n).group(1)) < epoch]
    for name in stale:
        folder = os.path.join(root, name)
        # Only the checkpoint's own files and outputs the package recorded there (an
        # evaluation of it) go with it: a folder holding anything else is kept.
        foreign = [f for f in sorted(os.listdir(folder))
                   if f not in (PARAMS_FILE, OPTIMIZER_FILE, STATE_FILE, OUTPUTS_MANIFEST)
                   and not is_ours(os.path.join(folder, f))]
        if foreign:
            logger.info("kept %s: it holds files the package did not write (%s)"
                        % (folder, ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")))
            continue
        shutil.rmtree(folder, ignore_errors=True)


def list_checkpoints(run_dir):
    """Names of a run's checkpoint folders, oldest first (epoch_0001 < epoch_0001_interrupted
    < epoch_0002: an interrupted checkpoint holds weights from inside the next epoch)."""
    root = os.path.join(run_dir, "checkpoints")
    if not os.path.isdir(root):
        return []
    return sorted((n for n in os.listdir(root) if _NAME_RE.match(n)),
                  key=lambda n: (int(_NAME_RE.match(n).group(1)), n))


def last_checkpoint(run_dir):
    """The folder of the newest checkpoint of a run (the `last` pointer, else the newest
    folder), or None if it has none."""
    pointer = os.path.join(run_dir, "checkpoints", "last")
    if os.path.isfile(pointer):
        with open(pointer) as f:
            folder = os.path.join(run_dir, "checkpoints", f.read().strip())
        if os.path.isdir(folder):
            return folder
    names = list_checkpoints(run_dir)
    return os.path.join(run_dir, "checkpoints", names[-1]) if names else None


def verify_checkpoint(folder):
    """The state dict of a checkpoint whose files are all present and intact; else
    CheckpointError saying what is missing or damaged."""
    for fname in (PARAMS_FILE, OPTIMIZER_FILE, STATE_FILE):
        if not os.path.isfile(os.path.join(folder, fname)):
            raise CheckpointError("checkpoint %s is incomplete: %s is missing" % (folder, fname))
    try:
        with open(os.path.join(folder, STATE_FILE)) as f:
            state = json.load(f)
        if (not isinstance(state["epoch"], int) or "layout" not in state["optimizer"]
                or set(state["files"]) != {PARAMS_FILE, OPTIMIZER_FILE}
                or "loss_scaler" not in state or "learning_rate" not in state):
            raise ValueError("no epoch, optimizer layout, file digests, loss scaler or lr")
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError("checkpoint %s is damaged: %s is not a complete state file (%s)"
                              % (folder, STATE_FILE, error_line(exc))) from exc
    for fname, expected in state["files"].items():
        found = _file_digest(os.path.join(folder, fname))
        if found != expected:
            raise CheckpointError("checkpoint %s is damaged: %s has %d bytes%s, expected %d"
                                  % (folder, fname, found["bytes"],
                                     " and another SHA-256" if found["bytes"] == expected["bytes"]
                                     else "", expected["bytes"]))
    return state


def find_resumable(run_dir):
    """(folder, state) of the newest intact checkpoint of a run and the list of (folder,
    reason) of newer damaged ones it passed over; (None, None, damaged) when none is intact."""
    damaged = []
    for name in reversed(list_checkpoints(run_dir)):
        folder = os.path.join(run_dir, "checkpoints", name)
        try:
            return folder, verify_checkpoint(folder), damaged
        except CheckpointError as exc:
            damaged.append((folder, str(exc)))
    return None, None, damaged


def load_checkpoint(folder, net, trainer, ctx, state=None):
    """Load a checkpoint's parameters and optimizer state into `net`/`trainer`, after verifying
    it (unless `state`, what verify_checkpoint returned for it, is given); returns the state."""
    state = state or verify_checkpoint(folder)
    try:
        net.load_parameters(os.path.join(folder, PARAMS_FILE), ctx=ctx)
    except (AssertionError, mx.base.MXNetError, ValueError) as exc:
        raise CheckpointError("checkpoint %s does not fit the model of this config (was it "
                              "trained with other MODEL.* settings?): %s"
                              % (folder, error_line(exc))) from exc
    try:
        arrays = mx.nd.load(os.path.join(folder, OPTIMIZER_FILE))
    except mx.base.MXNetError as exc:
        raise CheckpointError("checkpoint %s is damaged: %s cannot be read (%s)"
                              % (folder, OPTIMIZER_FILE, error_line(exc))) from exc
    restore_optimizer(trainer, arrays, state["optimizer"], folder)
    restore_loss_scaler(trainer, state["loss_scaler"], folder)
    trainer.set_learning_rate(state["learning_rate"])
    return state


def remove_stale_checkpoint_temporaries(run_dir):
    """Tidy what a checkpoint write stopped by kill -9 left in checkpoints/: its temporary
    folder and pointer file are deleted, an earlier folder it had moved aside (*.old) is put
    back unless the new one was already in place. Returns the paths removed or restored."""
    root = os.path.join(run_dir, "checkpoints")
    names = os.listdir(root) if os.path.isdir(root) else []
    tidied = []
    for name in names:
        match = _TEMPORARY_RE.match(name)
        if not match:
            continue
        path = os.path.join(root, name)
        if match.group(2) == ".old" and not os.path.exists(os.path.join(root, match.group(1))):
            os.replace(path, os.path.join(root, match.group(1)))
        else:
            _remove(path)
        tidied.append(path)
    return tidied


def _move_aside(folder):
    """Rename a damaged checkpoint to *.damaged (*.damaged2, ... if an earlier resume already
    moved one aside); it is kept for inspection and never loaded again."""
    aside = folder + ".damaged"
    for n in range(2, 1000):
        if not os.path.exists(aside):
            break
        aside = "%s.damaged%d" % (folder, n)
    os.replace(folder, aside)
    return aside


def repair_and_find_resumable(run_dir, repair=True):
    """(folder, state) of the newest intact checkpoint, (None, None) if the run has none.

    With `repair` (the process that writes the run), first tidy what an interrupted write
    left (remove_stale_checkpoint_temporaries), then rename each newer damaged checkpoint *.damaged,
    logging why. Every checkpoint damaged is a CheckpointError."""
    if repair:
        for path in remove_stale_checkpoint_temporaries(run_dir):
            logger.info("tidied %s, left by a checkpoint write that was stopped", path)
    folder, state, damaged = find_resumable(run_dir)
    for bad, reason in damaged if repair else ():
        logger.info("%s; moved aside to %s", reason, _move_aside(bad))
    if folder is None and damaged:
        raise CheckpointError("--resume: every checkpoint in %s is damaged (renamed *.damaged); "
                              "train without --resume into a new OUTPUT_DIR to start over"
                              % os.path.join(run_dir, "checkpoints"))
    return folder, state
