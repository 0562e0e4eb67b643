"""The ReID network: shapes and strides, the recipe's head, pretrained loading."""
import mxnet as mx
import numpy as np
import pytest
from gluoncv.model_zoo import get_model

from reid_baseline.config import load_config
from reid_baseline.modeling.network import ModelError, build_model, load_trained_model


def _cfg(*overrides):
    return load_config(None, ["MODEL.PRETRAINED", ""] + list(overrides))


@pytest.mark.parametrize("height, stride, fmap", [
    (384, 1, (24, 8)), (384, 2, (12, 4)), (256, 1, (16, 8)), (256, 2, (8, 4))])
def test_resnet50_feature_map_and_feature_dim(height, stride, fmap):
    net = build_model(_cfg("MODEL.LAST_STRIDE", str(stride)), num_classes=751)
    net.hybridize(static_alloc=True, static_shape=True)
    x = mx.nd.random.uniform(shape=(2, 3, height, 128))
    assert net.embedding.trunk(x).shape == (2, 2048) + fmap
    logits, feat = net(x)
    assert logits.shape == (2, 751) and feat.shape == (2, 2048)


def test_resnet50_v1b_last_stride_one():
    net = build_model(_cfg("MODEL.BACKBONE", "resnet50_v1b"), num_classes=3)
    assert net.embedding.trunk(mx.nd.zeros((1, 3, 384, 128))).shape == (1, 2048, 24, 8)


def _trainable(net):
    return {name for name, p in net.collect_params().items() if p.grad_req != "null"}


def test_recipe_head_has_no_beta_and_no_classifier_bias():
    net = build_model(_cfg(), num_classes=10)
    trainable = _trainable(net)
    neck = net.embedding.bn
    assert neck.gamma.name in trainable
    # Gluon's BatchNorm(center=False) keeps a frozen all-zero beta: no shift is ever learned.
    assert neck.beta.name not in trainable
    assert not neck.beta.data().asnumpy().any()
    assert [n for n in net.classifier.collect_params()] == [net.classifier.weight.name]
    assert net.classifier.bias is None


def test_head_knobs_of_the_ablations():
    net = build_model(_cfg("MODEL.BN_BETA", "True", "MODEL.CLASSIFIER_BIAS", "True",
                           "MODEL.BN_GAMMA", "False"), num_classes=10)
    trainable = _trainable(net)
    assert net.embedding.bn.beta.name in trainable and net.classifier.bias.name in trainable
    assert net.embedding.bn.gamma.name not in trainable


@pytest.mark.slow
def test_head_initialisation_follows_the_reference():
    net = build_model(_cfg(), num_classes=751)
    weight = net.classifier.weight.data().asnumpy()
    assert weight.shape == (751, 2048)
    assert abs(weight.std() - 0.001) < 1e-4 and abs(weight.mean()) < 1e-4
    assert np.all(net.embedding.bn.gamma.data().asnumpy() == 1)


@pytest.mark.parametrize("pooling", ["avg", "max", "avgmax"])
def test_pooling_variants(pooling):
    net = build_model(_cfg("MODEL.BACKBONE", "resnet18_v1", "MODEL.POOLING", pooling), num_classes=4)
    x = mx.nd.random.uniform(shape=(2, 3, 64, 32))
    fmap = net.embedding.trunk(x).asnumpy()
    pooled = {"avg": fmap.mean(axis=(2, 3)), "max": fmap.max(axis=(2, 3)),
              "avgmax": fmap.mean(axis=(2, 3)) + fmap.max(axis=(2, 3))}[pooling]
    bn = net.embedding.bn  # inference BatchNorm with fresh statistics: x / sqrt(1 + eps)
    expected = pooled / np.sqrt(1 + bn._kwargs["eps"])
    np.testing.assert_allclose(net.embedding(x).asnumpy(), expected, rtol=1e-4, atol=1e-5)


