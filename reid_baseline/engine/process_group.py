"""Training on several machines with MXNet's parameter server (SOLVER.KVSTORE dist_sync or
dist_device_sync): what the engine asks, so it never reads the DMLC_* environment itself.

A dist_* kvstore makes train.py one training process of a job started by MXNet's launcher (a
scheduler, servers and the training processes, MXNet's "workers", that find each other through
DMLC_* variables). `ProcessGroup` holds this process's kvstore, rank and the number of training
processes, says whether it writes the run files (rank 0 alone), and does the few collective
steps the engine needs beyond the Trainer's gradient sums. A run on one machine is a group of
one whose collective steps do nothing.

Collective steps are called by every process at the same point of the loop (same iteration
counts everywhere), else the job waits forever; the launcher stops a job whose process fails.
"""
import contextlib
import ctypes

import mxnet as mx
import numpy as np
from mxnet import autograd

from ..environment import check_launcher_env, device_batch, is_distributed
from ..errors import CheckpointError, ConfigError

# The engine's own sums and their sizes (running_stats: all BatchNorm statistics). The Trainer
# keys its parameters 0 .. P-1; these get P, P+1, ... (MXNet forbids mixing int and str keys).
_SUMS = ("metrics", "resume", "running_stats")


def build_process_group(cfg, environ=None):
    """This process's place in the training job: alone (kvstore device, local, nccl), or one
    training process of a dist_* job, whose kvstore connects to the scheduler (waiting for every other
    process of the job to start)."""
    kvstore = cfg.SOLVER.KVSTORE
    check_launcher_env(kvstore, environ)
    if kvstore == "nccl" and not mx.runtime.Features().is_enabled("NCCL"):
        raise ConfigError("SOLVER.KVSTORE nccl needs an MXNet built with NCCL (the CUDA wheel "
                          "mxnet-cu112), which this one is not; use device")
    if not is_distributed(kvstore):
        return ProcessGroup(kvstore)
    return ProcessGroup(kvstore, mx.kv.create(kvstore))


class ProcessGroup(object):
    """The training processes of a job, from the point of view of one of them."""

    def __init__(self, kvstore="device", kv=None):
        self._kv = kv
        self.kvstore = kv if kv is not None else kvstore  # what gluon.Trainer gets
        self.rank = kv.rank if kv is not None else 0
        self.num_processes = kv.num_workers if kv is not None else 1
        self._keys = {}

    @property
    def is_writer(self):
        """Whether this process writes the run files and evaluates: rank 0 alone."""
        return self.rank == 0

    @property
    def log_file(self):
        """This process's log in OUTPUT_DIR: train.log for rank 0, worker_<rank>.log else."""
        return "train.log" if self.is_writer else "worker_%d.log" % self.rank

    def __str__(self):
        if self._kv is None:
            return "one process"
        return "worker %d of %d (kvstore %s)" % (self.rank, self.num_processes, self._kv.type)

    def _pushpull(self, name, array):
        """Sum `array` over the processes, in place."""
        # MXNet 1.9's dist kvstore at times never completes a pushpull issued while other
        # transfers (the last step's gradients) are under way: 7 two-process runs in 8 hung at
        # the last epoch's BatchNorm sum, 1 in 9 still when only waiting for `array`. Our
        # sums are rare (per log period and epoch): they start from a quiet engine.
        mx.nd.waitall()
        self._kv.pushpull(self._keys[name], array, out=array)

    def sum(self, name, values):
        """The sum over the processes of each number in `values` (float64 numpy array); the
        values themselves on one machine. Every process gets the same result."""
        values = np.asarray(values, dtype=np.float64)
        if self._kv is None:
            return values
        array = mx.nd.array(values, dtype=np.float64)
        self._pushpull(name, array)
        return array.asnumpy()

    def average_running_stats(self, net):
        """Average the BatchNorm running statistics (parameters without gradient) over the
        processes, after the engine averaged them over this process's devices, so that every
        process evaluates and saves the same model. One sum of their concatenation (one round
        trip to the servers, not one per array)."""
        if self._kv is None:
            return
        stats = _running_stats(net)
        flat = mx.nd.concat(*[p.data().reshape(-1) for p in stats], dim=0)
        self._pushpull("running_stats", flat)
        flat /= self.num_processes
        offset = 0
        for param in stats:
            size = int(np.prod(param.shape))
            param.set_data(flat[offset:offset + size].reshape(param.shape))
            offset += size

    def start_together(self, net, trainer, completed, cfg, ctx):
        """Before the first step: check that every process resumed the same epoch, then give
        every process rank 0's parameters (the Trainer's own broadcast).

        MXNet 1.9's Trainer broadcasts rank 0's parameters only at its first step, after the
        first forward pass has used each process's own; shapes Gluon infers at the first
        forward (random initialisation) are completed here by a forward pass of zeros in
        training mode, which changes no parameter (no backward pass, no update)."""
        if self._kv is None:
            return
        if any(p._deferred_init for p in net.collect_params().values()):
            with autograd.record():
                net(mx.nd.zeros((device_batch(cfg), 3, cfg.INPUT.HEIGHT, cfg.INPUT.WIDTH),
                                ctx=ctx[0]))
        trainer._init_kvstore()  # what Trainer.step would do first (MXNet 1.9 internals)
        trainer._init_params()
        # The engine's sums are set up here, all at once, while no other transfer is under way.
        sizes = {"metrics": 3, "resume": 2,
                 "running_stats": sum(int(np.prod(p.shape)) for p in _running_stats(net))}
        self._keys = {name: len(trainer._params) + i for i, name in enumerate(_SUMS)}
        self._kv.init([self._keys[n] for n in _SUMS],
                      [mx.nd.zeros(sizes[n], dtype=np.float32 if n == "running_stats" else np.float64)
                       for n in _SUMS])
        # All equal iff W * sum(e^2) == sum(e)^2: one sum tells every process the same verdict.
        total, squares = self.sum("resume", [completed, completed * completed])
        if self.num_processes * squares != total * total:
            raise CheckpointError("--resume: the workers found checkpoints of different epochs "
                                  "(this one: %d finished epochs); OUTPUT_DIR must be one folder "
                                  "all workers see (a shared file system across machines)"
                                  % completed)

    @contextlib.contextmanager
    def exit_at_once_on_error(self):
        """On any exception (an error, Ctrl-C), let this process exit without waiting for the
        other processes: MXNet's kvstore waits for all of them at exit, but they are blocked in
        the next gradient sum and never come, so the process would hang instead of exiting
        with its error (and the launcher would not know to stop the job)."""
        try:
            yield
        except BaseException:
            if self._kv is not None:
                mx.base.check_call(mx.base._LIB.MXKVStoreSetBarrierBeforeExit(
                    self._kv.handle, ctypes.c_int(0)))
            raise


def _running_stats(net):
    """The BatchNorm running statistics of `net`: its parameters without gradient."""
    return [p for p in net.collect_params().values() if p.grad_req == "null"]


LOCAL = ProcessGroup()  # a process training alone
