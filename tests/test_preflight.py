"""The pre-training check: a misfit stops before training, and its advice for GPU failures
(simulated on this CPU build)."""
import os

import mxnet as mx
import pytest

from conftest import ROOT, run_script
from reid_baseline.config import load_config
from reid_baseline.engine import preflight
from reid_baseline.errors import DatasetError, DeviceError, ModelError

DEMO = os.path.join(ROOT, "configs", "demo_toy.yml")
# MXNet 1.9.1's own texts for the failures the pre-training check explains.
NO_KERNEL = ("MXNetError: Traceback (most recent call last):\n  File \"../src/common/cuda/utils.h\", "
             "line 333\nMXNetError: Check failed: e == cudaSuccess || e == "
             "cudaErrorCudartUnloading: CUDA: no kernel image is available for execution on "
             "the device")
OLD_DRIVER = ("MXNetError: Check failed: e == cudaSuccess || e == cudaErrorCudartUnloading: CUDA: "
              "CUDA driver version is insufficient for CUDA runtime version")
NO_DEVICE = "MXNetError: [12:00:00] ../include/mxnet/base.h:427: Check failed: e == cudaSuccess (100 vs. 0) : CUDA: no CUDA-capable device is detected"


def demo_cfg(root, *overrides):
    return load_config(DEMO, ["DATASETS.ROOT", root] + list(overrides))


def lines(findings, status):
    return [f.line for f in findings if f.status == status]


def test_preflight_stops_a_misfit_before_training(monkeypatch, capsys, tmp_path, toy_market_root):
    preflight.preflight(demo_cfg(toy_market_root))  # nothing to say
    with pytest.raises(DatasetError, match="does not exist"):
        preflight.preflight(demo_cfg(str(tmp_path / "nowhere")))
    with pytest.raises(ModelError, match="MODEL.PRETRAINED: no such file: .*x.params"):
        preflight.preflight(demo_cfg(toy_market_root, "MODEL.PRETRAINED", str(tmp_path / "x.params")))
    with pytest.raises(DeviceError, match="built without CUDA"):
        preflight.preflight(demo_cfg(toy_market_root, "GPUS", "[0]"))
    # train.py says it as every command says an error, before building anything.
    out_dir = tmp_path / "run"
    code, _, err = run_script(monkeypatch, capsys, "train.py", "--config", DEMO,
                              "DATASETS.ROOT", toy_market_root, "GPUS", "[0]",
                              "OUTPUT_DIR", out_dir)
    assert code == 2 and err.startswith("error: GPUS [0]: this MXNet was built without CUDA")
    assert not out_dir.exists()


@pytest.mark.timeout(60)
def test_no_data_set_and_no_gpu_are_both_named_before_work(monkeypatch, capsys, tmp_path):
    out_dir, nowhere = tmp_path / "run", tmp_path / "nowhere"
    code, out, err = run_script(monkeypatch, capsys, "train.py", "--config", DEMO, "--gpus", "0",
                                "DATASETS.ROOT", nowhere, "OUTPUT_DIR", out_dir)
    assert code == 2 and err.startswith("error: 2 problems: (1) data set: ") and err.count("\n") == 1
    data, gpu = err.split("; (2) ")
    assert "%s: dataset folder does not exist" % nowhere in data
    assert gpu.startswith("GPUS [0]: this MXNet was built without CUDA") and "--gpus" in gpu
    assert not out_dir.exists() and not nowhere.exists()
    # One problem alone is its own line, with its own error class.
    with pytest.raises(DatasetError) as one:
        preflight.preflight(demo_cfg(str(nowhere)))
    assert not str(one.value).startswith("2 problems") and "GPUS" not in str(one.value)


@pytest.mark.timeout(60)
def test_a_missing_data_set_comes_with_the_command_that_makes_it(tmp_path):
    import shlex
    import subprocess
    import sys
    root = tmp_path / "toy"
    cfg = demo_cfg(str(root))
    [finding], data = preflight.check_dataset(cfg)
    assert data is None and finding.status == "fail"
    assert ("fix: python scripts/prepare_dataset.py market1501 --out %s " % root) in finding.line
    # The demo's config verifies no counts: the generated set's command comes too, and works.
    command = finding.line.split("for the generated set: ")[1]
    assert command.startswith("python scripts/make_toy_dataset.py market1501 --out ")
    env = dict(os.environ, PYTHONPATH=ROOT)
    words = shlex.split(command)
    subprocess.run([sys.executable] + words[1:], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=50)
    assert preflight.check_dataset(cfg)[1] is not None
    # A set without an official archive (your own images) is pointed to by DATASETS.ROOT.
    cfg = load_config(DEMO, ["DATASETS.NAME", "folder", "DATASETS.ROOT", str(tmp_path / "x")])
    [finding], _ = preflight.check_dataset(cfg)
    assert finding.line.endswith("fix: set DATASETS.ROOT to the folder of your images "
                                 "(docs/DATASETS.md)")
    # The official set's config: the download command alone.
    cfg = load_config(os.path.join(ROOT, "configs", "market1501.yml"),
                      ["DATASETS.ROOT", str(tmp_path / "m")])
    [finding], _ = preflight.check_dataset(cfg)
    assert finding.line.endswith("fix: python scripts/prepare_dataset.py market1501 --out %s "
                                 "(checks and extracts the official zip; docs/DATASETS.md)"
                                 % (tmp_path / "m"))


