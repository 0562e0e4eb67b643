"""The package's training step is the original code's training step, bit for bit.

The original is GluonCV's scripts/re-id/baseline (networks/resnet.py, train.py, test.py), the
code behind the recipe. `OriginalNet` and `original_step` below rebuild it from MXNet's and
GluonCV's own blocks, the way that code builds and trains them (written anew, not copied).
Both networks start from the same weights, take the same steps on the same batch, and must end
with the same parameters and BatchNorm running statistics. The tests guard refactors of
modeling/network.py, modeling/ghost_batchnorm.py, engine/solver.py, engine/loop.py and
evaluation/features.py against silent changes of what is trained: a change that moves any
number makes them fail.
"""
import os

import mxnet as mx
import numpy as np
import pytest
from gluoncv.model_zoo import get_model as gluoncv_model
from mxnet import autograd, gluon, init
from mxnet.gluon import HybridBlock, nn
from mxnet.gluon.model_zoo import vision

from reid_baseline.config import load_config
from reid_baseline.engine.loop import train_step
from reid_baseline.engine.solver import build_trainer, learning_rate_at
from reid_baseline.evaluation.features import extract_features
from reid_baseline.modeling.network import build_model

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
CLASSES = 10
# Parameters incl. running statistics: 53 convolutions (in the 16 bottlenecks of v1 both 1x1
# ones have a bias), 53 BatchNorms x 4, the neck's BatchNorm x 4, the classifier.
PARAM_COUNT = {"resnet50_v1": 53 + 2 * 16 + 53 * 4 + 4 + 1, "resnet50_v1b": 53 + 53 * 4 + 4 + 1}


class OriginalNet(HybridBlock):
    """networks/resnet.py of the original: a ResNet-50 without its last pooling and fc, last
    stride 1 (set on the layers' kwargs before the first forward), global average pooling,
    flatten, BatchNorm without beta, bias-free classifier. `classify` False is the original's
    test-time network (pretrained=False there): the BatchNorm output is the feature."""

    def __init__(self, backbone, num_classes, ctx, **kwargs):
        super().__init__(**kwargs)
        self.classify = True
        with self.name_scope():
            if backbone == "resnet50_v1":  # the original's: MXNet's model zoo
                layers = vision.resnet50_v1(pretrained=False, ctx=ctx).features[0:-1]
                layers[-1][0].body[0]._kwargs["stride"] = (1, 1)
                layers[-1][0].downsample[0]._kwargs["stride"] = (1, 1)
            else:  # the same surgery on GluonCV's v1b, whose stride is on the 3x3 conv
                resnet = gluoncv_model(backbone, pretrained=False)
                resnet.layer4[0].conv2._kwargs["stride"] = (1, 1)
                resnet.layer4[0].downsample[0]._kwargs["stride"] = (1, 1)
                layers = [resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool,
                          resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4]
            self.base = nn.HybridSequential()
            for layer in layers:
                self.base.add(layer)
            self.base.initialize(ctx=ctx)  # values replaced by the package network's
            self.avgpool = nn.GlobalAvgPool2D()
            self.flatten = nn.Flatten()
            self.bn = nn.BatchNorm(center=False, scale=True)
            self.bn.initialize(init=init.Zero(), ctx=ctx)
            self.classifier = nn.Dense(num_classes, use_bias=False)
            self.classifier.initialize(init=init.Normal(0.001), ctx=ctx)

    def hybrid_forward(self, F, x):
        x = self.bn(self.flatten(self.avgpool(self.base(x))))
        return self.classifier(x) if self.classify else x


def original_step(net, trainer, loss_fn, data, label, ctx):
    """One iteration of the original train.py: split over the devices, forward under record,
    backward of each device's loss, trainer.step(batch size)."""
    datas = gluon.utils.split_and_load(data, ctx)
    labels = gluon.utils.split_and_load(label, ctx)
    with autograd.record():
        losses = [loss_fn(net(x), y) for x, y in zip(datas, labels, strict=True)]
    for loss in losses:
        loss.backward()
    trainer.step(data.shape[0])


