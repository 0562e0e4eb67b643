"""MODEL.BN_GROUP_SIZE: one device normalises as several devices of `group` images would."""
import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd

from reid_baseline.config import ConfigError, load_config
from reid_baseline.modeling.ghost_batchnorm import (
    GhostBatchNorm,
    attach_running_stat_updates,
    batchnorm_layer,
)
from reid_baseline.modeling.network import build_model

TINY = ["MODEL.BACKBONE", "resnet18_v1", "MODEL.PRETRAINED", "", "INPUT.HEIGHT", "64",
        "INPUT.WIDTH", "32", "GPUS", "[]"]
GROUP = 8


def _net(group, params=None, hybridize=True):
    cfg = load_config(None, TINY + ["MODEL.BN_GROUP_SIZE", str(group)])
    mx.random.seed(0)
    net = build_model(cfg, num_classes=5)
    net(mx.nd.zeros((2, 3, 64, 32)))  # completes deferred shapes
    if params:
        net.load_parameters(params)
    else:  # trained-looking BatchNorm layers, so that the statistics used are visible
        rng = np.random.RandomState(1)
        for name, param in net.collect_params().items():
            if name.endswith(("gamma", "running_var")) and param.grad_req != "null" or name.endswith("running_var"):
                param.set_data(mx.nd.array(rng.uniform(0.5, 1.5, param.shape)))
            elif name.endswith(("beta", "running_mean")) and param.grad_req != "null" or name.endswith("running_mean"):
                param.set_data(mx.nd.array(rng.uniform(-0.5, 0.5, param.shape)))
    if hybridize:  # as the engine does
        net.hybridize(static_alloc=True, static_shape=True)
    return net


def _train_forward(net, x):
    """Training-mode features; the backward pass is what updates MXNet's running statistics."""
    with autograd.record():
        logits, feat = net(x)
        loss = (logits.sum() + feat.sum())
    loss.backward()
    return feat.asnumpy()


def _running_stats(net):
    return {k: v.data().asnumpy() for k, v in net._collect_params_with_prefix().items()
            if k.endswith(("running_mean", "running_var"))}


@pytest.mark.parametrize("hybridize", [True, False])
@pytest.mark.slow
def test_groups_of_a_batch_train_as_separate_devices_would(tmp_path, hybridize):
    grouped = _net(GROUP, hybridize=hybridize)
    params = str(tmp_path / "start.params")
    grouped.save_parameters(params)
    x = mx.nd.random.uniform(-1, 1, shape=(4 * GROUP, 3, 64, 32))
    features = _train_forward(grouped, x)

    # What four devices of 8 images compute with MXNet's own BatchNorm, from the same start.
    devices, stats = [], []
    for i in range(4):  # imperative: MXNet's static_shape graphs skip the first call's update
        device = _net(0, params, hybridize=False)
        devices.append(_train_forward(device, x[i * GROUP:(i + 1) * GROUP]))
        stats.append(_running_stats(device))
    # Equal up to float32 rounding, which 21 BatchNorm layers of a random network amplify:
    # oneDNN convolves a batch of 32 and a batch of 8 in different orders, and MXNet's own
    # BatchNorm moves these features by 3e-5 when the 8 images of a batch are merely reordered.
    # test_one_layer_is_exactly_mxnet_batchnorm_per_group checks the layer itself to 1e-6.
    np.testing.assert_allclose(features, np.concatenate(devices), rtol=1e-4, atol=2e-4)
    whole = _train_forward(_net(0, params, hybridize), x)  # what group size 0 gives
    assert np.abs(whole - features).max() > 1e-2

    # The running statistics move towards the average of the groups', as averaging the four
    # devices' running statistics after the step gives.
    for name, value in _running_stats(grouped).items():
        expected = np.mean([s[name] for s in stats], axis=0)
        np.testing.assert_allclose(value, expected, rtol=1e-4, atol=1e-5, err_msg=name)
    assert len(stats[0]) == 2 * 21  # every BatchNorm of ResNet-18 (20) and the neck


def _toy_batch(root, count):
    """`count` toy training images at 64x32, normalised as the loaders do (NCHW float32)."""
    import glob
    import os

    import cv2

    from reid_baseline.data.transforms import build_test_transform, resize_image

    files = sorted(glob.glob(os.path.join(root, "bounding_box_train", "*.jpg")))[::7][:count]
    images = [resize_image(cv2.imread(f)[:, :, ::-1], 64, 32) for f in files]
    return build_test_transform(load_config(None, TINY))(images)


