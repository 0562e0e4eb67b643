"""reid_baseline.inference.reid_model.ReIDModel: loading a run, features equal to evaluation's, errors, the
documented five-line example."""
import os
import re
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def run_dir(trained_run):
    """The session's short training run on the toy set (config.yaml, model_final.params)."""
    cfg, _ = trained_run
    return cfg.OUTPUT_DIR


@pytest.fixture(scope="module")
def model(run_dir):
    from reid_baseline import ReIDModel
    return ReIDModel.load(run_dir)


@pytest.fixture(scope="module")
def some_images(toy_market_root):
    return sorted(os.path.join(toy_market_root, "query", n)
                  for n in os.listdir(os.path.join(toy_market_root, "query")))[:5]


def test_import_is_light_and_exports_the_model():
    code = ("import sys, reid_baseline; assert 'mxnet' not in sys.modules, 'mxnet imported'; "
            "from reid_baseline import ReIDModel; "
            "print(ReIDModel.__name__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env=dict(os.environ, PYTHONPATH=ROOT))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ReIDModel"


@pytest.mark.slow
def test_features_equal_evaluation_from_paths_arrays_and_pil(model, some_images):
    """Evaluation's own pipeline (test loader + extract_features), computed independently."""
    from PIL import Image

    from reid_baseline.data.datasets.base import Record
    from reid_baseline.data.loader import build_test_loader
    from reid_baseline.evaluation.features import extract_features
    cfg = model.cfg
    loader = build_test_loader(cfg, [Record(p, 0, 0) for p in some_images])
    expected = extract_features(model.embedding, loader, model.ctx, flip=cfg.TEST.FLIP_FEATURES,
                                normalize=cfg.TEST.NORMALIZE_FEATURES)
    arrays = [cv2.imread(p, cv2.IMREAD_COLOR)[:, :, ::-1] for p in some_images]  # BGR -> RGB
    pils = [Image.open(p) for p in some_images]
    mixed = [some_images[0], arrays[1], pils[2], some_images[3], arrays[4]]
    for images in (some_images, arrays, pils, mixed):
        got = model.extract(images)
        assert got.shape == expected.shape and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(expected, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(model.extract(some_images[0]), expected[:1], rtol=0, atol=1e-6)
    np.testing.assert_allclose(model.extract(pils[0]), expected[:1], rtol=0, atol=1e-6)  # one PIL
    assert model.extract([]).shape == (0, expected.shape[1])


def test_one_path_from_parameters_to_features(model, some_images, monkeypatch):
    """ReIDModel is evaluation's FeatureExtractor, and evaluate_params loads the parameters
    through it: a FeatureExtractor of the same file gives the same features, bit for bit."""
    from reid_baseline.evaluation import evaluator
    from reid_baseline.evaluation.features import FeatureExtractor
    assert isinstance(model, FeatureExtractor)
    extractor = FeatureExtractor(model.cfg, model.params_path)
    np.testing.assert_array_equal(extractor(some_images), model.extract(some_images))
    built = []

    class Recording(FeatureExtractor):
        def __init__(self, *args, **kwargs):
            built.append(args)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(evaluator, "FeatureExtractor", Recording)
    monkeypatch.setattr(evaluator, "evaluate_extractor", lambda cfg, extract, dataset,
                        with_ranking: ({"extract": extract}, None))
    results = evaluator.evaluate_params(model.cfg, model.params_path)
    assert isinstance(results["extract"], Recording) and built == [(model.cfg, model.params_path)]


def test_flip_averaged_features_match_an_independent_computation(model, some_images):
    """Network on the image and on its mirror, averaged, L2-normalised: by hand."""
    import mxnet as mx
    cfg = model.cfg
    img = cv2.imread(some_images[0], cv2.IMREAD_COLOR)[:, :, ::-1]
    img = cv2.resize(img, (cfg.INPUT.WIDTH, cfg.INPUT.HEIGHT), interpolation=cv2.INTER_LINEAR)
    x = (img.astype(np.float32) / 255 - np.float32(cfg.INPUT.PIXEL_MEAN)) / np.float32(
        cfg.INPUT.PIXEL_STD)
    x = x.transpose(2, 0, 1)[None]
    f = model.embedding(mx.nd.array(x)).asnumpy() + model.embedding(
        mx.nd.array(x[:, :, :, ::-1].copy())).asnumpy()
    f /= np.linalg.norm(f)
    np.testing.assert_allclose(model.extract([some_images[0]]), f, rtol=0, atol=1e-5)


def test_distance_is_evaluations(model, some_images):
    from reid_baseline.evaluation.distances import compute_distance
    feats = model.extract(some_images)
    np.testing.assert_array_equal(model.distance(feats[:2], feats),
                                  compute_distance(feats[:2], feats, model.cfg.TEST.DISTANCE))
    assert model.distance(feats[:1], feats[:1])[0, 0] == pytest.approx(0, abs=1e-6)
    from reid_baseline.errors import DatasetError
    with pytest.raises(DatasetError, match=r"got shapes \(2, %d\) and \(3, 5\)" % feats.shape[1]):
        model.distance(feats[:2], np.zeros((3, 5), np.float32))


def _one_line(exc):
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_unreadable_or_wrong_images_are_one_line_errors_naming_them(model, tmp_path):
    from reid_baseline.errors import DatasetError
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really")
    with pytest.raises(DatasetError) as exc:
        model.extract([str(bad)])
    assert str(bad) in _one_line(exc)
    with pytest.raises(DatasetError) as exc:
        model.extract([str(tmp_path / "missing.jpg")])
    assert "missing.jpg" in _one_line(exc)
    with pytest.raises(DatasetError) as exc:
        model.extract([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.float32)])
    assert "images[1]" in _one_line(exc) and "HxWx3 uint8" in str(exc.value)
    with pytest.raises(DatasetError) as exc:
        model.extract([3.5])
    assert "images[0]" in _one_line(exc)


def test_run_without_final_model_names_the_newest_checkpoint(run_dir, tmp_path):
    from reid_baseline import ReIDModel
    from reid_baseline.errors import RunDirError
    unfinished = tmp_path / "run"
    unfinished.mkdir()
    shutil.copy(os.path.join(run_dir, "config.yaml"), str(unfinished))
    for name in ("epoch_0002", "epoch_0004", "epoch_0003_interrupted"):
        (unfinished / "checkpoints" / name).mkdir(parents=True)
    with pytest.raises(RunDirError) as exc:
        ReIDModel.load(str(unfinished))
    text = _one_line(exc)
    assert "model_final.params" in text
    assert os.path.join(str(unfinished), "checkpoints", "epoch_0004", "model.params") in text
    with pytest.raises(RunDirError) as exc:
        ReIDModel.load(str(tmp_path / "nothing"))
    assert "nothing" in _one_line(exc)


def test_load_with_config_and_params_and_overrides(run_dir, model, some_images):
    from reid_baseline import ReIDModel
    other = ReIDModel.load(config=os.path.join(run_dir, "config.yaml"),
                           params=os.path.join(run_dir, "model_final.params"),
                           overrides=["TEST.BATCH_SIZE", "2"])
    assert other.cfg.TEST.BATCH_SIZE == 2
    np.testing.assert_allclose(other.extract(some_images), model.extract(some_images),
                               rtol=0, atol=1e-6)


@pytest.mark.slow
def test_the_documented_five_lines_run(run_dir, toy_market_root, tmp_path, monkeypatch):
    """The example of docs/INFERENCE.md, on the session's run and toy set."""
    with open(os.path.join(ROOT, "docs", "INFERENCE.md")) as f:
        doc = f.read()
    code = re.search(r"```python\n(.*?)```", doc, re.S).group(1)
    assert len(code.strip().splitlines()) == 5
    toy = os.path.dirname(toy_market_root)
    code = code.replace('"runs/demo_toy"', repr(run_dir)).replace('"data/toy_market1501',
                                                                   '"' + toy)
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(code, "INFERENCE.md", "exec"), scope)
    first = scope["results"][0]
    assert len(first) == 5
    assert [d for _, d in first] == sorted(d for _, d in first)
    assert all(p.startswith(os.path.join(toy_market_root, "bounding_box_test")) for p, _ in first)
    assert os.path.isfile(str(tmp_path / "gallery.index" / "features.npy"))


