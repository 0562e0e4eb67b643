"""scripts/export_model.py and reid_baseline.inference.export: symbol+params and ONNX with parity."""
import glob
import os
import re

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


def _cosines(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _test_time(embedding, batch, flip=True):
    """extract()'s post-processing written out here with numpy: mirror along the width,
    average, L2-normalise."""
    feat = embedding(mx.nd.array(batch)).asnumpy().astype(np.float64)
    if flip:
        feat = (feat + embedding(mx.nd.array(batch[:, :, :, ::-1].copy())).asnumpy()) / 2
    return feat / np.linalg.norm(feat, axis=1, keepdims=True)


def _onnx_features(path, batch):
    import onnxruntime
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: batch})[0]


@pytest.mark.slow
def test_onnx_export_gives_what_extract_gives(trained, toy_market_root, tmp_path, monkeypatch,
                                              capsys):
    from reid_baseline import ReIDModel
    from reid_baseline.modeling.network import load_trained_model
    cfg, config, params = trained
    query_dir = os.path.join(toy_market_root, "query")
    code, out, err = run_script(monkeypatch, capsys, "scripts/export_model.py", "--config",
                                 config, "--params", params, "--prefix", tmp_path / "reid",
                                 "--format", "onnx", "--check-images", query_dir)
    assert code == 0, err
    assert "random images" in out and "real images" in out and "OK" in out
    assert re.search(r"extract\(\) on real images [-0-9.e]+; lowest cosine to extract\(\) "
                     r"(?:0\.99999\d\d|1\.0000000)", out), out
    # Independently of the script's own check: a batch of 5 real images (the file was
    # exported with batch 1, so the batch axis is dynamic) gives ReIDModel.extract()'s
    # features, mirrored and normalised, not the network's raw ones.
    paths = sorted(glob.glob(os.path.join(query_dir, "*.jpg")))[-5:]
    batch = _toy_batch(cfg, paths)
    got = _onnx_features(tmp_path / "reid.onnx", batch)
    extracted = ReIDModel.load(cfg.OUTPUT_DIR).extract(paths)
    assert got.shape == extracted.shape == (5, 512)
    assert np.abs(got - extracted).max() < 1e-4
    assert _cosines(got, extracted).min() > 0.99999
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    embedding = load_trained_model(cfg, params).embedding
    assert np.abs(got - _test_time(embedding, batch)).max() < 1e-4
    raw = embedding(mx.nd.array(batch)).asnumpy()
    assert np.linalg.norm(raw, axis=1).min() > 1.5  # the raw feature is not what users get
    assert not glob.glob(str(tmp_path / "*.tmp*"))
    # --raw: the network's feature alone
    code, out, err = run_script(monkeypatch, capsys, "scripts/export_model.py", "--config",
                                 config, "--params", params, "--prefix", tmp_path / "raw",
                                 "--format", "onnx", "--check-images", query_dir, "--raw")
    assert code == 0, err
    assert "raw feature" in out and "extract()" not in out.split("\n")[-2]
    np.testing.assert_allclose(_onnx_features(tmp_path / "raw.onnx", batch), raw, rtol=0,
                               atol=1e-4)


def _doc_onnx_example():
    """The Python block of docs/INFERENCE.md's Export section."""
    from conftest import ROOT
    with open(os.path.join(ROOT, "docs", "INFERENCE.md"), encoding="utf-8") as f:
        section = f.read().split("\n## Export\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```python\n(.*?)^```", section, re.S | re.M)
    assert len(blocks) == 1, "expected one Python example in INFERENCE.md's Export section"
    return blocks[0]


@pytest.mark.slow
def test_the_documented_onnxruntime_example_gives_extracts_feature(trained, toy_market_root,
                                                                    tmp_path, monkeypatch):
    from reid_baseline import ReIDModel
    from reid_baseline.inference.export import export_model
    cfg, config, params = trained
    code = _doc_onnx_example()
    assert len(code.strip().splitlines()) <= 10
    assert "import reid_baseline" not in code and "from reid_baseline" not in code
    onnx_path = export_model(cfg, params, str(tmp_path / "reid"), "onnx")["files"][0]
    # The example's paths are the demo's: here the session's run and toy set stand in for them.
    image = sorted(glob.glob(os.path.join(toy_market_root, "query", "*.jpg")))[3]
    code = code.replace("runs/demo_toy/reid.onnx", onnx_path)
    code = code.replace("runs/demo_toy", cfg.OUTPUT_DIR)
    code = re.sub(r"data/toy_market1501/Market-1501-v15\.09\.15/query/\w+\.jpg", image, code)
    assert onnx_path in code and image in code and cfg.OUTPUT_DIR + "/config.yaml" in code
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, "docs/INFERENCE.md", "exec"), namespace)
    feature = namespace["feature"]
    expected = ReIDModel.load(cfg.OUTPUT_DIR).extract([image])
    assert feature.shape == expected.shape == (1, 512)
    assert _cosines(feature, expected)[0] > 0.99999


