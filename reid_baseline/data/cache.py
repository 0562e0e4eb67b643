"""DATALOADER.CACHE: decoded or resized training images kept in RAM after their first read.

The cache is one anonymous shared memory map made in the main process before the DataLoader
forks its workers (once per loader): every worker sees the same physical pages, so an image
decoded by any worker in epoch 1 is read from RAM by all of them afterwards and the memory is
held once whatever NUM_WORKERS is. Each image has a fixed slot; a worker writes the pixels, then
the slot's "filled" flag. Within an epoch each image is read once (the sampler draws a
permutation), and the next epoch's work is sent to the workers after every result of the
previous one came back, so a slot is never read while it is written.
"""
import mmap

import numpy as np
from PIL import Image

from ..errors import DatasetError

# The cache may take at most this share of MemAvailable: the rest is for the network, the
# loader's batches in flight and the rest of the machine.
_MAX_SHARE_OF_AVAILABLE = 0.8


def mem_available_bytes(meminfo="/proc/meminfo"):
    """MemAvailable of /proc/meminfo in bytes, or None where there is no such file."""
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def image_shapes(paths):
    """(height, width) of every image from its header only (Pillow reads no pixels)."""
    shapes = []
    for path in paths:
        try:
            with Image.open(path) as img:
                width, height = img.size
        except (OSError, ValueError) as err:
            raise DatasetError("%s: cannot read the image header (%s)" % (path, err)) from err
        shapes.append((height, width))
    return shapes


def cache_slot_bytes(mode, paths, height, width):
    """Bytes of each image's slot: its decoded size, or the network input size."""
    if mode == "resized":
        return np.full(len(paths), height * width * 3, np.int64)
    return np.array([h * w * 3 for h, w in image_shapes(paths)], np.int64)


def check_cache_fits(nbytes, num_images, mode, available=None):
    """Raise DatasetError when `nbytes` would not fit in the memory available."""
    available = mem_available_bytes() if available is None else available
    if available is not None and nbytes > _MAX_SHARE_OF_AVAILABLE * available:
        raise DatasetError(
            "DATALOADER.CACHE %s needs %.2f GB for %d training images but only %.2f GB are "
            "available (MemAvailable in /proc/meminfo; at most %d%% may be used): use "
            "DATALOADER.CACHE %s or none" % (
                mode, nbytes / 1e9, num_images, available / 1e9,
                100 * _MAX_SHARE_OF_AVAILABLE, "decoded" if mode == "resized" else "none"))


class SharedImageCache(object):
    """uint8 HWC images by index in shared memory; `get(i)` is None until `put(i, img)`.

    Must be created before the loader's worker processes are forked (see the module doc)."""

    def __init__(self, slot_bytes):
        slot_bytes = np.asarray(slot_bytes, np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(slot_bytes)])
        n = len(slot_bytes)
        # Flags and shapes first, pixels after them; pages are committed when written.
        self._header = 4 * n * 4  # int32 (filled, height, width, spare) per image
        self._map = mmap.mmap(-1, max(1, self._header + int(self._offsets[-1])),
                              flags=mmap.MAP_SHARED)
        self._meta = np.frombuffer(self._map, np.int32, count=4 * n).reshape(n, 4)
        self._pixels = np.frombuffer(self._map, np.uint8, offset=self._header)

    @property
    def nbytes(self):
        return self._header + int(self._offsets[-1])

    def get(self, index):
        filled, height, width, _ = self._meta[index]
        if not filled:
            return None
        start = self._offsets[index]
        return self._pixels[start:start + height * width * 3].reshape(height, width, 3)

    def put(self, index, img):
        start, end = self._offsets[index], self._offsets[index + 1]
        if img.nbytes != end - start:
            raise ValueError("image %d has %d bytes, its cache slot %d" % (
                index, img.nbytes, end - start))
        self._pixels[start:end] = img.reshape(-1)
        self._meta[index, 1:3] = img.shape[:2]
        self._meta[index, 0] = 1  # last: the flag says the pixels are complete


def build_image_cache(mode, paths, height, width):
    """A SharedImageCache for `mode` ("decoded" / "resized"), None for "none".

    Checks up front that it fits in the memory available."""
    if mode == "none":
        return None
    slot_bytes = cache_slot_bytes(mode, paths, height, width)
    check_cache_fits(int(slot_bytes.sum()), len(paths), mode)
    return SharedImageCache(slot_bytes)
