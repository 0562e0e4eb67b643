"""Checkpoints restore parameters and optimizer state exactly, and are written atomically."""
import json
import os

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon

from reid_baseline.checkpoint import (CheckpointError, last_checkpoint, load_checkpoint,
                                      save_checkpoint)
from reid_baseline.config import load_config
from reid_baseline.solver import build_trainer


def _net_and_trainer(optimizer="adam", ctx=(mx.cpu(),), batchnorm=True):
    net = gluon.nn.HybridSequential()
    net.add(gluon.nn.Dense(8, in_units=6, activation="relu"))
    if batchnorm:
        net.add(gluon.nn.BatchNorm(in_channels=8))
    net.add(gluon.nn.Dense(3, in_units=8, use_bias=False))
    mx.random.seed(0)
    net.initialize(mx.init.Xavier(), ctx=list(ctx))
    cfg = load_config(None, ["SOLVER.OPTIMIZER", optimizer])
    return net, build_trainer(cfg, net.collect_params())


def _step(net, trainer, seed):
    rng = np.random.RandomState(seed)
    x, y = mx.nd.array(rng.randn(4, 6)), mx.nd.array(rng.randint(0, 3, 4))
    with autograd.record():
        loss = gluon.loss.SoftmaxCrossEntropyLoss()(net(x), y)
    loss.backward()
    trainer.step(4)


def _params(net):
    return {k: v.data().asnumpy() for k, v in net._collect_params_with_prefix().items()}


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_round_trip_restores_params_and_optimizer_exactly(tmp_path, optimizer):
    net, trainer = _net_and_trainer(optimizer)
    trainer.set_learning_rate(0.01)
    for seed in range(3):
        _step(net, trainer, seed)
    folder = save_checkpoint(str(tmp_path), net, trainer, epoch=7)
    assert last_checkpoint(str(tmp_path)) == folder

    net2, trainer2 = _net_and_trainer(optimizer)
    state = load_checkpoint(folder, net2, trainer2, [mx.cpu()])
    assert state["epoch"] == 7 and trainer2.learning_rate == 0.01
    for key, value in _params(net).items():
        np.testing.assert_array_equal(_params(net2)[key], value)
    assert trainer2._optimizer.num_update == trainer._optimizer.num_update == 3
    # The same next step on both gives identical weights: moments and Adam's bias
    # correction counters were restored, not re-initialised.
    _step(net, trainer, 10)
    _step(net2, trainer2, 10)
    for key, value in _params(net).items():
        np.testing.assert_allclose(_params(net2)[key], value, rtol=0, atol=0)


def test_newer_checkpoint_replaces_the_pointer_and_no_temp_files_remain(tmp_path):
    net, trainer = _net_and_trainer()
    _step(net, trainer, 0)
    save_checkpoint(str(tmp_path), net, trainer, epoch=1)
    second = save_checkpoint(str(tmp_path), net, trainer, epoch=2)
    assert last_checkpoint(str(tmp_path)) == second
    names = sorted(os.listdir(tmp_path / "checkpoints"))
    assert names == ["epoch_0001", "epoch_0002", "last"]
    with open(os.path.join(second, "state.json")) as f:
        assert json.load(f)["epoch"] == 2


def test_no_checkpoint_and_incomplete_checkpoint(tmp_path):
    assert last_checkpoint(str(tmp_path)) is None
    net, trainer = _net_and_trainer()
    _step(net, trainer, 0)
    folder = save_checkpoint(str(tmp_path), net, trainer, epoch=1)
    os.remove(os.path.join(folder, "optimizer.nd"))
    with pytest.raises(CheckpointError, match="optimizer.nd is missing"):
        load_checkpoint(folder, *_net_and_trainer(), [mx.cpu()])


def test_checkpoint_of_another_model_is_a_clear_error(tmp_path):
    net, trainer = _net_and_trainer()
    _step(net, trainer, 0)
    folder = save_checkpoint(str(tmp_path), net, trainer, epoch=1)
    other = gluon.nn.Dense(2, in_units=5)
    other.initialize()
    with pytest.raises(CheckpointError, match="does not fit the model"):
        load_checkpoint(folder, other, build_trainer(load_config(), other.collect_params()), [mx.cpu()])


def test_single_device_checkpoint_resumes_on_two_devices(tmp_path):
    """What --resume --gpus 0,1 does with a checkpoint written on one GPU, on CPU contexts."""
    # No BatchNorm: its batch statistics differ when a batch is split, by design.
    net, trainer = _net_and_trainer(batchnorm=False)
    for seed in range(2):
        _step(net, trainer, seed)
    folder = save_checkpoint(str(tmp_path), net, trainer, epoch=1)
    _step(net, trainer, 5)

    ctx = [mx.cpu(0), mx.cpu(1)]
    net2, trainer2 = _net_and_trainer(ctx=ctx, batchnorm=False)
    load_checkpoint(folder, net2, trainer2, ctx)
    rng = np.random.RandomState(5)  # the batch of _step(..., 5), split over the two devices
    x, y = mx.nd.array(rng.randn(4, 6)), mx.nd.array(rng.randint(0, 3, 4))
    with autograd.record():
        losses = [gluon.loss.SoftmaxCrossEntropyLoss()(net2(xs), ys) for xs, ys in
                  zip(gluon.utils.split_and_load(x, ctx), gluon.utils.split_and_load(y, ctx))]
    autograd.backward(losses)
    trainer2.step(4)
    for (key, value), param in zip(_params(net).items(), net2.collect_params().values()):
        for copy in param.list_data():
            np.testing.assert_allclose(copy.asnumpy(), value, rtol=1e-5, atol=1e-6, err_msg=key)


def test_checkpoint_of_another_optimizer_is_a_clear_error(tmp_path):
    net, trainer = _net_and_trainer("sgd")
    _step(net, trainer, 0)
    folder = save_checkpoint(str(tmp_path), net, trainer, epoch=1)
    with pytest.raises(CheckpointError, match="holds SGD optimizer state, but this config trains with Adam"):
        load_checkpoint(folder, *_net_and_trainer("adam"), [mx.cpu()])
