"""Gluon Datasets and DataLoaders over ReID records.

Training runs are reproducible: the shuffle of each epoch and the random augmentation of each
image are functions of (SOLVER.SEED, epoch, image index) only, so the same config gives the same
run whatever DATALOADER.NUM_WORKERS is and whichever worker decodes an image, and a resumed run
sees the same epochs as an uninterrupted one.
"""
import random

import numpy as np
from mxnet.gluon.data import DataLoader, Dataset, Sampler

from .market1501 import DatasetError, read_image
from .transforms import build_test_transform, build_train_transform


class EpochShuffleSampler(Sampler):
    """A permutation of the dataset drawn from (seed, epoch), yielding keys `epoch * n + index`.

    The key carries the epoch into the worker processes (MXNet's DataLoader copies the dataset
    into them once and has no worker_init_fn), where ReIDImageDataset seeds the augmentation
    of that image from it."""

    def __init__(self, length, seed):
        self._length, self._seed, self.epoch = length, seed, 0

    def __iter__(self):
        order = np.random.RandomState([self._seed, self.epoch]).permutation(self._length)
        return iter((self.epoch * self._length + order).tolist())

    def __len__(self):
        return self._length


class ReIDImageDataset(Dataset):
    """(image tensor, label) for each record; label is the record's pid.

    With `seed` set, item `key` is image `key % len` with Python's and NumPy's random state
    (what the GluonCV/MXNet augmentation blocks draw from) seeded from (seed, key)."""

    def __init__(self, records, transform, seed=None):
        self._records = list(records)
        self._transform = transform
        self._seed = seed

    def __len__(self):
        return len(self._records)

    def __getitem__(self, key):
        if self._seed is not None:
            random.seed("%d:%d" % (self._seed, key))  # a string seed is hashed: no collisions
            np.random.seed(random.getrandbits(32))
        record = self._records[key % len(self._records)]
        return self._transform(read_image(record.path)), np.int32(record.pid)


class TrainLoader(DataLoader):
    """Shuffled training batches; call set_epoch(e) before iterating epoch e."""

    def __init__(self, dataset, batch_size, seed, num_workers):
        self._epoch_sampler = EpochShuffleSampler(len(dataset), seed)
        super().__init__(dataset, batch_size=batch_size, sampler=self._epoch_sampler,
                         last_batch="discard", num_workers=num_workers)

    def set_epoch(self, epoch):
        """Select the shuffle and augmentation of `epoch` (0-based)."""
        self._epoch_sampler.epoch = epoch


def build_train_loader(cfg, records):
    """Shuffled batches of SOLVER.BATCH_SIZE; the last incomplete batch is dropped as in the
    reference (a batch of 1 would also break BatchNorm)."""
    if len(records) < cfg.SOLVER.BATCH_SIZE:
        raise DatasetError("the training split has %d images, fewer than SOLVER.BATCH_SIZE=%d"
                           % (len(records), cfg.SOLVER.BATCH_SIZE))
    dataset = ReIDImageDataset(records, build_train_transform(cfg), seed=cfg.SOLVER.SEED)
    return TrainLoader(dataset, cfg.SOLVER.BATCH_SIZE, cfg.SOLVER.SEED, cfg.DATALOADER.NUM_WORKERS)


def build_test_loader(cfg, records):
    """Batches of TEST.BATCH_SIZE in record order; every image is kept."""
    dataset = ReIDImageDataset(records, build_test_transform(cfg))
    return DataLoader(dataset, batch_size=cfg.TEST.BATCH_SIZE, shuffle=False,
                      last_batch="keep", num_workers=cfg.DATALOADER.NUM_WORKERS)
