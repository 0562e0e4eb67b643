"""Atomic checkpoints: parameters, optimizer state and progress, and resuming from them.

A checkpoint is a folder `checkpoints/epoch_XXXX/` with `model.params`, `optimizer.nd` and
`state.json`. It is written under a temporary name and renamed, then the `last` pointer is
replaced, so an interrupted write never leaves a half checkpoint behind `last`.
Optimizer state is stored as NDArrays plus JSON (not `Trainer.save_states`, which pickles):
loading a checkpoint never unpickles anything.
"""
import json
import os
import shutil

import mxnet as mx

STATE_FILE = "state.json"
PARAMS_FILE = "model.params"
OPTIMIZER_FILE = "optimizer.nd"


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete or does not fit the model."""


def _optimizer_arrays(trainer):
    """Flatten the first device's optimizer states to {"idx:j": NDArray} and their layout."""
    updater = trainer._updaters[0]
    arrays, layout = {}, {}
    for idx, state in updater.states.items():
        parts = [] if state is None else list(state) if isinstance(state, (tuple, list)) else [state]
        kind = "none" if state is None else "tuple" if isinstance(state, (tuple, list)) else "array"
        layout[str(idx)] = [kind, len(parts)]
        for j, part in enumerate(parts):
            arrays["%s:%d" % (idx, j)] = part
    optimizer = trainer._optimizer
    counts = {str(k): v for k, v in optimizer._index_update_count.items()}
    return arrays, {"name": type(optimizer).__name__, "layout": layout,
                    "index_update_count": counts, "num_update": optimizer.num_update}


def _restore_optimizer(trainer, arrays, meta, folder):
    """Put saved optimizer states on every device's updater and restore the update counts.

    Uses Trainer/Optimizer internals (_updaters, _all_index_update_counts) of MXNet 1.9, which
    has no public non-pickle API for them; tests/test_checkpoint.py guards the round trip."""
    current = type(trainer._optimizer).__name__
    if meta["name"] != current:
        raise CheckpointError("checkpoint %s holds %s optimizer state, but this config trains "
                              "with %s (SOLVER.OPTIMIZER)" % (folder, meta["name"], current))
    for key, array in arrays.items():
        idx = int(key.split(":")[0])
        if idx >= len(trainer._params) or array.shape != trainer._params[idx].shape:
            raise CheckpointError("checkpoint %s: optimizer state %s does not fit this model's "
                                  "parameters" % (folder, key))
    for updater, ctx in zip(trainer._updaters, trainer._contexts):
        for idx, (kind, num_parts) in meta["layout"].items():
            parts = [arrays["%s:%d" % (idx, j)].as_in_context(ctx) for j in range(num_parts)]
            state = None if kind == "none" else parts[0] if kind == "array" else tuple(parts)
            updater.states[int(idx)] = state
            updater.states_synced[int(idx)] = True
    optimizer = trainer._optimizer
    counts = {int(k): v for k, v in meta["index_update_count"].items()}
    for device_id in {ctx.device_id for ctx in trainer._contexts} | {0}:
        optimizer._all_index_update_counts[device_id] = dict(counts)
    optimizer._index_update_count = optimizer._all_index_update_counts[trainer._contexts[0].device_id]
    optimizer.num_update = meta["num_update"]


def save_checkpoint(run_dir, net, trainer, epoch, interrupted=False):
    """Save the state after `epoch` finished epochs; returns the checkpoint folder.

    An interrupted run's state (mid-epoch weights) gets its own folder, so it never replaces
    the clean checkpoint of the same epoch."""
    root = os.path.join(run_dir, "checkpoints")
    name = "epoch_%04d" % epoch + ("_interrupted" if interrupted else "")
    final = os.path.join(root, name)
    tmp = final + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    net.save_parameters(os.path.join(tmp, PARAMS_FILE))
    arrays, optimizer_meta = _optimizer_arrays(trainer)
    mx.nd.save(os.path.join(tmp, OPTIMIZER_FILE), arrays)
    state = {"epoch": epoch, "interrupted": interrupted, "learning_rate": trainer.learning_rate,
             "optimizer": optimizer_meta}
    with open(os.path.join(tmp, STATE_FILE), "w") as f:
        json.dump(state, f, indent=1)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    pointer_tmp = os.path.join(root, "last.tmp")
    with open(pointer_tmp, "w") as f:
        f.write(name + "\n")
    os.replace(pointer_tmp, os.path.join(root, "last"))
    return final


def last_checkpoint(run_dir):
    """The folder of the newest complete checkpoint of a run, or None if it has none."""
    pointer = os.path.join(run_dir, "checkpoints", "last")
    if not os.path.isfile(pointer):
        return None
    with open(pointer) as f:
        return os.path.join(run_dir, "checkpoints", f.read().strip())


def load_checkpoint(folder, net, trainer, ctx):
    """Load parameters and optimizer state into `net`/`trainer`; returns the state dict."""
    for fname in (PARAMS_FILE, OPTIMIZER_FILE, STATE_FILE):
        if not os.path.isfile(os.path.join(folder, fname)):
            raise CheckpointError("checkpoint %s is incomplete: %s is missing" % (folder, fname))
    try:
        net.load_parameters(os.path.join(folder, PARAMS_FILE), ctx=ctx)
    except (AssertionError, mx.base.MXNetError) as exc:
        raise CheckpointError("checkpoint %s does not fit the model of this config: %s"
                              % (folder, str(exc).splitlines()[0])) from exc
    with open(os.path.join(folder, STATE_FILE)) as f:
        state = json.load(f)
    _restore_optimizer(trainer, mx.nd.load(os.path.join(folder, OPTIMIZER_FILE)),
                       state["optimizer"], folder)
    trainer.set_learning_rate(state["learning_rate"])
    return state
