"""The training/test transforms, with OpenCV and NumPy only (no MXNet ops).

Loader workers must run no MXNet op: in a forked worker each small op waits for a time slice
of MXNet's OpenMP threads. Images (decoded by data/images.py) are resized one by one with
OpenCV, which is what MXNet's `Resize` runs underneath (the tests check equal pixels). Flip,
zero-pad + random crop, random erasing and ToTensor + Normalize are then applied to whole
batches with array slicing and lookup tables, with exactly the semantics of the GluonCV/MXNet
blocks (tests/reference_pipeline.py keeps those blocks as the oracle).
"""
import math
import random

import cv2
import numpy as np

# The images are small: OpenCV's thread pool costs more than it gains (measured 0.07 vs
# 0.10 ms per resize), and the loader's worker processes are the parallelism.
cv2.setNumThreads(1)

# GluonCV RandomErasing's defaults (area fraction range, aspect ratio bound).
_ERASE_AREA = (0.02, 0.4)
_ERASE_RATIO = 0.3


def resize_image(img, height, width):
    """Bilinear resize to (height, width), as MXNet's `Resize(interpolation=1)`."""
    if img.shape[:2] == (height, width):
        return img
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)


def batch_shape(images):
    """(N, 3, H, W) of a batch of HWC images of one size."""
    return (len(images), 3) + images[0].shape[:2]


class BatchNormalizer(object):
    """uint8 HWC images -> float32 NCHW batch, `(x / 255 - mean) / std` per channel.

    A 256-entry table per channel computed with MXNet's float32 ToTensor + Normalize
    arithmetic gives the same floats at a fraction of the cost (one lookup per pixel)."""

    def __init__(self, mean, std):
        levels = np.arange(256, dtype=np.float32)[:, None] / np.float32(255)
        table = (levels - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
        self._tables = [np.ascontiguousarray(table[:, c]).reshape(1, 256) for c in range(3)]

    def __call__(self, images, out=None):
        """float32 NCHW batch of uint8 HWC `images`, written into `out` if given."""
        if out is None:
            out = np.empty(batch_shape(images), np.float32)
        for i, img in enumerate(images):
            for c, plane in enumerate(cv2.split(img)):
                cv2.LUT(plane, self._tables[c], dst=out[i, c])
        return out


class Augmentation(object):
    """One image's random decisions: flip, crop offset in the padded image, erased box."""
    __slots__ = ("flip", "crop_x", "crop_y", "erase")

    def __init__(self, flip=False, crop_x=0, crop_y=0, erase=None):
        self.flip, self.crop_x, self.crop_y = flip, crop_x, crop_y
        self.erase = erase  # (row, col, rows, cols) or None

    def __repr__(self):
        return "Augmentation(flip=%r, crop_x=%d, crop_y=%d, erase=%r)" % (
            self.flip, self.crop_x, self.crop_y, self.erase)


class TrainBatchTransform(object):
    """Flip, zero-pad + random crop, random erasing and normalisation of a batch.

    Image `key`'s decisions come from Python's `random.Random` seeded with "seed:key" and are
    drawn in the order and with the calls of the Gluon blocks (MXNet RandomApply, GluonCV
    RandomCrop and RandomErasing), so a run gives the pixels the Gluon pipeline gives."""

    def __init__(self, height, width, flip_prob, pad, erasing_prob, erase_value, mean, std,
                 seed):
        self.height, self.width = height, width
        self.flip_prob, self.pad, self.erasing_prob = flip_prob, pad, erasing_prob
        self.erase_value = np.asarray(erase_value, np.uint8)
        self.seed = seed
        self.normalize = BatchNormalizer(mean, std)

    def draw(self, key):
        """The Augmentation of image `key` (a function of (seed, key) only)."""
        rng = random.Random("%d:%d" % (self.seed, key))  # a string seed is hashed: no collisions
        rng.getrandbits(32)  # earlier versions drew a NumPy seed first: keeps runs identical
        aug = Augmentation(crop_x=self.pad, crop_y=self.pad)
        if self.flip_prob > 0:
            aug.flip = not self.flip_prob < rng.random()  # RandomApply's test
        if self.pad > 0:  # mx.image.random_crop: x then y, over the padded image
            aug.crop_x = rng.randint(0, 2 * self.pad)
            aug.crop_y = rng.randint(0, 2 * self.pad)
        if self.erasing_prob > 0 and not rng.uniform(0, 1) > self.erasing_prob:
            aug.erase = _draw_erase_box(rng, self.height, self.width)
        return aug

    def apply(self, images, augmentations):
        """uint8 HWC images (height x width) -> augmented uint8 HWC batch (N, H, W, 3)."""
        h, w, pad = self.height, self.width, self.pad
        out = np.zeros((len(images), h, w, 3), np.uint8)  # zeros: the padding
        for i, (img, aug) in enumerate(zip(images, augmentations, strict=True)):
            if img.shape[:2] != (h, w):
                raise ValueError("image %d is %s, expected %dx%d" % (i, img.shape, h, w))
            src = img[:, ::-1] if aug.flip else img
            # out[y, x] = src[y + dy, x + dx] where it lies inside src, else padding.
            dy, dx = aug.crop_y - pad, aug.crop_x - pad
            out[i, max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)] = \
                src[max(0, dy):h + min(0, dy), max(0, dx):w + min(0, dx)]
            if aug.erase is not None:
                row, col, rows, cols = aug.erase
                out[i, row:row + rows, col:col + cols] = self.erase_value
        return out

    def __call__(self, images, keys, out=None):
        """float32 NCHW batch of `images` (resized uint8 HWC), augmented as `keys` say."""
        return self.normalize(self.apply(images, [self.draw(k) for k in keys]), out)


def _draw_erase_box(rng, height, width):
    """GluonCV RandomErasing's box, or None when its single try does not fit.

    GluonCV names the image's first axis `width`: its `w` counts rows and `h` columns."""
    area = height * width
    target_area = rng.uniform(*_ERASE_AREA) * area
    aspect_ratio = rng.uniform(_ERASE_RATIO, 1 / _ERASE_RATIO)
    rows = int(round(math.sqrt(target_area * aspect_ratio)))
    cols = int(round(math.sqrt(target_area / aspect_ratio)))
    if rows < height and cols < width:
        return rng.randint(0, height - rows), rng.randint(0, width - cols), rows, cols
    return None


def build_train_transform(cfg):
    """The training batch transform of `cfg` (INPUT.*, SOLVER.SEED).

    Each step with a zero knob (INPUT.FLIP_PROB, INPUT.PAD, INPUT.ERASING_PROB) draws nothing.
    Erased pixels take the mean colour in the 0-255 scale of the uint8 image, as GluonCV's
    RandomErasing does."""
    return TrainBatchTransform(
        cfg.INPUT.HEIGHT, cfg.INPUT.WIDTH, cfg.INPUT.FLIP_PROB, cfg.INPUT.PAD,
        cfg.INPUT.ERASING_PROB, [round(m * 255) for m in cfg.INPUT.PIXEL_MEAN],
        cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD, cfg.SOLVER.SEED)


def build_test_transform(cfg):
    """Normalisation only (the flip of test-time augmentation is done on feature batches)."""
    return BatchNormalizer(cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD)
