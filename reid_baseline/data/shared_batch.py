"""Batches handed from loader workers to the main process in /dev/shm files, not the pool's pipe.

A 19 MB float32 batch through a 64 KB pipe is hundreds of reads and context switches: measured
80 ms of main-process CPU per batch of 32 on a loaded 2-core machine. Here the worker writes
the batch into a shared file mapping and sends its name; the main process maps it, unlinks the
name and wraps the pages without a copy (MXNet's own cpu_shared transfer needs MXNet ops in the
workers). Written with os + mmap because multiprocessing.shared_memory's resource tracker
mishandles segments made in one process and unlinked in another (bpo-38119).
"""
import fcntl
import glob
import itertools
import mmap
import os
import re
import tempfile

import numpy as np

SHM_DIR = "/dev/shm"
_counter = itertools.count()
_LOCK = "lock"  # each prefix's lock file: prefix + _LOCK (mkstemp's suffixes are 8 characters)
_locks = {}  # prefix -> its open lock file, held while the loader lives


def shared_prefix():
    """A file name prefix unique to one loader of this process (None without /dev/shm), with
    its lock file held until remove_unreceived (or the end of the process and its workers)."""
    if not os.path.isdir(SHM_DIR):
        return None
    remove_orphans()
    prefix = "reid_batch_%d_%d_" % (os.getpid(), next(_counter))
    # Locked under a temporary name, then renamed: remove_orphans never sees it unlocked.
    lock = open(os.path.join(SHM_DIR, prefix + _LOCK + ".new"), "w")
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.replace(lock.name, os.path.join(SHM_DIR, prefix + _LOCK))
    _locks[prefix] = lock
    return prefix


def remove_orphans():
    """Delete the batch files of loaders that are gone (killed with -9, so remove_unreceived
    never ran): /dev/shm is RAM and would otherwise fill up run by run. A loader is gone when
    its lock is free; the lock, not a pid, also works across PID namespaces sharing /dev/shm."""
    for name in os.listdir(SHM_DIR):
        match = re.match(r"(reid_batch_\d+_\d+_)%s$" % _LOCK, name)
        if not match:
            continue
        try:
            with open(os.path.join(SHM_DIR, name)) as lock:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free: its loader is gone
                remove_unreceived(match.group(1))
        except OSError:  # held (BlockingIOError), or removed meanwhile: not an orphan
            pass


class SharedArrayRef(object):
    """What the worker sends: the file's path, the array's shape and dtype."""
    __slots__ = ("path", "shape", "dtype")

    def __init__(self, path, shape, dtype):
        self.path, self.shape, self.dtype = path, shape, dtype

    def __getstate__(self):
        return self.path, self.shape, self.dtype

    def __setstate__(self, state):
        self.path, self.shape, self.dtype = state


def new_shared_array(prefix, shape, dtype=np.float32):
    """(writable array mapped on a new /dev/shm file, its SharedArrayRef); worker side."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    fd, path = tempfile.mkstemp(prefix=prefix, dir=SHM_DIR)
    try:
        # Allocated now: a full /dev/shm is an error here, not a SIGBUS in the worker later.
        os.posix_fallocate(fd, 0, nbytes)
        mapping = mmap.mmap(fd, nbytes)
    finally:
        os.close(fd)
    array = np.frombuffer(mapping, dtype).reshape(shape)  # keeps the mapping alive
    return array, SharedArrayRef(path, tuple(shape), np.dtype(dtype).str)


def open_shared_array(ref):
    """The array of `ref`, mapped without a copy; the file's name is removed at once, so its
    memory is freed with the array. Main-process side."""
    fd = os.open(ref.path, os.O_RDWR)
    try:
        mapping = mmap.mmap(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)
        os.unlink(ref.path)
    return np.frombuffer(mapping, np.dtype(ref.dtype)).reshape(ref.shape)


def remove_unreceived(prefix):
    """Delete batches a stopped loader never received (e.g. after an error or Ctrl-C), and its
    lock file."""
    lock = _locks.pop(prefix, None)
    if lock is not None:
        lock.close()
    for path in glob.glob(os.path.join(SHM_DIR, glob.escape(prefix) + "*")):
        try:
            os.unlink(path)
        except OSError:
            pass
