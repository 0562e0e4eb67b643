"""The doctor: what it reports on this CPU build (the GPU checks: test_preflight.py)."""
import os

from conftest import ROOT, run_script
from reid_baseline.checks import doctor
from reid_baseline.config import load_config

DEMO = os.path.join(ROOT, "configs", "demo_toy.yml")


def demo_cfg(root, *overrides):
    return load_config(DEMO, ["DATASETS.ROOT", root] + list(overrides))


def lines(findings, status):
    return [f.line for f in findings if f.status == status]


def test_demo_config_can_run_on_the_cpu_build(monkeypatch, capsys, toy_market_root):
    code, out, err = run_script(monkeypatch, capsys, "scripts/doctor.py", "--config", DEMO,
                                "DATASETS.ROOT", toy_market_root)
    assert code == 0, out + err
    assert "CUDA off" in out and "[fail]" not in out
    assert "GPUs: not usable by this MXNet (a CPU build)" in out
    # The toy set's counts, as its generator reports them.
    assert "435 training images of 32 identities, 136 query, 456 gallery" in out
    assert out.rstrip().endswith("the config can run on this machine")


def test_a_config_asking_for_gpu_0_cannot_run_on_the_cpu_build(monkeypatch, capsys,
                                                               toy_market_root):
    code, out, _ = run_script(monkeypatch, capsys, "scripts/doctor.py", "--config", DEMO,
                              "DATASETS.ROOT", toy_market_root, "GPUS", "[0]")
    assert code == 1
    fail = [ln for ln in out.splitlines() if ln.startswith("[fail]")]
    assert len(fail) == 1
    assert "GPUS [0]: this MXNet was built without CUDA" in fail[0]
    assert "'.[cu112]'" in fail[0] and "nvcr.io/nvidia/mxnet:24.06-py3" in fail[0]


def test_shm_need_and_a_small_shm(monkeypatch, toy_market_root):
    cfg = demo_cfg(toy_market_root)
    # 2 workers x 2 batches in flight + 1 in use, each the larger of the training (32) and
    # test (64) batch of 3 x 128 x 64 float32 images.
    need = 5 * 64 * 3 * 128 * 64 * 4
    assert doctor.shm_needed_bytes(cfg) == need
    assert doctor.shm_needed_bytes(demo_cfg(toy_market_root, "DATALOADER.NUM_WORKERS", "0")) == 0

    class Small(object):
        f_bavail, f_frsize = 4096, 4096  # 16 MB free
    monkeypatch.setattr(doctor.os, "statvfs", lambda path: Small())
    [finding] = doctor.check_shm(cfg)
    assert finding.status == "fail"
    assert "0.02 GB free, the loader needs up to 0.03 GB" in finding.line
    assert "--ipc=host" in finding.line


def test_cache_against_available_memory(monkeypatch, toy_market_root):
    import reid_baseline.data.cache as cache
    cfg = demo_cfg(toy_market_root, "DATALOADER.CACHE", "resized")
    _, data = doctor.check_dataset(cfg)
    monkeypatch.setattr(cache, "mem_available_bytes", lambda: 10 ** 9)
    [ok] = doctor.check_cache(cfg, data)
    # 435 training images of 128 x 64 x 3 bytes.
    assert ok == doctor.Finding("ok", "DATALOADER.CACHE resized: %.2f GB fits in memory"
                                % (435 * 128 * 64 * 3 / 1e9))
    monkeypatch.setattr(cache, "mem_available_bytes", lambda: 10 ** 6)
    [fail] = doctor.check_cache(cfg, data)
    assert fail.status == "fail" and "DATALOADER.CACHE resized needs" in fail.line


def test_imagenet_weights_cached_or_not(monkeypatch, tmp_path, toy_market_root):
    monkeypatch.setenv("MXNET_HOME", str(tmp_path))
    cfg = demo_cfg(toy_market_root, "MODEL.PRETRAINED", "imagenet")
    [missing] = doctor.check_weights(cfg)
    assert missing.status == "warn"
    assert "resnet50_v1-cc729d95.params is not in %s" % tmp_path.joinpath("models") in missing.line
    tmp_path.joinpath("models").mkdir()
    tmp_path.joinpath("models", "resnet50_v1-cc729d95.params").write_bytes(b"")
    [found] = doctor.check_weights(cfg)
    assert found.status == "ok" and "resnet50_v1-cc729d95.params" in found.line
    [no_file] = doctor.check_weights(demo_cfg(toy_market_root, "MODEL.PRETRAINED",
                                              str(tmp_path / "none.params")))
    assert no_file.status == "fail" and "no such file" in no_file.line