@pytest.mark.slow
def test_grouped_gradients_are_the_sum_of_the_devices_on_toy_images(tmp_path, toy_market_root,
                                                                      hybridize=True):
    # float64: in float32, toy images put the odd pre-ReLU activation within rounding of 0
    # (e.g. 6e-8), and whether a batch of 32 or of 8 (or the same 8 reordered) is convolved
    # decides its side of the kink; the one gradient element it gates then moves a
    # parameter's gradient by up to 8% of its largest element, for MXNet's own BatchNorm too.
    # In float64 the grouped and the separate devices' gradients agree to ~1e-15.
    x = _toy_batch(toy_market_root, 4 * GROUP)
    labels = np.arange(4 * GROUP) % 5
    params = str(tmp_path / "start.params")
    _net(GROUP).save_parameters(params)
    loss_fn = mx.gluon.loss.SoftmaxCrossEntropyLoss()

    def gradients(group, rows):
        net = _net(group, params, hybridize=False)
        net.cast("float64")
        if hybridize:
            net.hybridize(static_alloc=True, static_shape=True)
        data = mx.nd.array(x[rows], dtype="float64")
        data.attach_grad()
        with autograd.record():
            logits, feat = net(data)
            loss = loss_fn(logits, mx.nd.array(labels[rows], dtype="float64")).sum() \
                + 0.01 * (feat * feat).sum()
        loss.backward()
        grads = {k: p.grad().asnumpy() for k, p in net._collect_params_with_prefix().items()
                 if p.grad_req != "null"}
        return grads, data.grad.asnumpy()

    grouped, grouped_dx = gradients(GROUP, slice(None))
    devices = [gradients(0, slice(i * GROUP, (i + 1) * GROUP)) for i in range(4)]
    np.testing.assert_allclose(grouped_dx, np.concatenate([d[1] for d in devices]),
                               rtol=1e-9, atol=1e-9 * np.abs(grouped_dx).max())
    assert len(grouped) == 2 * 20 + 1 + 20 + 1  # BN gamma+beta, neck gamma, convs, classifier
    for name, grad in grouped.items():
        expected = sum(d[0][name] for d in devices)
        np.testing.assert_allclose(grad, expected, rtol=1e-9, atol=1e-9 * np.abs(expected).max(),
                                   err_msg=name)


def test_inference_is_mxnet_batchnorm_for_any_batch(tmp_path):
    grouped = _net(GROUP)
    params = str(tmp_path / "p.params")
    grouped.save_parameters(params)
    plain = _net(0, params)
    x = mx.nd.random.uniform(-1, 1, shape=(5, 3, 64, 32))  # not a multiple of the group
    np.testing.assert_allclose(grouped.embedding(x).asnumpy(), plain.embedding(x).asnumpy(),
                               rtol=1e-5, atol=1e-6)


def test_every_batchnorm_is_grouped_and_parameter_names_do_not_change():
    grouped, plain = _net(GROUP, hybridize=False), _net(0, hybridize=False)
    assert list(grouped._collect_params_with_prefix()) == list(plain._collect_params_with_prefix())
    layers = [b for b in _walk(grouped) if isinstance(b, mx.gluon.nn.BatchNorm)]
    assert len(layers) == 21 and all(isinstance(b, GhostBatchNorm) and b.group_size == GROUP
                                     and b.num_groups == 32 // GROUP for b in layers)
    # group size 0: MXNet's own layer, built as such
    assert [type(b) for b in _walk(plain) if isinstance(b, mx.gluon.nn.BatchNorm)] == \
        [mx.gluon.nn.BatchNorm] * 21
    # the full names (an exported symbol file's) are nn.BatchNorm's too, after the network's
    # own numbered prefix (resnetv10_, resnetv11_, ...)
    names = [[p.name.split("_", 1)[1] for p in net.collect_params().values()]
             for net in (grouped, plain)]
    assert names[0] == names[1] and "batchnorm0_gamma" in names[0]


def _walk(block):
    yield block
    for child in block._children.values():
        yield from _walk(child)


def test_a_group_that_does_not_divide_the_device_batch_is_a_config_error():
    load_config(None, ["MODEL.BN_GROUP_SIZE", "8", "GPUS", "[0,1,2,3]"])  # 8 per device
    with pytest.raises(ConfigError, match=r"MODEL.BN_GROUP_SIZE \(12\) must divide the per-device batch"):
        load_config(None, ["MODEL.BN_GROUP_SIZE", "12"])
    with pytest.raises(ConfigError, match=r"per-device batch \(SOLVER.BATCH_SIZE 32 / 8 devices = 4\)"):
        load_config(None, ["MODEL.BN_GROUP_SIZE", "8", "GPUS", "[0,1,2,3,4,5,6,7]"])
    with pytest.raises(ConfigError, match="MODEL.BN_GROUP_SIZE must be 0"):
        load_config(None, ["MODEL.BN_GROUP_SIZE", "1"])


@pytest.mark.timeout(900)
@pytest.mark.slow
def test_training_with_groups_runs_end_to_end(make_tiny_cfg, tmp_path):
    from reid_baseline.data.datasets import build_datasets
    from reid_baseline.engine.loop import train
    from reid_baseline.evaluation.evaluator import record_ids
    from reid_baseline.evaluation.protocol import chance_rank1

    cfg = make_tiny_cfg(tmp_path, "SOLVER.MAX_EPOCHS", "3", "SOLVER.EVAL_PERIOD", "3",
                        "MODEL.BN_GROUP_SIZE", "8")
    history = train(cfg)
    assert (tmp_path / "model_final.params").exists()
    losses = [r["loss"] for r in history]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]  # it learns
    dataset = build_datasets(cfg)
    (q_pids, q_cams), (g_pids, g_cams) = record_ids(dataset.query), record_ids(dataset.gallery)
    chance = 100 * chance_rank1(q_pids, g_pids, q_cams, g_cams)
    assert history[-1]["rank1"] > 5 * chance, (history[-1]["rank1"], chance)


