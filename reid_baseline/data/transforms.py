"""Training and test transforms, assembled from MXNet and GluonCV blocks.

Input: an HWC uint8 RGB NDArray as decoded; output: a normalised CHW float32 tensor.
"""
from gluoncv.data.transforms.block import RandomCrop, RandomErasing
from mxnet.gluon import nn
from mxnet.gluon.data.vision import transforms


def _normalize(cfg):
    return [transforms.ToTensor(),
            transforms.Normalize(mean=tuple(cfg.INPUT.PIXEL_MEAN), std=tuple(cfg.INPUT.PIXEL_STD))]


def _resize(cfg):
    # Resize takes (width, height); bilinear as in the reference code.
    return transforms.Resize(size=(cfg.INPUT.WIDTH, cfg.INPUT.HEIGHT), interpolation=1)


def build_train_transform(cfg):
    """Resize, random flip, zero-pad + random crop, random erasing, to tensor, normalise.

    Each step with a zero knob (INPUT.FLIP_PROB, INPUT.PAD, INPUT.ERASING_PROB) is left out."""
    steps = [_resize(cfg)]
    if cfg.INPUT.FLIP_PROB > 0:
        # MXNet's RandomFlipLeftRight has a fixed p=0.5; RandomApply makes p a knob.
        flip = nn.HybridLambda(lambda F, x: F.flip(x, axis=1))
        steps.append(transforms.RandomApply(flip, p=cfg.INPUT.FLIP_PROB))
    if cfg.INPUT.PAD > 0:
        steps.append(RandomCrop(size=(cfg.INPUT.WIDTH, cfg.INPUT.HEIGHT), pad=cfg.INPUT.PAD))
    if cfg.INPUT.ERASING_PROB > 0:
        # Erased pixels take the mean colour, in the 0-255 scale of the uint8 image.
        mean = tuple(round(m * 255) for m in cfg.INPUT.PIXEL_MEAN)
        steps.append(RandomErasing(probability=float(cfg.INPUT.ERASING_PROB), mean=mean))
    return transforms.Compose(steps + _normalize(cfg))


def build_test_transform(cfg):
    """Resize, to tensor, normalise (the flip of test-time augmentation is done on batches)."""
    return transforms.Compose([_resize(cfg)] + _normalize(cfg))