def test_weights_source_that_does_not_answer_is_named(monkeypatch, tmp_path, toy_market_root):
    from reid_baseline.modeling import pretrained
    monkeypatch.setenv("MXNET_HOME", str(tmp_path))
    monkeypatch.setattr(pretrained, "_answers", lambda url, timeout: False)
    cfg = demo_cfg(toy_market_root, "MODEL.BACKBONE", "resnet50_v1b", "MODEL.PRETRAINED",
                   "hf:timm/resnet50.gluon_in1k")
    [dead] = doctor.check_weights(cfg, check_source=True)
    assert dead.status == "fail"
    assert "hf-timm--resnet50.gluon_in1k.params is not in" in dead.line
    assert "does not answer now (https://huggingface.co/timm/resnet50.gluon_in1k/" in dead.line
    monkeypatch.setattr(pretrained, "_answers", lambda url, timeout: True)
    [alive] = doctor.check_weights(cfg, check_source=True)
    assert alive.status == "warn" and alive.line.endswith("; its source answers")
    [wrong] = doctor.check_weights(demo_cfg(toy_market_root, "MODEL.PRETRAINED",
                                            "hf:timm/resnet50.gluon_in1k"))
    assert wrong.status == "fail" and "resnet50_v1b" in wrong.line


def test_blas_kernel(monkeypatch):
    import threadpoolctl
    info = {"user_api": "blas", "internal_api": "openblas", "version": "0.3.20",
            "filepath": "/venv/site-packages/numpy.libs/libopenblas64_p-r0.so"}
    monkeypatch.setattr(threadpoolctl, "threadpool_info",
                        lambda: [dict(info, architecture="Prescott")])
    [generic] = doctor.check_blas()
    assert generic.status == "warn" and "OPENBLAS_CORETYPE" in generic.line
    monkeypatch.setattr(threadpoolctl, "threadpool_info", lambda: [dict(info, architecture="Zen")])
    assert doctor.check_blas() == [doctor.Finding("ok", "numpy BLAS: openblas 0.3.20, CPU kernel Zen")]


def test_report_exit_codes(capsys):
    assert doctor.report([doctor.Finding("ok", "a"), doctor.Finding("warn", "b")]) == 0
    assert doctor.report([doctor.Finding("fail", "c")]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == ["[ok] a", "[warn] b", "the config can run on this machine", "[fail] c",
                   "1 problem(s): the config cannot run on this machine as it is"]


def test_two_opencv_distributions_are_flagged(monkeypatch):
    owners = {"cv2": ["opencv-python", "opencv-python-headless"], "mxnet": ["mxnet"]}
    monkeypatch.setattr(doctor.importlib.metadata, "packages_distributions", lambda: owners)
    [both] = [f for f in doctor.check_packages() if f.line.startswith("OpenCV")]
    assert both.status == "warn"
    assert "fix: pip uninstall opencv-python opencv-python-headless" in both.line
    owners["cv2"] = ["opencv-python"]
    assert doctor.Finding("ok", "OpenCV: opencv-python") in doctor.check_packages()


def test_tensorboard_without_tensorboardx_cannot_run(monkeypatch, capsys, toy_market_root):
    import sys
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    code, out, _ = run_script(monkeypatch, capsys, "scripts/doctor.py", "--config", DEMO,
                              "DATASETS.ROOT", toy_market_root, "SOLVER.TENSORBOARD", "True")
    assert code == 1
    fail = [ln for ln in out.splitlines() if ln.startswith("[fail]")]
    assert fail == ["[fail] SOLVER.TENSORBOARD needs tensorboardX: pip install -c "
                    "constraints.txt -e '.[tensorboard]'"]


def test_a_missing_data_set_line_gives_its_fix(monkeypatch, capsys, tmp_path):
    code, out, err = run_script(monkeypatch, capsys, "scripts/doctor.py", "--config", DEMO,
                                "DATASETS.ROOT", tmp_path / "none")
    assert code == 1, out + err
    [line] = [ln for ln in out.splitlines() if ln.startswith("[fail] data set:")]
    assert "fix: python scripts/prepare_dataset.py market1501 --out %s" % (tmp_path / "none") \
        in line