class CudaBuild(object):
    """mx.runtime.Features of a CUDA build."""

    def is_enabled(self, name):
        return name in ("CUDA", "CUDNN", "NCCL")


@pytest.fixture
def one_gpu(monkeypatch):
    """A CUDA build of MXNet (CUDA 11.2) that sees one GPU; nvidia-smi shows `smi` (set it)."""
    monkeypatch.setattr(preflight.mx.context, "num_gpus", lambda: 1)
    monkeypatch.setattr(preflight, "build_cuda_version", lambda: (11, 2))
    smi = [("NVIDIA A100-SXM4-40GB", "8.0", "535.104.05")]
    monkeypatch.setattr(preflight, "query_nvidia_smi", lambda: smi)
    return smi


def gpu_findings(monkeypatch, toy_market_root, probe_result, timeout=120):
    monkeypatch.setattr(preflight, "probe_gpu", lambda gpu, timeout: probe_result)
    return preflight.check_gpus(demo_cfg(toy_market_root, "GPUS", "[0]"), CudaBuild(), timeout)


@pytest.mark.parametrize("name,cap,advice", [
    ("NVIDIA H100 80GB HBM3", "9.0", "nvcr.io/nvidia/mxnet:24.06-py3"),
    ("NVIDIA L4", "8.9", "nvcr.io/nvidia/mxnet:24.06-py3"),
    ("NVIDIA A100-SXM4-40GB", "8.0", "'.[cu112]'"),
    ("Tesla K80", "3.7", "no MXNet 1.9.1 build has kernels for compute capability below 5.0"),
])
def test_no_kernel_image_names_the_route_for_the_gpu(monkeypatch, toy_market_root, one_gpu,
                                                     name, cap, advice):
    one_gpu[:] = [(name, cap, "550.54.15")]
    fail = lines(gpu_findings(monkeypatch, toy_market_root, NO_KERNEL), "fail")
    assert len(fail) == 1
    assert fail[0].startswith("GPU 0 (%s, compute capability %s): this MXNet has no kernels" %
                              (name, cap))
    assert advice in fail[0]
    other = "'.[cu112]'" if "nvcr" in advice else "nvcr.io"
    assert other not in fail[0]


def test_driver_errors_ask_for_a_driver_for_the_builds_cuda(monkeypatch, toy_market_root,
                                                           one_gpu):
    fail = lines(gpu_findings(monkeypatch, toy_market_root, OLD_DRIVER), "fail")
    assert len(fail) == 1
    assert "the NVIDIA driver cannot run this MXNet (CUDA 11.2)" in fail[0]
    assert "driver >= 450.80.02" in fail[0]


def test_no_driver_when_counting_gpus(monkeypatch, toy_market_root, one_gpu):
    def no_device():
        raise mx.base.MXNetError(NO_DEVICE)
    monkeypatch.setattr(preflight.mx.context, "num_gpus", no_device)
    findings = preflight.check_gpus(demo_cfg(toy_market_root, "GPUS", "[0]"), CudaBuild())
    assert [f.status for f in findings] == ["fail"]
    assert "the NVIDIA driver cannot run this MXNet" in findings[0].line
    assert "--gpus all" in findings[0].line


def test_driver_older_than_the_builds_cuda(monkeypatch, toy_market_root, one_gpu):
    one_gpu[:] = [("Tesla V100-SXM2-16GB", "7.0", "440.33.01")]
    fail = lines(gpu_findings(monkeypatch, toy_market_root, None), "fail")
    assert fail == ["driver 440.33.01 is older than CUDA 11.2 needs (450.80.02); fix: update "
                    "the NVIDIA driver"]


def test_a_working_gpu_and_a_hung_one(monkeypatch, toy_market_root, one_gpu):
    findings = gpu_findings(monkeypatch, toy_market_root, None)
    assert lines(findings, "fail") == []
    assert "GPU 0 runs a convolution and a BatchNorm" in lines(findings, "ok")
    fail = lines(gpu_findings(monkeypatch, toy_market_root, "timeout", timeout=7), "fail")
    assert len(fail) == 1 and "did not finish in 7 s" in fail[0]


def test_a_gpu_that_is_not_visible(monkeypatch, toy_market_root, one_gpu):
    probed = []
    monkeypatch.setattr(preflight, "probe_gpu", lambda gpu, timeout: probed.append(gpu))
    findings = preflight.check_gpus(demo_cfg(toy_market_root, "GPUS", "[0, 1]"), CudaBuild())
    assert probed == [0]  # only the visible GPU runs the convolution
    assert lines(findings, "fail") == ["GPUS asks for GPU 1 but 1 are visible; fix: check "
                                       "CUDA_VISIBLE_DEVICES and nvidia-smi, or set --gpus"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_probe_runs_in_a_child_process_and_reports_its_error():
    # This CPU build cannot use a GPU: the child fails, and its error comes back as text.
    error = preflight.probe_gpu(0, timeout=240)
    assert error is not None and error != "timeout"
    assert "GPU" in error or "gpu" in error
