"""A trainer's optimizer state as NDArrays plus JSON, and back (checkpoint.py stores them).

Not `Trainer.save_states`, which pickles: loading a checkpoint never unpickles anything. MXNet
1.9 has no public non-pickle API for the states and update counts, so this reads and writes
Trainer/Optimizer internals (_updaters, _all_index_update_counts); tests/test_checkpoint.py
guards the round trip.
"""
from ..errors import CheckpointError


def optimizer_arrays(trainer):
    """({"idx:j": NDArray}, meta): the first device's optimizer states flattened, and the
    JSON-able meta (optimizer name, each state's layout, update counts) to rebuild them."""
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


def restore_optimizer(trainer, arrays, meta, folder):
    """Put saved optimizer states (optimizer_arrays' of checkpoint `folder`) on every device's
    updater and restore the update counts; a CheckpointError when they do not fit."""
    current = type(trainer._optimizer).__name__
    if meta["name"] != current:
        raise CheckpointError("checkpoint %s holds %s optimizer state, but this config trains "
                              "with %s (SOLVER.OPTIMIZER)" % (folder, meta["name"], current))
    for key, array in arrays.items():
        idx = int(key.split(":")[0])
        if idx >= len(trainer._params) or array.shape != trainer._params[idx].shape:
            raise CheckpointError("checkpoint %s: optimizer state %s does not fit this model's "
                                  "parameters" % (folder, key))
    for updater, ctx in zip(trainer._updaters, trainer._contexts, strict=True):
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
