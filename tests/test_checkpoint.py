"""Checkpoints restore parameters and optimizer state exactly, and are written atomically."""
import json
import os
import re

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon

from reid_baseline.config import load_config
from reid_baseline.engine.checkpoint import (
    CheckpointError,
    NonFiniteParameters,
    find_resumable,
    last_checkpoint,
    list_checkpoints,
    load_checkpoint,
    non_finite_parameters,
    save_checkpoint,
    save_parameters,
    verify_checkpoint,
)
from reid_baseline.engine.solver import build_trainer


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
                  zip(gluon.utils.split_and_load(x, ctx), gluon.utils.split_and_load(y, ctx),
                      strict=True)]
    autograd.backward(losses)
    trainer2.step(4)
    for (key, value), param in zip(_params(net).items(), net2.collect_params().values(),
                                   strict=True):
        for copy in param.list_data():
            np.testing.assert_allclose(copy.asnumpy(), value, rtol=1e-5, atol=1e-6, err_msg=key)


def test_checkpoint_of_another_optimizer_is_a_clear_error(tmp_path):
    net, trainer = _net_and_trainer("sgd")
    _step(net, trainer, 0)
    folder = save_checkpoint(str(tmp_path), net, trainer, epoch=1)
    with pytest.raises(CheckpointError, match="holds SGD optimizer state, but this config trains with Adam"):
        load_checkpoint(folder, *_net_and_trainer("adam"), [mx.cpu()])


def _saved(tmp_path, epochs=(1, 2), keep=0):
    net, trainer = _net_and_trainer()
    for epoch in epochs:
        _step(net, trainer, epoch)
        save_checkpoint(str(tmp_path), net, trainer, epoch=epoch, keep=keep)
    return net, trainer


def _truncate(path, keep_bytes=None):
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2 if keep_bytes is None else keep_bytes])


@pytest.mark.parametrize("damaged, message", [
    ("model.params", r"is damaged: model.params has \d+ bytes, expected \d+"),
    ("optimizer.nd", r"is damaged: optimizer.nd has \d+ bytes, expected \d+"),
    ("state.json", "is damaged: state.json is not a complete state file"),
])
def test_a_damaged_last_checkpoint_is_named_and_the_previous_one_is_taken(tmp_path, damaged, message):
    _saved(tmp_path)
    last = last_checkpoint(str(tmp_path))
    _truncate(os.path.join(last, damaged))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(last, *_net_and_trainer(), [mx.cpu()])
    folder, state, passed = find_resumable(str(tmp_path))
    assert folder.endswith("epoch_0001") and state["epoch"] == 1
    assert [f for f, _ in passed] == [last] and re.search(message, passed[0][1])
    net, trainer = _net_and_trainer()
    assert load_checkpoint(folder, net, trainer, [mx.cpu()])["epoch"] == 1


def test_same_size_corruption_is_found_by_the_digest(tmp_path):
    _saved(tmp_path, epochs=(1,))
    path = os.path.join(last_checkpoint(str(tmp_path)), "model.params")
    data = bytearray(open(path, "rb").read())
    data[-5] ^= 0xFF
    open(path, "wb").write(bytes(data))
    with pytest.raises(CheckpointError, match="model.params has %d bytes and another SHA-256" % len(data)):
        verify_checkpoint(last_checkpoint(str(tmp_path)))
    assert find_resumable(str(tmp_path))[0] is None


def test_non_finite_weights_are_never_written(tmp_path):
    net, trainer = _saved(tmp_path, epochs=(1,))
    net[0].weight.data()[0, 0] = float("nan")
    net[-1].weight.data()[1, 2] = float("-inf")
    assert non_finite_parameters(net) == ["0.weight", "2.weight"]
    with pytest.raises(NonFiniteParameters, match="2 arrays hold NaN or infinity"):
        save_checkpoint(str(tmp_path), net, trainer, epoch=2)
    with pytest.raises(NonFiniteParameters):
        save_parameters(net, str(tmp_path / "model_final.params"))
    assert sorted(os.listdir(tmp_path)) == ["checkpoints"]
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["epoch_0001", "last"]
    assert last_checkpoint(str(tmp_path)).endswith("epoch_0001")