def test_relu_feature_is_non_negative_and_default_is_not():
    x = mx.nd.random.uniform(shape=(4, 3, 64, 32))
    for act, nonneg in (("relu", True), ("none", False)):
        net = build_model(_cfg("MODEL.BACKBONE", "resnet18_v1", "MODEL.FEAT_ACTIVATION", act), 4)
        with mx.autograd.record():  # training-mode BatchNorm centres the batch: some < 0
            _, feat = net(x)
        assert (feat.asnumpy().min() >= 0) == nonneg


def test_hybridized_embedding_equals_network_feature():
    net = build_model(_cfg("MODEL.BACKBONE", "resnet18_v1"), num_classes=4)
    x = mx.nd.random.uniform(shape=(3, 3, 64, 32))
    _, eager = net(x)
    net.hybridize(static_alloc=True, static_shape=True)
    _, hybrid = net(x)
    np.testing.assert_allclose(net.embedding(x).asnumpy(), eager.asnumpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(hybrid.asnumpy(), eager.asnumpy(), rtol=1e-4, atol=1e-5)


def test_local_params_file_sets_the_backbone_weights(tmp_path):
    source = get_model("resnet50_v1", pretrained=False)
    source.initialize(mx.init.Uniform(0.5))
    source(mx.nd.zeros((1, 3, 64, 32)))
    path = str(tmp_path / "resnet50_v1-imagenet.params")
    source.save_parameters(path)
    net = build_model(_cfg("MODEL.PRETRAINED", path), num_classes=7)
    trunk = net.embedding.trunk
    for ours, theirs in ((trunk[0].weight, source.features[0].weight),
                         (trunk[7][2].body[3].weight, source.features[7][2].body[3].weight),
                         (trunk[1].running_var, source.features[1].running_var)):
        np.testing.assert_array_equal(ours.data().asnumpy(), theirs.data().asnumpy())


def test_wrong_params_file_is_a_clear_error(tmp_path):
    other = get_model("resnet18_v1", pretrained=False)
    other.initialize()
    other(mx.nd.zeros((1, 3, 32, 32)))
    path = str(tmp_path / "resnet18.params")
    other.save_parameters(path)
    with pytest.raises(ModelError, match=r"resnet18.params has features.4.0.body.0.weight with "
                                         r"shape \(64, 64, 3, 3\), MODEL.BACKBONE resnet50_v1 "
                                         r"expects \(64, 0, 1, 1\)$"):
        build_model(_cfg("MODEL.PRETRAINED", path), num_classes=3)
    with pytest.raises(ModelError, match="no such file: .*missing.params"):
        build_model(_cfg("MODEL.PRETRAINED", str(tmp_path / "missing.params")), num_classes=3)


def test_unknown_backbone_is_an_error():
    with pytest.raises(ModelError, match="MODEL.BACKBONE must be one of"):
        build_model(_cfg("MODEL.BACKBONE", "vgg16"), num_classes=3)


# ---------------------------------------------------------------- load_trained_model
TINY = ["MODEL.BACKBONE", "resnet18_v1", "INPUT.HEIGHT", "64", "INPUT.WIDTH", "32"]


def _saved_tiny_model(path, *overrides):
    """A tiny model with every embedding parameter random, saved as train.py saves it."""
    net = build_model(_cfg(*TINY + list(overrides)), num_classes=5)
    # completes the deferred shapes; a batch of 1 here has made MXNet 1.9's oneDNN build
    # crash at the next save when another ResNet ran earlier in the process
    net(mx.nd.zeros((2, 3, 64, 32)))
    bn = net.embedding.bn  # a trained-looking neck, so loading it is visible in the features
    trained = [p for p in (bn.gamma, bn.beta) if p.grad_req != "null"]  # frozen ones stay 1 / 0
    for param in trained + [bn.running_mean, bn.running_var]:
        param.set_data(mx.nd.random.uniform(0.5, 1.5, shape=param.shape))
    net.save_parameters(str(path))
    return net


@pytest.mark.parametrize("saved_bias", [True, False])
def test_trained_features_load_whatever_the_classifier_bias(tmp_path, capsys, saved_bias):
    path = tmp_path / "model_final.params"
    source = _saved_tiny_model(path, "MODEL.CLASSIFIER_BIAS", str(saved_bias))
    x = mx.nd.random.uniform(shape=(2, 3, 64, 32))
    expected = source.embedding(x).asnumpy()
    for bias in (saved_bias, not saved_bias):
        net = load_trained_model(_cfg(*TINY + ["MODEL.CLASSIFIER_BIAS", str(bias)]), str(path))
        np.testing.assert_allclose(net.embedding(x).asnumpy(), expected, rtol=1e-5, atol=1e-6)
        note = capsys.readouterr().err
        if saved_bias and not bias:  # the file holds more than this config's classifier
            assert note.strip().endswith(
                "ignored 2 parameters of %s not needed for features: classifier.weight, "
                "classifier.bias" % path)
        else:
            assert note == ""


def test_trained_params_missing_or_misshapen_embedding_parameter(tmp_path):
    path = tmp_path / "model_final.params"
    _saved_tiny_model(path)
    saved = mx.nd.load(str(path))
    del saved["embedding.bn.gamma"]
    mx.nd.save(str(path), saved)
    with pytest.raises(ModelError, match=r"model_final.params does not fit the model of this "
                                         r"config: the file has no parameter embedding.bn.gamma "
                                         r"\(.*MODEL.BN_GAMMA True"):
        load_trained_model(_cfg(*TINY), str(path))
    saved["embedding.bn.gamma"] = mx.nd.ones(2048)
    mx.nd.save(str(path), saved)
    with pytest.raises(ModelError, match=r"embedding.bn.gamma with shape \(2048,\), the model "
                                         r"expects \(512,\) \(.*MODEL.BACKBONE resnet18_v1"):
        load_trained_model(_cfg(*TINY), str(path))


@pytest.mark.parametrize("knob, param", [("MODEL.BN_GAMMA", "gamma"), ("MODEL.BN_BETA", "beta")])
@pytest.mark.slow
def test_a_trained_bn_scale_or_shift_is_never_dropped_silently(tmp_path, knob, param):
    path = tmp_path / "model_final.params"
    _saved_tiny_model(path, knob, "True")
    saved = mx.nd.load(str(path))
    saved["embedding.bn." + param][:] = 0.5  # as training would leave it
    mx.nd.save(str(path), saved)
    load_trained_model(_cfg(*TINY + [knob, "True"]), str(path))
    with pytest.raises(ModelError, match=r"trained with %s True \(its embedding.bn.%s is not all "
                                         r"[01]\), but this config has %s False" % (knob, param, knob)):
        load_trained_model(_cfg(*TINY + [knob, "False"]), str(path))


def test_params_of_another_precision_or_with_nan_are_one_error_naming_the_parameter(tmp_path):
    path = tmp_path / "model_final.params"
    _saved_tiny_model(path)
    saved = mx.nd.load(str(path))
    first = next(n for n in saved if n.startswith("embedding."))
    mx.nd.save(str(path), {n: a.astype("float16") for n, a in saved.items()})
    with pytest.raises(ModelError, match=r"params file .*model_final.params: parameter %s is "
                                         r"float16, expected float32" % first):
        load_trained_model(_cfg(*TINY), str(path))
    var = saved["embedding.bn.running_var"].copy()
    var[3] = float("nan")
    saved["embedding.bn.running_var"] = var
    mx.nd.save(str(path), saved)
    with pytest.raises(ModelError, match=r"model_final.params: parameter "
                                         r"embedding.bn.running_var holds NaN or infinity"):
        load_trained_model(_cfg(*TINY), str(path))
