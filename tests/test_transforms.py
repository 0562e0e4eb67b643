"""Training/test transforms: shapes, normalisation, and what each augmentation does.

(Equality with the GluonCV/MXNet blocks used before: tests/test_input_pipeline.py.)"""
import numpy as np
import pytest

from reid_baseline.config import load_config
from reid_baseline.data.transforms import build_test_transform, build_train_transform

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def _to_uint8_hwc(batch):
    """Undo ToTensor + Normalize of each image of a float32 NCHW batch."""
    nchw = batch * STD[:, None, None] + MEAN[:, None, None]
    return np.round(nchw.transpose(0, 2, 3, 1) * 255)


def _train(overrides, images, keys):
    cfg = load_config(None, overrides)
    return _to_uint8_hwc(build_train_transform(cfg)(images, keys))


@pytest.mark.parametrize("size", [(384, 128), (256, 128)])
def test_output_shapes(size):
    cfg = load_config(None, ["INPUT.HEIGHT", str(size[0]), "INPUT.WIDTH", str(size[1]),
                             "INPUT.ERASING_PROB", "0.5"])
    images = [np.random.randint(0, 255, size + (3,)).astype(np.uint8) for _ in range(3)]
    for out in (build_train_transform(cfg)(images, [0, 1, 2]), build_test_transform(cfg)(images)):
        assert out.shape == (3, 3) + size and out.dtype == np.float32


def test_test_transform_normalises_with_imagenet_statistics():
    out = build_test_transform(load_config())([np.full((384, 128, 3), 128, np.uint8)])[0]
    expected = (128 / 255.0 - MEAN) / STD
    np.testing.assert_allclose(out[:, 0, 0], expected, rtol=1e-5)
    np.testing.assert_allclose(out.std(axis=(1, 2)), 0, atol=1e-5)


def _marker_image():
    image = np.zeros((384, 128, 3), dtype=np.uint8)
    image[200:204, 60:64] = 255
    return image


def test_pad_crop_shifts_content_by_at_most_pad_pixels():
    out = _train(["INPUT.FLIP_PROB", "0.0"], [_marker_image()] * 40, range(40))
    shifts = set()
    for img in out:
        rows, cols = np.nonzero(img[..., 0] > 127)
        if rows.size == 0:
            continue
        assert rows.size == 16  # the marker is moved, never cut or scaled
        dy, dx = rows.min() - 200, cols.min() - 60
        assert abs(dy) <= 10 and abs(dx) <= 10
        shifts.add((dy, dx))
    assert len(shifts) > 10  # the crop position is random


def test_padding_is_zero():
    out = _train(["INPUT.FLIP_PROB", "0.0"], [np.full((384, 128, 3), 255, np.uint8)] * 10,
                 range(10))
    assert set(np.unique(out)) <= {0.0, 255.0}
    assert (out[..., 0].max(axis=2) == 0).sum() > 0  # some rows come from the padding


def test_no_pad_means_no_shift():
    out = _train(["INPUT.FLIP_PROB", "0.0", "INPUT.PAD", "0"], [_marker_image()], [0])
    np.testing.assert_array_equal(out[0], _marker_image())


def test_flip_probability_knob():
    image = _marker_image()
    always = _train(["INPUT.FLIP_PROB", "1.0", "INPUT.PAD", "0"], [image], [0])
    np.testing.assert_array_equal(always[0], image[:, ::-1])
    half = _train(["INPUT.PAD", "0"], [image] * 200, range(200))
    flipped = (half[:, 200, 127 - 62, 0] == 255).sum()
    assert 70 < flipped < 130


def test_augmentation_depends_on_seed_and_key_only():
    images = [np.random.RandomState(i).randint(0, 255, (64, 32, 3)).astype(np.uint8)
              for i in range(6)]
    small = ["INPUT.HEIGHT", "64", "INPUT.WIDTH", "32", "INPUT.PAD", "4",
             "INPUT.ERASING_PROB", "0.5"]
    batch = build_train_transform(load_config(None, small))(images, range(10, 16))
    # the same key in another batch, at another position: the same output
    again = build_train_transform(load_config(None, small))([images[3], images[0]], [13, 10])
    np.testing.assert_array_equal(again, batch[[3, 0]])
    other_seed = load_config(None, small + ["SOLVER.SEED", "1"])
    assert not np.array_equal(build_train_transform(other_seed)(images, range(10, 16)), batch)


def test_random_erasing_fills_a_region_with_the_mean_colour():
    black = [np.zeros((384, 128, 3), dtype=np.uint8)] * 20
    out = _train(["INPUT.FLIP_PROB", "0.0", "INPUT.PAD", "0", "INPUT.ERASING_PROB", "1.0"],
                 black, range(20))
    mask = np.all(out == np.round(MEAN * 255), axis=3)
    assert mask.any(axis=(1, 2)).sum() >= 15
    assert np.all(mask | (out.sum(axis=3) == 0))
    assert not _train(["INPUT.PAD", "0", "INPUT.FLIP_PROB", "0.0"], black[:1], [0]).any()