@pytest.mark.parametrize("shape, trained", [((32, 16, 6, 4), True), ((32, 64), True),
                                            ((32, 64), False)])  # trunk, neck, neck w/o gamma+beta
def test_one_layer_is_exactly_mxnet_batchnorm_per_group(shape, trained):
    rng = np.random.RandomState(0)
    x = mx.nd.array(rng.randn(*shape) * rng.uniform(0.1, 3, shape[1]).reshape((1, -1) + (1,) * (len(shape) - 2)))
    channels = shape[1]

    def layer(group):
        # as the feature network holds the trunk's layers
        holder = _OneLayer(channels, trained, *batchnorm_layer(group, 32))
        bn = holder.bn
        holder.initialize()
        if trained:
            bn.gamma.set_data(mx.nd.array(np.linspace(0.5, 1.5, channels)))
            bn.beta.set_data(mx.nd.array(np.linspace(-0.2, 0.2, channels)))
        bn.running_mean.set_data(mx.nd.array(np.linspace(-1, 1, channels)))
        return holder

    def train_step(holder, data):
        data = data.copy()
        data.attach_grad()
        with autograd.record():
            out, zero = holder(data)
            loss = (out * out).sum() + zero.sum()
        loss.backward()
        dgamma = holder.bn.gamma.grad().asnumpy() if trained else np.zeros(channels)
        return out.asnumpy(), data.grad.asnumpy(), dgamma

    grouped = layer(GROUP)
    grouped.hybridize(static_alloc=True, static_shape=True)
    out, dx, dgamma = train_step(grouped, x)
    devices = [layer(0) for _ in range(4)]
    results = [train_step(bn, x[i * GROUP:(i + 1) * GROUP]) for i, bn in enumerate(devices)]
    np.testing.assert_allclose(out, np.concatenate([r[0] for r in results]), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dx, np.concatenate([r[1] for r in results]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dgamma, sum(r[2] for r in results), rtol=1e-5, atol=1e-5)
    for name in ("running_mean", "running_var"):
        expected = np.mean([getattr(h.bn, name).data().asnumpy() for h in devices], axis=0)
        np.testing.assert_allclose(getattr(grouped.bn, name).data().asnumpy(), expected,
                                   rtol=1e-5, atol=1e-6, err_msg=name)
        assert np.abs(expected - getattr(devices[0].bn, name).data().asnumpy()).max() > 1e-3


class _OneLayer(mx.gluon.HybridBlock):
    """A BatchNorm layer and the zero that carries its running-statistics update."""

    def __init__(self, channels, trained, norm_layer, norm_kwargs):
        super().__init__()
        with self.name_scope():
            self.bn = norm_layer(in_channels=channels, scale=trained, center=trained, **norm_kwargs)

    def hybrid_forward(self, F, x):
        return self.bn(x), attach_running_stat_updates(self, F, F.zeros((1, 1)))
