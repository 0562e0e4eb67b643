"""features.extract_features: flip-averaged, L2-normalised features, in loader order, over
several devices, against an independent computation."""
import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon

from reid_baseline.evaluation.features import extract_features


@pytest.fixture(scope="module")
def net():
    """A small network whose features change when the image is mirrored."""
    mx.random.seed(1)
    block = gluon.nn.HybridSequential()
    block.add(gluon.nn.Conv2D(4, 3, padding=1, activation="relu"), gluon.nn.Flatten(),
              gluon.nn.Dense(6))
    block.initialize(mx.init.Uniform(0.5), ctx=[mx.cpu(0), mx.cpu(1)])  # two "devices"
    return block


@pytest.fixture(scope="module")
def images():
    return np.random.RandomState(0).uniform(-1, 1, (7, 3, 8, 5)).astype(np.float32)


def _batches(images, size=3):
    """What a test loader yields: (data, labels) batches, the last one short."""
    return [(mx.nd.array(images[i:i + size]), mx.nd.zeros(len(images[i:i + size])))
            for i in range(0, len(images), size)]


def _reference(net, images, flip, normalize):
    """One image at a time: the network on the image (and on its mirror, numpy's [..., ::-1]
    of the width axis), summed, divided by its L2 norm."""
    out = []
    for image in images:
        feat = net(mx.nd.array(image[None])).asnumpy()[0].astype(np.float64)
        if flip:
            mirror = np.ascontiguousarray(image[:, :, ::-1])[None]
            feat = (feat + net(mx.nd.array(mirror)).asnumpy()[0]) / 2
        if normalize:
            feat = feat / np.sqrt((feat ** 2).sum())
        out.append(feat)
    return np.array(out)


@pytest.mark.parametrize("flip, normalize", [(True, True), (True, False), (False, True)])
def test_features_equal_an_independent_computation(net, images, flip, normalize):
    got = extract_features(net, _batches(images), [mx.cpu()], flip=flip, normalize=normalize)
    assert got.dtype == np.float32 and got.shape == (7, 6)
    np.testing.assert_allclose(got, _reference(net, images, flip, normalize), rtol=0, atol=1e-5)
    if normalize:
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)


def test_flip_changes_the_features_and_devices_keep_the_order(net, images):
    flipped = extract_features(net, _batches(images), [mx.cpu()])
    plain = extract_features(net, _batches(images), [mx.cpu()], flip=False)
    assert np.abs(flipped - plain).max() > 1e-2  # the test above can tell them apart
    # batches split over two devices (uneven halves, a last batch of one image): the same
    # features in the same order
    split = extract_features(net, _batches(images), [mx.cpu(0), mx.cpu(1)])
    np.testing.assert_allclose(split, flipped, rtol=0, atol=1e-6)
    # a mirrored image has the same flip-averaged feature
    mirrored = np.ascontiguousarray(images[:, :, :, ::-1])
    np.testing.assert_allclose(extract_features(net, _batches(mirrored), [mx.cpu()]), flipped,
                               rtol=0, atol=1e-5)


def test_no_images_is_an_error(net):
    with pytest.raises(ValueError, match="no images"):
        extract_features(net, [], [mx.cpu()])