@pytest.mark.parametrize("epoch", [1, 2])  # a new epoch, and the same epoch written again
def test_a_failed_write_keeps_the_previous_checkpoint_and_leaves_no_temporary_files(
        tmp_path, monkeypatch, epoch):
    net, trainer = _saved(tmp_path)
    before = {n: verify_checkpoint(str(tmp_path / "checkpoints" / n)) for n in ("epoch_0001", "epoch_0002")}
    real_save = mx.nd.save

    def disk_full(path, data):  # what MXNet says when the disk fills up mid-write
        real_save(path, data)
        _truncate(path, 100)
        raise mx.base.MXNetError("[12:00:00] src/io/local_filesys.cc:166: Check failed: "
                                 "FileStream.Write incomplete")

    monkeypatch.setattr(mx.nd, "save", disk_full)
    with pytest.raises(CheckpointError, match=r"could not write checkpoint .*epoch_000%d "
                       r"\(.*FileStream.Write incomplete\); the earlier checkpoints are intact" % epoch):
        save_checkpoint(str(tmp_path), net, trainer, epoch=epoch)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["epoch_0001", "epoch_0002", "last"]
    assert last_checkpoint(str(tmp_path)).endswith("epoch_0002")
    for name, state in before.items():
        assert verify_checkpoint(str(tmp_path / "checkpoints" / name)) == state


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    net, trainer = _saved(tmp_path, epochs=(1, 2))
    save_checkpoint(str(tmp_path), net, trainer, epoch=2, interrupted=True)
    assert list_checkpoints(str(tmp_path)) == ["epoch_0001", "epoch_0002", "epoch_0002_interrupted"]
    for epoch in (3, 4):
        save_checkpoint(str(tmp_path), net, trainer, epoch=epoch, keep=2)
    assert list_checkpoints(str(tmp_path)) == ["epoch_0003", "epoch_0004"]
    save_checkpoint(str(tmp_path), net, trainer, epoch=5, keep=0)
    assert len(list_checkpoints(str(tmp_path))) == 3


def test_pruning_keeps_a_checkpoint_folder_holding_a_users_file(tmp_path):
    from reid_baseline.fileio import write_output
    net, trainer = _saved(tmp_path, epochs=(1, 2))
    first, second = (tmp_path / "checkpoints" / n for n in ("epoch_0001", "epoch_0002"))
    (first / "NOTES.txt").write_text("mine")
    write_output(str(second / "results.json"), "{}")  # evaluate.py --params on it: the package's
    save_checkpoint(str(tmp_path), net, trainer, epoch=3, keep=1)
    assert (first / "NOTES.txt").read_text() == "mine"  # kept, with its checkpoint
    assert not second.exists()  # its own files and the package's results went
    assert list_checkpoints(str(tmp_path)) == ["epoch_0001", "epoch_0003"]


def test_resuming_with_other_model_settings_is_a_clear_error(tmp_path):
    """E.g. a run trained with MODEL.CLASSIFIER_BIAS true resumed with a config without it."""
    def classifier(bias):
        net = gluon.nn.HybridSequential()
        net.add(gluon.nn.Dense(3, in_units=6, use_bias=bias))
        net.initialize()
        return net, build_trainer(load_config(), net.collect_params())

    net, trainer = classifier(bias=True)
    folder = save_checkpoint(str(tmp_path), net, trainer, epoch=1)
    with pytest.raises(CheckpointError, match="does not fit the model of this config .*MODEL"):
        load_checkpoint(folder, *classifier(bias=False), [mx.cpu()])


def test_a_real_mxnet_write_error_is_one_readable_line(tmp_path, monkeypatch):
    net, trainer = _saved(tmp_path, epochs=(1,))
    real_save = mx.nd.save
    monkeypatch.setattr(mx.nd, "save", lambda path, data: real_save(
        str(tmp_path / "gone" / "optimizer.nd"), data))  # MXNet's own error, as on a lost disk
    with pytest.raises(CheckpointError) as info:
        save_checkpoint(str(tmp_path), net, trainer, epoch=2)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    assert "No such file or directory" in message
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["epoch_0001", "last"]


def test_a_failed_pointer_write_puts_everything_back(tmp_path, monkeypatch):
    net, trainer = _saved(tmp_path)
    before = verify_checkpoint(str(tmp_path / "checkpoints" / "epoch_0002"))
    _step(net, trainer, 9)
    real_replace = os.replace

    def no_space_for_the_pointer(src, dst):
        if dst.endswith("last"):
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", no_space_for_the_pointer)
    for epoch in (2, 3):  # the same epoch again, and a new one
        with pytest.raises(CheckpointError, match="No space left on device"):
            save_checkpoint(str(tmp_path), net, trainer, epoch=epoch)
        assert sorted(os.listdir(tmp_path / "checkpoints")) == ["epoch_0001", "epoch_0002", "last"]
        assert verify_checkpoint(str(tmp_path / "checkpoints" / "epoch_0002")) == before


def test_non_finite_optimizer_state_is_never_written(tmp_path):
    net, trainer = _saved(tmp_path, epochs=(1,))
    mean, var = trainer._updaters[0].states[0]
    var[:] = float("inf")  # Adam's second moment overflowed; the weights are still finite
    assert non_finite_parameters(net) == []
    with pytest.raises(NonFiniteParameters, match="optimizer state 0:1"):
        save_checkpoint(str(tmp_path), net, trainer, epoch=2)
    assert list_checkpoints(str(tmp_path)) == ["epoch_0001"]


def test_a_state_file_without_digests_is_damaged(tmp_path):
    _saved(tmp_path)
    last = last_checkpoint(str(tmp_path))
    state = json.load(open(os.path.join(last, "state.json")))
    del state["files"]
    json.dump(state, open(os.path.join(last, "state.json"), "w"))
    with pytest.raises(CheckpointError, match="is damaged: state.json is not a complete state file"):
        verify_checkpoint(last)
    assert find_resumable(str(tmp_path))[0].endswith("epoch_0001")
