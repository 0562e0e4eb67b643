"""reid_baseline.engine.telemetry: network size and cost, the log line, data share, time left, memory,
TensorBoard scalars."""
import json
import os
import re
import struct

import mxnet as mx
import pytest
from mxnet import gluon

from reid_baseline.engine import telemetry
from reid_baseline.engine.run_folder import read_metrics


def _two_layers():
    net = gluon.nn.HybridSequential()
    net.add(gluon.nn.Conv2D(4, kernel_size=3, padding=1, in_channels=3),
            gluon.nn.Dense(5))  # flattens the 4 x 8 x 6 map: 192 inputs
    net.initialize()
    return net


@pytest.mark.parametrize("hybridize", [False, True])
def test_two_layer_network_by_hand(hybridize):
    net = _two_layers()
    if hybridize:
        net.hybridize()
        net(mx.nd.zeros((1, 3, 8, 6)))
    params, macs = telemetry.count_parameters_and_macs(net, 8, 6)
    conv = (8 * 6 * 4) * (3 * 3 * 3)  # output elements x (in channels x kernel)
    dense = 5 * (4 * 8 * 6)
    assert macs == conv + dense == 6144
    assert params == (4 * 3 * 3 * 3 + 4) + (5 * 192 + 5)


@pytest.mark.parametrize("name, gmacs, mparams", [("resnet50_v1", 3.86, 25.58),
                                                  ("resnet50_v1b", 4.09, 25.56)])
def test_resnet50_figures_at_224(name, gmacs, mparams):
    from gluoncv.model_zoo import get_model

    params, macs = telemetry.count_parameters_and_macs(get_model(name, pretrained=False), 224, 224)
    assert round(macs / 1e9, 2) == gmacs
    assert round(params / 1e6, 2) == mparams


class _FakeTime(object):
    def __init__(self):
        self.now = 100.0

    def perf_counter(self):
        return self.now


def test_clock_data_share_and_time_left(monkeypatch):
    fake = _FakeTime()
    monkeypatch.setattr(telemetry, "time", fake)

    def loader():  # each batch takes 3 s to arrive
        for i in range(10):
            fake.now += 3
            yield i

    clock = telemetry.RunClock(max_epochs=5)
    clock.start_epoch(1, 10)  # the second epoch (0-based 1) of 5, 10 iterations
    for i in clock.timed(loader()):
        fake.now += 1  # the step
        if i == 3:
            break
    progress = clock.read(4, images=128)  # 4 iterations of 4 s, 32 images each
    assert progress["data_share"] == pytest.approx(0.75)
    assert progress["images_per_sec"] == pytest.approx(8.0)
    assert progress["epoch_seconds_left"] == pytest.approx(6 * 4)
    assert progress["run_seconds_left"] == pytest.approx(6 * 4 + 3 * 10 * 4)
    fake.now += 24 + 10  # the epoch's rest, then 10 s of after-epoch steps: 50 s in all
    clock.start_epoch(2, 10)
    assert clock.epoch_seconds == [50]
    fake.now += 4  # whole epochs measured: they estimate the later ones
    assert clock.read(1, 32)["run_seconds_left"] == pytest.approx(9 * 4 + 2 * 50)


def test_log_line_format():
    line = telemetry.log_line({"epoch": 2, "max_epochs": 80, "iteration": 40, "iterations": 404,
                               "loss": 1.23456, "train_acc": 0.5, "lr": 3.5e-4,
                               "images_per_sec": 123.45, "data_share": 0.125,
                               "epoch_seconds_left": 61, "run_seconds_left": 3725})
    assert line == ("epoch 2/80 iter 40/404: loss 1.2346 acc 0.500 lr 3.50e-04 123.5 images/s "
                    "data 0.12 left 0:01:01 epoch, 1:02:05 run")


def test_memory_metrics_on_the_cpu():
    metrics = telemetry.memory_metrics([mx.cpu()])
    assert set(metrics) == {"peak_rss_mb"} and metrics["peak_rss_mb"] > 10


