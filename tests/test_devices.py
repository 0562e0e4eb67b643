"""GPUS -> MXNet contexts: "auto" picks GPU 0 or says in one line why it uses the CPU; explicit
ids are checked against the installed MXNet; --gpus reaches GPUS."""
import mxnet as mx
import pytest

from reid_baseline.cli import build_parser, config_from_args
from reid_baseline.config import ConfigError
from reid_baseline.engine import devices
from reid_baseline.engine.devices import DeviceError, build_contexts


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch):
    """Each test is a process that has printed no GPUS auto note yet."""
    monkeypatch.setattr(devices, "_said", set())


def _simulate(monkeypatch, cuda, gpus):
    """Make devices.py see an MXNet built with(out) CUDA and `gpus` visible GPUs (an int, or an
    exception num_gpus raises)."""
    class Features:
        def is_enabled(self, name):
            return cuda if name == "CUDA" else False

    def num_gpus():
        if isinstance(gpus, Exception):
            raise gpus
        return gpus

    monkeypatch.setattr(mx.runtime, "Features", Features)
    monkeypatch.setattr(mx.context, "num_gpus", num_gpus)


def test_auto_on_this_machine_uses_the_cpu_and_says_why(capsys):
    if mx.runtime.Features().is_enabled("CUDA"):
        pytest.skip("this MXNet has CUDA")
    assert build_contexts("auto") == [mx.cpu()]
    assert capsys.readouterr().err == "GPUS auto: this MXNet was built without CUDA; using the CPU\n"


@pytest.mark.parametrize("gpus, reason", [
    (0, "no GPU visible (check CUDA_VISIBLE_DEVICES and nvidia-smi)"),
    (mx.base.MXNetError("CUDA: CUDA driver version is insufficient for CUDA runtime version"),
     "this MXNet cannot count GPUs (CUDA: CUDA driver version is insufficient for CUDA runtime "
     "version)"),
])
def test_auto_with_cuda_but_no_usable_gpu_uses_the_cpu_and_says_why(monkeypatch, capsys, gpus,
                                                                     reason):
    _simulate(monkeypatch, cuda=True, gpus=gpus)
    assert build_contexts("auto") == [mx.cpu()]
    assert capsys.readouterr().err == "GPUS auto: %s; using the CPU\n" % reason


def test_auto_without_cuda_uses_the_cpu_and_says_why_once(monkeypatch, capsys):
    _simulate(monkeypatch, cuda=False, gpus=0)
    assert build_contexts("auto") == [mx.cpu()]
    assert capsys.readouterr().err == "GPUS auto: this MXNet was built without CUDA; using the CPU\n"
    # Training, then evaluating in the same command (the demo) does not repeat it.
    assert build_contexts("auto") == [mx.cpu()]
    assert capsys.readouterr().err == ""


def test_auto_with_a_visible_gpu_takes_gpu_0_silently(monkeypatch, capsys):
    _simulate(monkeypatch, cuda=True, gpus=2)
    assert build_contexts("auto") == [mx.gpu(0)]
    assert capsys.readouterr() == ("", "")


def test_empty_list_is_the_cpu_without_a_note(monkeypatch, capsys):
    _simulate(monkeypatch, cuda=True, gpus=2)  # even when a GPU is there
    assert build_contexts([]) == [mx.cpu()]
    assert capsys.readouterr() == ("", "")


def test_explicit_ids_are_checked_against_the_installed_mxnet(monkeypatch, capsys):
    _simulate(monkeypatch, cuda=False, gpus=0)
    with pytest.raises(DeviceError, match=r"GPUS \[0\] requested, but the installed MXNet was "
                                          r"built without CUDA\. .*mxnet-cu112"):
        build_contexts([0])
    _simulate(monkeypatch, cuda=True, gpus=1)
    with pytest.raises(DeviceError, match=r"GPUS \[0, 1\] requested, but only 1 GPU\(s\) are "
                                          r"visible"):
        build_contexts([0, 1])
    _simulate(monkeypatch, cuda=True, gpus=2)
    assert build_contexts([1, 0]) == [mx.gpu(1), mx.gpu(0)]
    assert capsys.readouterr() == ("", "")


def _gpus_option(value):
    args = build_parser("test").parse_args(["--gpus", value])
    return config_from_args(args).GPUS


def test_gpus_option_reaches_gpus():
    assert config_from_args(build_parser("test").parse_args([])).GPUS == "auto"  # the default
    assert _gpus_option("") == []
    assert _gpus_option("auto") == "auto"
    assert _gpus_option("0, 1") == [0, 1]


@pytest.mark.parametrize("value", ["gpu", "-1", "0;1"])
def test_bad_gpus_option_names_the_option_and_what_it_expects(value):
    with pytest.raises(ConfigError) as err:
        _gpus_option(value)
    assert str(err.value) == ('--gpus expects auto, "" (the CPU) or comma-separated GPU ids, e.g. '
                              "0,1; got %r" % value)


def test_gpu_ids_on_a_cpu_only_mxnet_say_how_to_run_on_the_cpu(monkeypatch):
    _simulate(monkeypatch, cuda=False, gpus=0)
    with pytest.raises(DeviceError) as err:
        build_contexts([0])
    assert '--gpus ""' in str(err.value) and '["GPUS", "[]"]' in str(err.value)


@pytest.mark.skipif(mx.runtime.Features().is_enabled("CUDA"), reason="a CUDA build of MXNet")
def test_a_gpu_run_loaded_on_a_cpu_build_says_how_to_run_on_the_cpu(make_tiny_cfg, tmp_path):
    from reid_baseline.config import save_config
    from reid_baseline.inference.reid_model import ReIDModel
    cfg = make_tiny_cfg(tmp_path)
    cfg.defrost()
    cfg.GPUS = [0]
    save_config(cfg, str(tmp_path / "config.yaml"))
    (tmp_path / "model_final.params").write_bytes(b"")  # the devices are checked first
    with pytest.raises(DeviceError, match='--gpus ""'):
        ReIDModel.load(str(tmp_path))
