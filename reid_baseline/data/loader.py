"""Gluon Datasets and DataLoaders over ReID records.

Training runs are reproducible: the shuffle of each epoch and the random augmentation of each
image are functions of (SOLVER.SEED, epoch, image index) only, so the same config gives the same
run whatever DATALOADER.NUM_WORKERS is and whichever worker decodes an image, and a resumed run
sees the same epochs as an uninterrupted one.

Workers run no MXNet op (in a forked worker each small op waits for a time slice of MXNet's
OpenMP threads): they decode (data/images.py) and resize with OpenCV and build whole numpy
batches (data/transforms.py); the main process wraps each batch as an NDArray without a copy.
"""
import weakref

import mxnet as mx
import numpy as np
from mxnet.gluon.data import DataLoader, Dataset, Sampler

from ..errors import DatasetError
from . import shared_batch
from .cache import build_image_cache
from .images import read_image
from .transforms import batch_shape, build_test_transform, build_train_transform, resize_image


class EpochShuffleSampler(Sampler):
    """A permutation of the dataset drawn from (seed, epoch), yielding keys `epoch * n + index`.

    The key carries the epoch into the worker processes (MXNet's DataLoader copies the dataset
    into them once and has no worker_init_fn), where ReIDImageDataset seeds the augmentation
    of that image from it.

    The permutation is cut into whole batches of `batch_size` (the rest is dropped, as the
    reference drops the last incomplete batch). With `num_shards` > 1 (the workers of a
    distributed job, which share the seed) this sampler yields shard `shard`'s part of every
    batch: part r is images [r * p, (r + 1) * p) of each batch of p * num_shards. So the shards
    are disjoint, equally long (dist_sync needs as many steps on every worker), and together
    make the very batches, and augmentations, of one process."""

    def __init__(self, length, seed, batch_size=1, num_shards=1, shard=0):
        if batch_size % num_shards or not 0 <= shard < num_shards:
            raise ValueError("shard %d of %d of batches of %d" % (shard, num_shards, batch_size))
        self._length, self._seed, self.epoch = length, seed, 0
        self._batch, self._shards, self._shard = batch_size, num_shards, shard

    def __iter__(self):
        order = np.random.RandomState([self._seed, self.epoch]).permutation(self._length)
        steps, part = self._length // self._batch, self._batch // self._shards
        mine = order[:steps * self._batch].reshape(steps, self._shards, part)[:, self._shard]
        return iter((self.epoch * self._length + mine.ravel()).tolist())

    def __len__(self):
        return self._length // self._batch * (self._batch // self._shards)


class ReIDImageDataset(Dataset):
    """(uint8 HWC image resized to height x width, pid, key) for item `key`: image `key % len`.

    The key goes with the image to the batch transform, which draws the image's augmentation
    from (seed, key). `cache` (data/cache.py) keeps the "decoded" or the "resized" image."""

    def __init__(self, records, height, width, cache=None, cache_mode="none"):
        self._records = list(records)
        self._size = (height, width)
        self._cache, self._cache_resized = cache, cache_mode == "resized"

    def __len__(self):
        return len(self._records)

    def __getitem__(self, key):
        index = key % len(self._records)
        img = self._cache.get(index) if self._cache is not None else None
        if img is None:
            img = read_image(self._records[index].path)
            if self._cache is not None and not self._cache_resized:
                self._cache.put(index, img)
            img = resize_image(img, *self._size)
            if self._cache_resized:
                self._cache.put(index, img)
        elif not self._cache_resized:
            img = resize_image(img, *self._size)
        return img, self._records[index].pid, key


class BatchifyImages(object):
    """Worker side: samples -> (float32 NCHW batch, int32 labels) by `transform`.

    `transform(images, keys, out)`, or `transform(images, out)` with `with_keys=False`. With a
    `shared_prefix` the batch is written into a /dev/shm file (data/shared_batch.py)."""

    def __init__(self, transform, with_keys=True):
        self._transform, self._with_keys = transform, with_keys
        self.shared_prefix = None

    def __call__(self, samples):
        images, labels, keys = zip(*samples, strict=True)
        out, ref = None, None
        if self.shared_prefix is not None:
            out, ref = shared_batch.new_shared_array(self.shared_prefix, batch_shape(images))
        args = (images, keys) if self._with_keys else (images,)
        data = self._transform(*args, out=out)
        return ref if ref is not None else data, np.array(labels, np.int32)