@pytest.mark.parametrize("mode", ["I;16", "L", "LA", "P", "RGBA"])
def test_a_pil_image_gives_the_pixels_of_the_same_image_as_a_file(tmp_path, mode):
    from PIL import Image

    from reid_baseline.data.images import read_image
    from reid_baseline.inference.reid_model import as_image
    rng = np.random.default_rng(0)
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65536, (24, 12), dtype=np.uint16))
        assert image.mode.startswith("I;16")
    else:
        image = Image.fromarray(rng.integers(0, 256, (24, 12, 4), dtype=np.uint8),
                                "RGBA").convert(mode)
    image.save(str(tmp_path / "a.png"))
    np.testing.assert_array_equal(as_image(image, "images[0]"),
                                  read_image(str(tmp_path / "a.png")))


def test_an_empty_pil_image_is_one_error_naming_it():
    from PIL import Image

    from reid_baseline.errors import DatasetError
    from reid_baseline.inference.reid_model import as_image
    with pytest.raises(DatasetError, match=r"images\[3\]: an empty image \(0 x 0 pixels\)"):
        as_image(Image.new("RGB", (0, 0)), "images[3]")


@pytest.mark.timeout(120)
def test_load_refuses_a_config_that_changes_the_runs_features(saved_model, tmp_path):
    import warnings

    import yaml

    from reid_baseline import ReIDModel
    from reid_baseline.errors import ConfigError
    config, params = saved_model
    height = yaml.safe_load(open(config))["INPUT"]["HEIGHT"]
    other = tmp_path / "other.yml"  # the run's config with another input height
    other.write_text(open(config).read().replace("HEIGHT: %d" % height, "HEIGHT: %d" % (2 * height)))
    wanted = "INPUT.HEIGHT: %d -> %d" % (height, 2 * height)
    for kwargs in (dict(config=str(other), params=params),
                   dict(run_dir=os.path.dirname(params),
                        overrides=["INPUT.HEIGHT", str(2 * height)])):
        with pytest.raises(ConfigError) as exc:
            ReIDModel.load(**kwargs)
        assert wanted in _one_line(exc) and config in str(exc.value)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = ReIDModel.load(config=str(other), params=params, force=True)
    assert model.cfg.INPUT.HEIGHT == 2 * height
    assert [str(w.message) for w in caught if wanted in str(w.message)]
    # a params file with no run config beside it: nothing to compare
    alone = tmp_path / "alone.params"
    shutil.copy(params, str(alone))
    assert ReIDModel.load(config=str(other), params=str(alone)).cfg.INPUT.HEIGHT == 2 * height
