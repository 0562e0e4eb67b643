"""The synthetic toy Market-1501 generator: layout, naming, counts, determinism, learnability."""
import collections
import hashlib
import os
import re

import cv2
import numpy as np
import pytest

from reid_baseline.data.datasets.base import DatasetError
from reid_baseline.data.datasets.market1501 import load_market1501
from reid_baseline.data.toy.market1501 import make_toy_market1501

NAME = re.compile(r"^(-1|\d{4})_c([1-6])s[1-9]\d*_\d{6}_\d{2}\.jpg$")
SPLITS = ("bounding_box_train", "bounding_box_test", "query")
SMALL = dict(num_train_ids=4, num_test_ids=4, images_per_id_per_camera=2,
             num_distractors=3, num_junk=3)


def digests(root):
    out = {}
    for split in SPLITS:
        for name in os.listdir(os.path.join(root, split)):
            data = open(os.path.join(root, split, name), "rb").read()
            out[split + "/" + name] = hashlib.md5(data).hexdigest()
    return out


def test_deterministic_for_a_seed(tmp_path):
    a = make_toy_market1501(str(tmp_path / "a"), seed=3, **SMALL)
    b = make_toy_market1501(str(tmp_path / "b"), seed=3, **SMALL)
    c = make_toy_market1501(str(tmp_path / "c"), seed=4, **SMALL)
    assert digests(a["root"]) == digests(b["root"])
    assert digests(a["root"]) != digests(c["root"])
    a.pop("root"), b.pop("root")
    assert a == b


@pytest.mark.timeout(120)  # a generous bound: about a second on an idle machine
def test_default_generation_writes_what_it_reports(tmp_path):
    summary = make_toy_market1501(str(tmp_path))
    folders = {"train_images": "bounding_box_train", "query_images": "query"}
    for key, folder in folders.items():
        assert len(os.listdir(os.path.join(summary["root"], folder))) == summary[key] > 0
    gallery = os.listdir(os.path.join(summary["root"], "bounding_box_test"))
    assert len(gallery) >= summary["gallery_images"] > 0


def test_layout_naming_and_counts(toy_market_root, toy_market):
    assert os.path.basename(toy_market_root) == "Market-1501-v15.09.15"
    files = {s: sorted(os.listdir(os.path.join(toy_market_root, s))) for s in SPLITS}
    for split, names in files.items():
        for name in names:
            assert NAME.match(name), "%s/%s" % (split, name)
    pid = lambda n: int(n.split("_")[0])  # noqa: E731
    train, gallery, query = files["bounding_box_train"], files["bounding_box_test"], files["query"]
    assert len(train) == toy_market["train_images"]
    assert len(query) == toy_market["query_images"]
    assert len(gallery) == toy_market["gallery_files"] == (
        toy_market["gallery_images"] + toy_market["junk"])
    assert sum(pid(n) == -1 for n in gallery) == toy_market["junk"]
    assert sum(pid(n) == 0 for n in gallery) == toy_market["distractors"]
    assert all(n.startswith("-1_c") for n in gallery if pid(n) < 0)
    train_ids = {pid(n) for n in train}
    test_ids = {pid(n) for n in gallery} - {0, -1}
    assert len(train_ids) == toy_market["train_ids"] and len(test_ids) == toy_market["query_ids"]
    assert not train_ids & test_ids and all(p >= 1 for p in train_ids)
    # like Market: one query per (identity, camera) it was seen in; >= 2 gallery cameras
    cams = collections.defaultdict(set)
    for n in gallery:
        cams[pid(n)].add(n.split("_")[1][1])
    query_keys = [(pid(n), n.split("_")[1][1]) for n in query]
    assert len(query_keys) == len(set(query_keys))
    for p in test_ids:
        assert {c for q, c in query_keys if q == p} == cams[p] and len(cams[p]) >= 2
    # 128x64 colour JPEGs
    for name in query[:5] + gallery[:5]:
        img = cv2.imread(os.path.join(toy_market_root, "query" if name in query else
                                      "bounding_box_test", name))
        assert img is not None and img.shape == (128, 64, 3)


def test_overwrite(tmp_path):
    make_toy_market1501(str(tmp_path), **SMALL)
    with pytest.raises(DatasetError, match="already exists"):
        make_toy_market1501(str(tmp_path), **SMALL)
    summary = make_toy_market1501(str(tmp_path), overwrite=True, seed=5, **SMALL)
    assert len(os.listdir(os.path.join(summary["root"], "query"))) == summary["query_images"]


def _rank1(query, gallery, feature):
    q = np.array([feature(r.path) for r in query])
    g = np.array([feature(r.path) for r in gallery])
    qp, qc = np.array([r.pid for r in query]), np.array([r.camid for r in query])
    gp, gc = np.array([r.pid for r in gallery]), np.array([r.camid for r in gallery])
    dist = ((q[:, None, :] - g[None, :, :]) ** 2).sum(-1)
    dist[(qp[:, None] == gp[None]) & (qc[:, None] == gc[None])] = np.inf  # same id + camera
    return float(np.mean(gp[dist.argmin(1)] == qp))


def _normalise(f):
    f = f.ravel() - f.mean()
    return f / (np.linalg.norm(f) + 1e-6)


def test_identities_learnable_but_not_trivial(toy_market_root):
    data = load_market1501(toy_market_root, verify_counts=False)
    chance = 1.0 / len({r.pid for r in data.gallery})

    def raw_pixels(path):
        return _normalise(cv2.resize(cv2.imread(path).astype(np.float32), (8, 16),
                                     interpolation=cv2.INTER_AREA))

    def person_colours(path):  # the figure's centre, with the camera's colour cast divided out
        img = cv2.imread(path).astype(np.float32)[20:110, 22:42]
        img = cv2.resize(img, (4, 12), interpolation=cv2.INTER_AREA)
        return _normalise(img / (img.reshape(-1, 3).mean(0) + 1))

    raw = _rank1(data.query, data.gallery, raw_pixels)
    person = _rank1(data.query, data.gallery, person_colours)
    # the identity signal is in the figure; background, casts and jitter hide it from raw pixels
    assert 0.5 < person < 1.0 and person > 10 * chance
    assert raw < 0.5 and raw < person


def test_script(tmp_path, monkeypatch, capsys):
    from conftest import run_script

    out = str(tmp_path / "toy")
    code, printed, err = run_script(monkeypatch, capsys, "scripts/make_toy_dataset.py",
                                    "market1501", "--out", out, "--num-train-ids", "3",
                                    "--num-test-ids", "2", "--images-per-id-per-camera", "1",
                                    "--seed", "7")
    assert code == 0, err
    assert "Market-1501-v15.09.15" in printed
    data = load_market1501(out, verify_counts=False)
    assert data.num_train_pids == 3 and len({r.pid for r in data.query}) == 2
    code, printed, err = run_script(monkeypatch, capsys, "scripts/make_toy_dataset.py",
                                    "market1501", "--out", out)
    assert code == 2 and err.startswith("error: ") and "already exists" in err  # no --overwrite
