"""Training/test transforms: shapes, normalisation, and what each augmentation does."""
import random

import mxnet as mx
import numpy as np
import pytest

from reid_baseline.config import load_config
from reid_baseline.data.transforms import build_test_transform, build_train_transform

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def _to_uint8_hwc(tensor):
    """Undo ToTensor + Normalize."""
    chw = tensor.asnumpy() * STD[:, None, None] + MEAN[:, None, None]
    return np.round(chw.transpose(1, 2, 0) * 255)


def _seed(value):
    random.seed(value)
    np.random.seed(value)
    mx.random.seed(value)


@pytest.mark.parametrize("size", [(384, 128), (256, 128)])
def test_output_shapes(size):
    cfg = load_config(None, ["INPUT.HEIGHT", str(size[0]), "INPUT.WIDTH", str(size[1]),
                             "INPUT.ERASING_PROB", "0.5"])
    image = mx.nd.array(np.random.randint(0, 255, (128, 64, 3)), dtype=np.uint8)  # a Market crop
    for transform in (build_train_transform(cfg), build_test_transform(cfg)):
        out = transform(image)
        assert out.shape == (3,) + size and out.dtype == np.float32


def test_test_transform_normalises_with_imagenet_statistics():
    cfg = load_config()
    image = mx.nd.full((128, 64, 3), 128, dtype=np.uint8)
    out = build_test_transform(cfg)(image).asnumpy()
    expected = (128 / 255.0 - MEAN) / STD
    np.testing.assert_allclose(out[:, 0, 0], expected, rtol=1e-5)
    np.testing.assert_allclose(out.std(axis=(1, 2)), 0, atol=1e-5)


def _marker_image():
    image = np.zeros((384, 128, 3), dtype=np.uint8)
    image[200:204, 60:64] = 255
    return mx.nd.array(image, dtype=np.uint8)


def test_pad_crop_shifts_content_by_at_most_pad_pixels():
    cfg = load_config(None, ["INPUT.FLIP_PROB", "0.0"])
    transform = build_train_transform(cfg)
    shifts = set()
    for seed in range(40):
        _seed(seed)
        out = _to_uint8_hwc(transform(_marker_image()))
        rows, cols = np.nonzero(out[..., 0] > 127)
        if rows.size == 0:
            continue
        assert rows.size == 16  # the marker is moved, never cut or scaled
        dy, dx = rows.min() - 200, cols.min() - 60
        assert abs(dy) <= 10 and abs(dx) <= 10
        shifts.add((dy, dx))
        # what was padded in is black (zeros before normalisation)
    assert len(shifts) > 10  # the crop position is random


def test_padding_is_zero():
    cfg = load_config(None, ["INPUT.FLIP_PROB", "0.0"])
    transform = build_train_transform(cfg)
    white = mx.nd.full((384, 128, 3), 255, dtype=np.uint8)
    dark_rows = 0
    for seed in range(10):
        _seed(seed)
        out = _to_uint8_hwc(transform(white))
        assert set(np.unique(out)) <= {0.0, 255.0}
        dark_rows += (out[..., 0].max(axis=1) == 0).sum()
    assert dark_rows > 0


def test_no_pad_means_no_shift():
    cfg = load_config(None, ["INPUT.FLIP_PROB", "0.0", "INPUT.PAD", "0"])
    out = _to_uint8_hwc(build_train_transform(cfg)(_marker_image()))
    np.testing.assert_array_equal(out, _marker_image().asnumpy())


def test_flip_probability_knob():
    image = _marker_image()
    always = build_train_transform(load_config(None, ["INPUT.FLIP_PROB", "1.0", "INPUT.PAD", "0"]))
    np.testing.assert_array_equal(_to_uint8_hwc(always(image)), image.asnumpy()[:, ::-1])
    half = build_train_transform(load_config(None, ["INPUT.PAD", "0"]))
    _seed(0)
    flipped = sum(_to_uint8_hwc(half(image))[200, 127 - 62, 0] == 255 for _ in range(200))
    assert 70 < flipped < 130


def test_random_erasing_fills_a_region_with_the_mean_colour():
    cfg = load_config(None, ["INPUT.FLIP_PROB", "0.0", "INPUT.PAD", "0", "INPUT.ERASING_PROB", "1.0"])
    transform = build_train_transform(cfg)
    erased = 0
    for seed in range(20):
        _seed(seed)
        out = _to_uint8_hwc(transform(mx.nd.zeros((384, 128, 3), dtype=np.uint8)))
        mask = np.all(out == np.round(MEAN * 255), axis=2)
        erased += mask.any()
        assert np.all((mask) | (out.sum(axis=2) == 0))
    assert erased >= 15
    off = build_train_transform(load_config(None, ["INPUT.PAD", "0", "INPUT.FLIP_PROB", "0.0"]))
    assert not _to_uint8_hwc(off(mx.nd.zeros((384, 128, 3), dtype=np.uint8))).any()