def test_parity_above_tolerance_fails_with_one_line(trained, tmp_path, monkeypatch, capsys):
    from reid_baseline.inference import export
    cfg, config, params = trained
    # The threshold logic alone: no conversion, a difference above 1e-4 on the real images.
    monkeypatch.setattr(export, "export_onnx",
                        lambda embedding, cfg, path: open(path, "w").close() or path)
    monkeypatch.setattr(export, "onnx_runner", lambda path: None)
    monkeypatch.setattr(export, "parity", lambda *a: {
        "max_abs_diff": {"random": 2e-6, "real": 3.5e-3}, "min_cosine": None})
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
    # extract()'s post-processing is in the exported graph: mirror, average, normalise.
    expected = _test_time(load_trained_model(cfg, params).embedding, batch)
    np.testing.assert_allclose(np.load(str(tmp_path / "got.npy")), expected, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_symbol_export_follows_the_configs_test_flip(trained, toy_market_root, tmp_path,
                                                     monkeypatch, capsys):
    from reid_baseline.config import load_config
    from reid_baseline.evaluation.features import FeatureExtractor
    from reid_baseline.modeling.network import load_trained_model
    cfg, config, params = trained
    code, out, err = run_script(monkeypatch, capsys, "scripts/export_model.py", "--config",
                                 config, "--params", params, "--prefix", tmp_path / "noflip",
                                 "TEST.FLIP_FEATURES", "False", "--force")
    assert code == 0, err
    assert "warning: " in err and "TEST.FLIP_FEATURES: True -> False" in err  # not the run's
    assert "lowest cosine to extract()" in out  # checked against extract() on DATASETS.ROOT
    net = mx.gluon.SymbolBlock.imports(str(tmp_path / "noflip-symbol.json"), ["data"],
                                       str(tmp_path / "noflip-0000.params"))
    paths = sorted(glob.glob(os.path.join(toy_market_root, "query", "*.jpg")))[:4]
    batch = _toy_batch(cfg, paths)
    got = net(mx.nd.array(batch)).asnumpy()
    embedding = load_trained_model(cfg, params).embedding
    np.testing.assert_allclose(got, _test_time(embedding, batch, flip=False), rtol=0, atol=1e-5)
    assert np.abs(got - _test_time(embedding, batch, flip=True)).max() > 1e-3
    noflip = load_config(config, ["TEST.FLIP_FEATURES", "False"])
    np.testing.assert_allclose(got, FeatureExtractor(noflip, params)(paths), rtol=0, atol=1e-5)


def test_a_symbol_export_that_fails_its_check_writes_nothing(trained, tmp_path, monkeypatch,
                                                            capsys):
    from reid_baseline.inference import export
    cfg, config, params = trained
    # An exported graph whose features are off by 0.01 from MXNet's.
    monkeypatch.setattr(export, "symbol_runner", lambda prefix: (
        lambda batch: cfg_block[0](mx.nd.array(batch)).asnumpy() + 0.01))
    cfg_block = []
    real_block = export.export_block
    monkeypatch.setattr(export, "export_block",
                        lambda *a, **k: cfg_block.append(real_block(*a, **k)) or cfg_block[0])
    code, out, err = run_script(monkeypatch, capsys, "scripts/export_model.py", "--config",
                                 config, "--params", params, "--prefix", tmp_path / "s",
                                 "--check-images", tmp_path)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert "random images 0.01" in err and "nothing was written" in err
    assert os.listdir(str(tmp_path)) == []


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

    def fake_runner(path):
        assert path != str(tmp_path / "c.onnx") and os.path.isfile(path)
        checked.append(path)
        if len(checked) == 1:
            raise RuntimeError("onnxruntime crashed")

    monkeypatch.setattr(export, "export_onnx",
                        lambda embedding, cfg, path: open(path, "w").close() or path)
    monkeypatch.setattr(export, "onnx_runner", fake_runner)
    monkeypatch.setattr(export, "parity", lambda *a: {"max_abs_diff": {"random": 1e-6},
                                                      "min_cosine": None})
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