class NDArrayBatchLoader(DataLoader):
    """A DataLoader of BatchifyImages batches, handed over as NDArrays sharing their memory;
    with worker processes the batches come through /dev/shm (data/shared_batch.py)."""

    def __init__(self, dataset, **kwargs):
        batchify_fn = kwargs["batchify_fn"]
        if kwargs.get("num_workers", 0) > 0:
            batchify_fn.shared_prefix = shared_batch.shared_prefix()
            if batchify_fn.shared_prefix is not None:
                weakref.finalize(self, shared_batch.remove_unreceived, batchify_fn.shared_prefix)
        super().__init__(dataset, **kwargs)

    def __iter__(self):
        for data, labels in super().__iter__():
            if isinstance(data, shared_batch.SharedArrayRef):
                data = shared_batch.open_shared_array(data)
            yield (mx.nd.from_numpy(data, zero_copy=True),
                   mx.nd.from_numpy(labels, zero_copy=True))


class TrainLoader(NDArrayBatchLoader):
    """Shuffled training batches; call set_epoch(e) before iterating epoch e."""

    def __init__(self, dataset, batch_size, seed, num_workers, batchify_fn=None, num_shards=1,
                 shard=0):
        """`batch_size` is the global batch; shard `shard` of `num_shards` gets its part of
        each (see EpochShuffleSampler)."""
        self._epoch_sampler = EpochShuffleSampler(len(dataset), seed, batch_size, num_shards, shard)
        super().__init__(dataset, batch_size=batch_size // num_shards, sampler=self._epoch_sampler,
                         last_batch="discard", num_workers=num_workers,
                         batchify_fn=batchify_fn)

    def set_epoch(self, epoch):
        """Select the shuffle and augmentation of `epoch` (0-based)."""
        self._epoch_sampler.epoch = epoch


def build_train_loader(cfg, records, num_shards=1, shard=0):
    """Shuffled batches of SOLVER.BATCH_SIZE; the last incomplete batch is dropped as in the
    reference (a batch of 1 would also break BatchNorm). Worker `shard` of a distributed job
    of `num_shards` workers gets its BATCH_SIZE / num_shards images of each batch."""
    if len(records) < cfg.SOLVER.BATCH_SIZE:
        raise DatasetError("the training split has %d images, fewer than SOLVER.BATCH_SIZE=%d"
                           % (len(records), cfg.SOLVER.BATCH_SIZE))
    size = (cfg.INPUT.HEIGHT, cfg.INPUT.WIDTH)
    # Made here, before TrainLoader forks its workers: see data/cache.py.
    cache = build_image_cache(cfg.DATALOADER.CACHE, [r.path for r in records], *size)
    dataset = ReIDImageDataset(records, *size, cache=cache, cache_mode=cfg.DATALOADER.CACHE)
    return TrainLoader(dataset, cfg.SOLVER.BATCH_SIZE, cfg.SOLVER.SEED, cfg.DATALOADER.NUM_WORKERS,
                       batchify_fn=BatchifyImages(build_train_transform(cfg)),
                       num_shards=num_shards, shard=shard)


def build_test_loader(cfg, records, decoded=None):
    """Batches of TEST.BATCH_SIZE in record order; every image is kept. `decoded` (optional):
    an object whose get(i) gives record i's image already decoded (HWC uint8 RGB) or None to
    read its file, and whose put() ignores what it is given (images held in memory)."""
    dataset = ReIDImageDataset(records, cfg.INPUT.HEIGHT, cfg.INPUT.WIDTH, cache=decoded,
                               cache_mode="decoded")
    return NDArrayBatchLoader(dataset, batch_size=cfg.TEST.BATCH_SIZE, shuffle=False,
                              last_batch="keep", num_workers=cfg.DATALOADER.NUM_WORKERS,
                              batchify_fn=BatchifyImages(build_test_transform(cfg), False))
