"""scripts/export_model.py and reid_baseline.inference.export: symbol+params and ONNX with parity."""
import glob
import os

import mxnet as mx
import numpy as np
import pytest

from conftest import run_script


@pytest.fixture(scope="module")
def trained(trained_run):
    """(cfg, config.yaml, model_final.params) of the session's short training run (shared
    with test_engine: no extra training in the suite)."""
    cfg, _ = trained_run
    return cfg, os.path.join(cfg.OUTPUT_DIR, "config.yaml"), os.path.join(cfg.OUTPUT_DIR,
                                                                       "model_final.params")


def _toy_batch(cfg, paths):
    from reid_baseline.inference.export import parity_batches
    return parity_batches(cfg, paths, num_random=1)["real"]


@pytest.mark.slow
def test_onnx_export_reproduces_the_features(trained, toy_market_root, tmp_path, monkeypatch,
                                             capsys):
    import onnxruntime

    from reid_baseline.modeling.network import load_trained_model
    cfg, config, params = trained
    query_dir = os.path.join(toy_market_root, "query")
    code, out, err = run_script(monkeypatch, capsys, "scripts/export_model.py", "--config",
                                 config, "--params", params, "--prefix", tmp_path / "reid",
                                 "--format", "onnx", "--check-images", query_dir)
    assert code == 0, err
    assert "random images" in out and "real images" in out and "OK" in out
    # Independently of the script's own check: a batch of 5 real images (the file was
    # exported with batch 1, so the batch axis is dynamic) gives MXNet's features.
    paths = sorted(glob.glob(os.path.join(query_dir, "*.jpg")))[-5:]
    batch = _toy_batch(cfg, paths)
    session = onnxruntime.InferenceSession(str(tmp_path / "reid.onnx"),
                                           providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: batch})[0]
    expected = load_trained_model(cfg, params).embedding(mx.nd.array(batch)).asnumpy()
    assert got.shape == (5, 512)
    assert np.abs(got - expected).max() < 1e-4
    assert np.abs(expected).max() > 1e-2  # real features, not a trivial zero output
    assert not glob.glob(str(tmp_path / "*.tmp*"))


def test_parity_above_tolerance_fails_with_one_line(trained, tmp_path, monkeypatch, capsys):
    from reid_baseline.inference import export
    cfg, config, params = trained
    # The threshold logic alone: no conversion, a difference above 1e-4 on the real images.
    monkeypatch.setattr(export, "export_onnx",
                        lambda embedding, cfg, path: open(path, "w").close() or path)
    monkeypatch.setattr(export, "onnx_max_difference",
                        lambda *a: {"random": 2e-6, "real": 3.5e-3})
    code, out, err = run_script(monkeypatch, capsys, "scripts/export_model.py", "--config",
                                 config, "--params", params, "--prefix", tmp_path / "bad",
                                 "--format", "onnx", "--check-images", tmp_path)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "0.0035" in err and "tolerance 0.0001" in err and "bad.onnx.rejected" in err
    assert _onnx_files(tmp_path) == ["bad.onnx.rejected"]  # never under the real name


# Run by a bare Python in which `import reid_baseline` fails: only MXNet reads the export.
_LOAD_WITHOUT_PACKAGE = """
import sys
sys.modules["reid_baseline"] = None  # import reid_baseline raises ImportError from here on
try:
    import reid_baseline  # noqa: F401
    sys.exit("reid_baseline could be imported")
except ImportError:
    pass
import mxnet as mx
import numpy as np
prefix, batch, out = sys.argv[1:]
net = mx.gluon.SymbolBlock.imports(prefix + "-symbol.json", ["data"], prefix + "-0000.params")
np.save(out, net(mx.nd.array(np.load(batch))).asnumpy())
assert not any(name.startswith("reid_baseline") for name in sys.modules if sys.modules[name])
"""


