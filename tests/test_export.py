"""scripts/export_model.py and reid_baseline.export: symbol+params and ONNX with parity."""
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
    from reid_baseline.export import parity_batches
    return parity_batches(cfg, paths, num_random=1)["real"]


def test_onnx_export_reproduces_the_features(trained, toy_market_root, tmp_path, monkeypatch,
                                             capsys):
    import onnxruntime

    from reid_baseline.model import load_trained_model
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
    from reid_baseline import export
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
    assert sorted(os.listdir(tmp_path)) == ["bad.onnx.rejected"]  # never under the real name


def test_symbol_export_loads_without_the_package(trained, toy_market_root, tmp_path,
                                                 monkeypatch, capsys):
    from reid_baseline.model import load_trained_model
    cfg, config, params = trained
    code, out, err = run_script(monkeypatch, capsys, "scripts/export_model.py", "--config",
                                 config, "--params", params, "--prefix", tmp_path / "sym")
    assert code == 0, err
    net = mx.gluon.SymbolBlock.imports(str(tmp_path / "sym-symbol.json"), ["data"],
                                       str(tmp_path / "sym-0000.params"))
    paths = sorted(glob.glob(os.path.join(toy_market_root, "query", "*.jpg")))[:3]
    batch = mx.nd.array(_toy_batch(cfg, paths))
    expected = load_trained_model(cfg, params).embedding(batch).asnumpy()
    np.testing.assert_allclose(net(batch).asnumpy(), expected, rtol=0, atol=1e-5)