def _events(folder):
    """(tag, step, value) of every scalar in the TFRecord event files of `folder`."""
    from tensorboardX.proto import event_pb2

    found = []
    for name in sorted(os.listdir(folder)):
        data = open(os.path.join(folder, name), "rb").read()
        offset = 0
        while offset < len(data):
            length, = struct.unpack("<Q", data[offset:offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 12 + length + 4  # length, its CRC, the record, its CRC
            found += [(v.tag, event.step, v.simple_value) for v in event.summary.value]
    return found


@pytest.mark.timeout(900)
@pytest.mark.slow
def test_a_one_epoch_run_logs_its_progress_and_tensorboard_scalars(make_small_cfg, small_toy,
                                                                  tmp_path):
    from reid_baseline.engine.loop import train

    cfg = make_small_cfg(tmp_path, "SOLVER.MAX_EPOCHS", "1", "SOLVER.EVAL_PERIOD", "1",
                         "SOLVER.TENSORBOARD", "True", "SOLVER.LOG_PERIOD", "2")
    steps = small_toy["train_images"] // 32  # 3: a read at iteration 2, and the last
    assert steps % 2 == 1
    log_steps = list(range(2, steps, 2)) + [steps]
    history = train(cfg)
    log = (tmp_path / "train.log").read_text()
    assert re.search(r"network resnet18_v1: 11\.\d\d M parameters, 0\.\d\d GMACs per 64x32 "
                     r"image \(multiply-adds.*devices cpu\(0\)", log)
    reads = re.findall(r"epoch 1/1 iter (\d+)/%d: loss ([\d.]+) acc ([\d.]+) lr \S+ ([\d.]+) "
                       r"images/s data ([\d.]+) left \d+:\d\d:\d\d epoch, \d+:\d\d:\d\d run" % steps, log)
    assert [int(r[0]) for r in reads] == log_steps  # every SOLVER.LOG_PERIOD, and the last
    for _, loss, acc, ips, share in reads:
        assert float(loss) > 0 and 0 <= float(acc) <= 1 and float(ips) > 0
        assert 0 <= float(share) <= 1
    row, = read_metrics(str(tmp_path))
    assert row == json.loads(json.dumps(history[0]))
    assert 0 <= row["data_share"] <= 1 and row["peak_rss_mb"] > 10
    assert row["run_seconds_left"] == 0 and row["loss"] == pytest.approx(float(reads[-1][1]), abs=1e-4)
    assert row["gmacs_per_image"] > 0 and 11e6 < row["params"] < 12e6
    scalars = _events(str(tmp_path / "tensorboard"))
    tags = {tag for tag, _, _ in scalars}
    assert tags == {t for t, _ in telemetry.LOG_SCALARS + telemetry.EPOCH_SCALARS}
    assert sorted(s for t, s, _ in scalars if t == "train/loss") == log_steps
    assert [(s, v) for t, s, v in scalars if t == "eval/rank1"] == [
        (1, pytest.approx(row["rank1"], rel=1e-6))]
    assert [v for t, _, v in scalars if t == "epoch/loss"] == [pytest.approx(row["loss"], rel=1e-6)]


def test_a_missing_tensorboardx_names_the_extra(monkeypatch, tmp_path, make_tiny_cfg):
    import builtins
    real_import = builtins.__import__

    def no_tensorboardx(name, *args, **kwargs):
        if name.startswith("tensorboardX"):
            raise ImportError("No module named 'tensorboardX'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboardx)
    extra = r"pip install -c constraints.txt -e '\.\[tensorboard\]'"
    with pytest.raises(telemetry.ConfigError, match=extra):
        telemetry.open_tensorboard(str(tmp_path))
    # Found before training builds anything: the pre-training check asks for it too.
    from reid_baseline.engine.preflight import preflight
    with pytest.raises(telemetry.ConfigError, match=extra):
        preflight(make_tiny_cfg(tmp_path / "run", "SOLVER.TENSORBOARD", "True"))
