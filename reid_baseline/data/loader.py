"""Gluon Datasets and DataLoaders over Market-1501 records."""
import os
import random

import mxnet as mx
import numpy as np
from mxnet.gluon.data import DataLoader, Dataset

from .market1501 import DatasetError, read_image
from .transforms import build_test_transform, build_train_transform


class ReIDImageDataset(Dataset):
    """(image tensor, label) for each record; label is the record's pid.

    MXNet's DataLoader forks workers with identical random states and has no worker_init_fn,
    so each process reseeds Python, NumPy and MXNet once, from `seed` and its pid."""

    def __init__(self, records, transform, seed=0):
        self._records = list(records)
        self._transform = transform
        self._seed = seed
        self._seeded_pid = os.getpid()

    def __len__(self):
        return len(self._records)

    def __getitem__(self, idx):
        if os.getpid() != self._seeded_pid:
            self._seeded_pid = os.getpid()
            worker_seed = (self._seed * 1000003 + self._seeded_pid) % (2 ** 31)
            random.seed(worker_seed)
            np.random.seed(worker_seed)
            mx.random.seed(worker_seed)
        record = self._records[idx]
        return self._transform(read_image(record.path)), np.int32(record.pid)


def build_train_loader(cfg, records):
    """Shuffled batches of SOLVER.BATCH_SIZE; the last incomplete batch is dropped as in the
    reference (a batch of 1 would also break BatchNorm)."""
    if len(records) < cfg.SOLVER.BATCH_SIZE:
        raise DatasetError("the training split has %d images, fewer than SOLVER.BATCH_SIZE=%d"
                           % (len(records), cfg.SOLVER.BATCH_SIZE))
    dataset = ReIDImageDataset(records, build_train_transform(cfg), seed=cfg.SOLVER.SEED)
    return DataLoader(dataset, batch_size=cfg.SOLVER.BATCH_SIZE, shuffle=True,
                      last_batch="discard", num_workers=cfg.DATALOADER.NUM_WORKERS)


def build_test_loader(cfg, records):
    """Batches of TEST.BATCH_SIZE in record order; every image is kept."""
    dataset = ReIDImageDataset(records, build_test_transform(cfg), seed=cfg.SOLVER.SEED)
    return DataLoader(dataset, batch_size=cfg.TEST.BATCH_SIZE, shuffle=False,
                      last_batch="keep", num_workers=cfg.DATALOADER.NUM_WORKERS)