def _twin_values(param):
    """A twin parameter's value: trainable ones must be equal on every device; running
    statistics are averaged over the devices, as the original's save_parameters does (Gluon's
    Parameter._reduce) and as the package's engine does after each epoch."""
    copies = [c.asnumpy() for c in param.list_data()]
    if param.grad_req == "null":
        return np.mean(copies, axis=0)
    for copy in copies[1:]:
        assert np.array_equal(copy, copies[0]), param.name
    return copies[0]


def _train_both(backbone="resnet50_v1", batch=16, group=0, height=64, dtype="float32",
                steps=3):
    """The package network and its twin after `steps` steps of the recipe on one random batch."""
    overrides = ["MODEL.BACKBONE", backbone, "MODEL.PRETRAINED", "", "GPUS", "[]",
                 "INPUT.HEIGHT", str(height), "INPUT.WIDTH", str(height // 2),
                 "SOLVER.BATCH_SIZE", str(batch), "MODEL.BN_GROUP_SIZE", str(group)]
    cfg = load_config(os.path.join(CONFIGS, "market1501.yml"), overrides)
    lr = learning_rate_at(cfg, 0)
    assert lr == pytest.approx(3.5e-6, rel=1e-12)
    assert cfg.SOLVER.HYBRIDIZE and cfg.SOLVER.WEIGHT_DECAY == 5e-4
    rng = np.random.RandomState(0)
    data = mx.nd.array(rng.normal(size=(batch, 3, height, height // 2)))
    label = mx.nd.array(rng.randint(0, CLASSES, batch))
    mx.random.seed(0)

    ctx = [mx.cpu()]
    net = build_model(cfg, CLASSES, ctx)
    # Imperative and not recording (inference): completes the deferred shapes, changes nothing.
    net(data)
    # The original ran one device per group of images: 4 GPUs x 8 images for the reference run.
    devices = [mx.cpu(i) for i in range(batch // group)] if group else [mx.cpu()]
    twin = OriginalNet(backbone, CLASSES, devices)
    twin(data.as_in_context(devices[0]))
    ours, theirs = list(net.collect_params().values()), list(twin.collect_params().values())
    assert len(ours) == len(theirs) == PARAM_COUNT[backbone]
    for mine, other in zip(ours, theirs, strict=True):  # same layers in the same order
        assert mine.name.rsplit("_", 1)[1] == other.name.rsplit("_", 1)[1], (mine, other)
        assert mine.shape == other.shape and mine.grad_req == other.grad_req, (mine, other)
        other.set_data(mine.data())
    if dtype != "float32":
        net.cast(dtype)
        twin.cast(dtype)
        data, label = data.astype(dtype), label.astype(dtype)
    start = [p.data().asnumpy() for p in ours]

    net.hybridize(static_alloc=True, static_shape=True)  # as engine.train does
    # The original: net.hybridize() (no static_alloc/static_shape); the results are the same.
    twin.hybridize()
    trainer = build_trainer(cfg, net.collect_params())
    twin_trainer = gluon.Trainer(twin.collect_params(), "adam",
                                 {"learning_rate": lr, "wd": 5e-4})
    if len(devices) > 1:
        # Gluon initialises a multi-device kvstore at the first trainer.step, after that step's
        # forward and backward, by broadcasting device 0's copy of every parameter, running
        # statistics included: in the original 4-GPU run, all devices' running statistics after
        # the first iteration are those of GPU 0's 8 images, not the average over the groups
        # the package applies. The effect fades with the momentum (0.9 per iteration) and is
        # gone long before a saved model; here the kvstore is initialised before the first
        # forward (a broadcast of equal values), as it is for every later iteration.
        twin_trainer._init_kvstore()
        twin_trainer._init_params()
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    for _ in range(steps):
        train_step(net, trainer, loss_fn, data, label, ctx)
        original_step(twin, twin_trainer, loss_fn, data, label, devices)
        # One step at a time: with both networks' work queued, several CPU contexts and a
        # kvstore, MXNet's engine was seen to deadlock (in variants that fail) instead of failing.
        mx.nd.waitall()
    return {"net": net, "twin": twin, "data": data, "start": start, "ours": ours,
            "theirs": theirs, "devices": devices}


def _assert_same_training(run, compare):
    unmoved = []
    for mine, other, start in zip(run["ours"], run["theirs"], run["start"], strict=True):
        value = mine.data().asnumpy()
        compare(value, _twin_values(other), err_msg=mine.name)
        if np.array_equal(value, start):
            unmoved.append(mine.name)
    # Everything trains or tracks statistics but the neck's beta (BN_BETA false: fixed at 0).
    assert unmoved == ["embedding_batchnorm0_beta"]


@pytest.fixture(scope="module")
def recipe_run():
    return _train_both()


@pytest.mark.timeout(120)
def test_training_steps_equal_the_original_bit_for_bit(recipe_run):
    _assert_same_training(recipe_run, np.testing.assert_array_equal)


@pytest.mark.timeout(120)
@pytest.mark.filterwarnings("ignore:Parameter originalnet0_dense0_weight is not used")
def test_features_are_the_originals_sum_of_image_and_mirror_normalised(recipe_run):
    net, twin, data = recipe_run["net"], recipe_run["twin"], recipe_run["data"]
    ours = extract_features(net.embedding, [data], [mx.cpu()])
    # The original's test.py: the network without classifier, the features of the image and
    # of its mirror summed (in float64: a numpy array of zeros plus both), divided by the norm.
    twin.classify = False
    twin.hybridize()  # a new graph without the classifier
    summed = np.zeros((data.shape[0], 2048))
    for image in (data, mx.nd.flip(data, axis=3)):
        summed = summed + twin(image).asnumpy()
    theirs = summed / np.linalg.norm(summed, axis=1, keepdims=True)
    # The same network output exactly; the package averages and normalises in float32.
    np.testing.assert_array_equal(net.embedding(data).asnumpy(), twin(data).asnumpy())
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-7)
    assert np.abs(ours - theirs).max() < 1e-6


@pytest.mark.timeout(120)
def test_v1b_training_steps_equal_the_same_surgery_on_gluoncvs_v1b():
    _assert_same_training(_train_both("resnet50_v1b"), np.testing.assert_array_equal)


@pytest.mark.slow
@pytest.mark.timeout(300, method="thread")  # ends the process even if stuck inside MXNet
def test_bn_groups_of_8_train_as_the_original_on_4_devices_of_8_images():
    # float64: in float32 the two differ by rounding (one convolution backward over 32 images
    # against four over 8, summed), and Adam turns a gradient that is zero up to rounding (the
    # biases before BatchNorm, and ~2% of the weights of this random network) into a full step
    # of either sign; in float64 they agree to ~1e-14. Running statistics differ by rounding
    # too: the package averages the groups' variances recovered from MXNet's 1/sqrt(var + eps),
    # the original averages four devices' running statistics.
    run = _train_both(batch=32, group=8, height=32, dtype="float64", steps=2)
    assert len(run["devices"]) == 4

    def close(value, expected, err_msg):
        np.testing.assert_allclose(value, expected, rtol=1e-10, atol=1e-12, err_msg=err_msg)
    _assert_same_training(run, close)


def _recipe_lr(epoch, steps):
    """The recipe's schedule, written out: 10 warm-up epochs rising linearly from
    3.5e-4 * 0.01 at epoch 0 to 3.5e-4 at epoch 9, then x0.1 from each epoch in `steps`."""
    base, start = 3.5e-4, 3.5e-4 * 0.01
    if epoch < 10:
        return start + (base - start) * epoch / 9
    return base * 0.1 ** sum(epoch >= step for step in steps)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("config, steps", [("market1501.yml", (35, 60)),
                                           ("reference_run.yml", (30, 55))])
def test_learning_rate_of_every_epoch_is_the_recipes(config, steps):
    cfg = load_config(os.path.join(CONFIGS, config))
    assert cfg.SOLVER.MAX_EPOCHS == 80
    rates = [learning_rate_at(cfg, epoch) for epoch in range(80)]
    assert rates == pytest.approx([_recipe_lr(epoch, steps) for epoch in range(80)], rel=1e-12)
    assert rates[0] == pytest.approx(3.5e-6) and rates[9] == pytest.approx(3.5e-4)