@pytest.mark.slow
def test_symbol_export_loads_without_the_package(trained, toy_market_root, tmp_path,
                                                 monkeypatch, capsys):
    import subprocess
    import sys

    from reid_baseline.modeling.network import load_trained_model
    cfg, config, params = trained
    code, out, err = run_script(monkeypatch, capsys, "scripts/export_model.py", "--config",
                                 config, "--params", params, "--prefix", tmp_path / "sym")
    assert code == 0, err
    paths = sorted(glob.glob(os.path.join(toy_market_root, "query", "*.jpg")))[:3]
    # Real images and one of random pixels.
    batch = np.concatenate([_toy_batch(cfg, paths), np.random.RandomState(0).uniform(
        size=(1, 3, cfg.INPUT.HEIGHT, cfg.INPUT.WIDTH)).astype(np.float32)])
    np.save(str(tmp_path / "batch.npy"), batch)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.Popen([sys.executable, "-c", _LOAD_WITHOUT_PACKAGE, str(tmp_path / "sym"),
                             str(tmp_path / "batch.npy"), str(tmp_path / "got.npy")],
                            cwd=str(tmp_path), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output.decode(errors="replace")
    expected = load_trained_model(cfg, params).embedding(mx.nd.array(batch)).asnumpy()
    np.testing.assert_allclose(np.load(str(tmp_path / "got.npy")), expected, rtol=0, atol=1e-5)


def _onnx_files(folder):
    return sorted(n for n in os.listdir(str(folder)) if ".onnx" in n)


def test_unreadable_check_images_leave_no_onnx_file(trained, tmp_path, monkeypatch, capsys):
    cfg, config, params = trained
    images = tmp_path / "images"
    images.mkdir()
    (images / "broken.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
    code, out, err = run_script(monkeypatch, capsys, "scripts/export_model.py", "--config",
                                 config, "--params", params, "--prefix", tmp_path / "b",
                                 "--format", "onnx", "--check-images", images)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert "broken.jpg" in err
    assert _onnx_files(tmp_path) == []  # nothing at b.onnx, no temporary file either


def test_onnx_file_is_named_only_after_its_check_passes(trained, tmp_path, monkeypatch, capsys):
    from reid_baseline.inference import export
    cfg, config, params = trained
    checked = []

    def fake_check(embedding, path, batches):
        assert path != str(tmp_path / "c.onnx") and os.path.isfile(path)
        checked.append(path)
        if len(checked) == 1:
            raise RuntimeError("onnxruntime crashed")
        return {"random": 1e-6}

    monkeypatch.setattr(export, "export_onnx",
                        lambda embedding, cfg, path: open(path, "w").close() or path)
    monkeypatch.setattr(export, "onnx_max_difference", fake_check)
    args = ["scripts/export_model.py", "--config", config, "--params", params, "--prefix",
            tmp_path / "c", "--format", "onnx", "--check-images", tmp_path / "none"]
    tmp_path.joinpath("none").mkdir()
    with pytest.raises(RuntimeError):
        run_script(monkeypatch, capsys, *args)
    assert _onnx_files(tmp_path) == []  # a check that failed to run leaves nothing
    code, out, err = run_script(monkeypatch, capsys, *args)
    assert code == 0, err
    assert _onnx_files(tmp_path) == ["c.onnx"]
    # the package's own, unedited file is replaced; once a user changed it, it never is
    assert run_script(monkeypatch, capsys, *args)[0] == 0
    tmp_path.joinpath("c.onnx").write_text("edited by hand")
    code, out, err = run_script(monkeypatch, capsys, *args)
    assert code == 2 and "ONNX file %s exists and is not a file the package wrote" \
        % (tmp_path / "c.onnx") in err
    assert tmp_path.joinpath("c.onnx").read_text() == "edited by hand"
    assert run_script(monkeypatch, capsys, *args, "--overwrite")[0] == 0


@pytest.mark.timeout(300)
@pytest.mark.slow
def test_a_full_disk_during_the_symbol_export_is_one_line_and_no_cut_file(make_tiny_cfg,
                                                                         tmp_path):
    import resource
    import subprocess
    import sys

    from conftest import ROOT
    from reid_baseline.config import save_config
    from reid_baseline.modeling.network import build_model
    cfg = make_tiny_cfg(tmp_path)
    config, params = str(tmp_path / "tiny.yml"), str(tmp_path / "tiny.params")
    save_config(cfg, config)
    net = build_model(cfg, 10)
    net(mx.nd.zeros((1, 3, cfg.INPUT.HEIGHT, cfg.INPUT.WIDTH)))
    net.save_parameters(params)
    out = tmp_path / "out"
    out.mkdir()
    limit = os.path.getsize(params) // 2  # a file of half the weights' size fills the "disk"

    def small_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "export_model.py"),
                           "--config", config, "--params", params, "--prefix", str(out / "m")],
                          capture_output=True, text=True, env=env, preexec_fn=small_disk,
                          timeout=240)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "cannot write %s-symbol.json and %s-0000.params" % (out / "m", out / "m") in proc.stderr
    assert os.listdir(out) == []  # nothing cut short under a final name, no temporaries
