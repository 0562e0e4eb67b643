"""The input pipeline as MXNet/GluonCV blocks, the oracle of the package's OpenCV/NumPy one.

Per image: MXNet decode, then MXNet/GluonCV blocks (Resize, RandomApply(flip), RandomCrop with
zero padding, RandomErasing, ToTensor, Normalize), with Python's and NumPy's random state
seeded from (seed, key) as the loader did.
"""
import random

import mxnet as mx
import numpy as np
from gluoncv.data.transforms.block import RandomCrop, RandomErasing
from mxnet.gluon import nn
from mxnet.gluon.data.vision import transforms


def old_read_image(path):
    """HWC uint8 RGB NDArray, as the loader decoded it (MXNet's OpenCV)."""
    with open(path, "rb") as f:
        return mx.image.imdecode(f.read(), flag=1, to_rgb=True)


def _normalize(cfg):
    return [transforms.ToTensor(),
            transforms.Normalize(mean=tuple(cfg.INPUT.PIXEL_MEAN), std=tuple(cfg.INPUT.PIXEL_STD))]


def _resize(cfg):
    return transforms.Resize(size=(cfg.INPUT.WIDTH, cfg.INPUT.HEIGHT), interpolation=1)


def old_train_transform(cfg):
    """Resize, random flip, zero-pad + random crop, random erasing, to tensor, normalise."""
    steps = [_resize(cfg)]
    if cfg.INPUT.FLIP_PROB > 0:
        flip = nn.HybridLambda(lambda F, x: F.flip(x, axis=1))
        steps.append(transforms.RandomApply(flip, p=cfg.INPUT.FLIP_PROB))
    if cfg.INPUT.PAD > 0:
        steps.append(RandomCrop(size=(cfg.INPUT.WIDTH, cfg.INPUT.HEIGHT), pad=cfg.INPUT.PAD))
    if cfg.INPUT.ERASING_PROB > 0:
        mean = tuple(round(m * 255) for m in cfg.INPUT.PIXEL_MEAN)
        steps.append(RandomErasing(probability=float(cfg.INPUT.ERASING_PROB), mean=mean))
    return transforms.Compose(steps + _normalize(cfg))


def old_test_transform(cfg):
    return transforms.Compose([_resize(cfg)] + _normalize(cfg))


def old_train_sample(transform, image, seed, key):
    """The old loader's item `key`: random state seeded from (seed, key), then `transform`."""
    random.seed("%d:%d" % (seed, key))
    np.random.seed(random.getrandbits(32))
    return transform(image)
