"""Market-1501 layout parsing, loading, count verification and image reading."""
import os
import re
import shutil

import cv2
import numpy as np
import pytest

from reid_baseline.data.datasets.base import DatasetError, Record, relabel_records
from reid_baseline.data.datasets.market1501 import (
    EXPECTED_COUNTS,
    ROOT_NAME,
    Market1501,
    find_root,
    load_market1501,
    parse_filename,
    parse_split,
)
from reid_baseline.data.images import read_image
from reid_baseline.data.toy.market1501 import make_toy_market1501


def small_toy(tmp_path):
    """A tiny private toy set that a test may damage."""
    summary = make_toy_market1501(str(tmp_path), num_train_ids=3, num_test_ids=3,
                                  images_per_id_per_camera=1, num_cameras=3,
                                  num_distractors=2, num_junk=2, seed=1)
    return summary["root"]


def names_in(folder):
    return sorted(n for n in os.listdir(folder) if n.endswith(".jpg"))


# ---------------------------------------------------------------- parse_filename
@pytest.mark.parametrize("name, expected", [
    ("0002_c1s1_000451_03.jpg", (2, 0)),
    ("1501_c6s4_001877_02.jpg", (1501, 5)),
    ("-1_c1s1_000401_03.jpg", (-1, 0)),
    ("0000_c3s2_012345_01.jpg", (0, 2)),
])
def test_parse_filename(name, expected):
    assert parse_filename("/some/dir/" + name) == expected


@pytest.mark.parametrize("name", [
    "foo.jpg", "0002_c1s1_000451_03.png", "2_c1s1_000451_03.jpg", "0002_c1_000451_03.jpg",
    "0002_c7s1_000451_03.jpg", "0002_c0s1_000451_03.jpg", "-2_c1s1_000401_03.jpg"])
def test_parse_filename_rejects(name):
    with pytest.raises(DatasetError, match=re.escape(name)) as info:
        parse_filename(name)
    assert "c1..c6" in str(info.value) or "0002_c1s1_000451_03.jpg" in str(info.value)


def test_parse_filename_num_cameras():
    assert parse_filename("0002_c7s1_000451_03.jpg", num_cameras=8) == (2, 6)


# ---------------------------------------------------------------- splits
def test_parse_split_query(toy_market_root, toy_market):
    folder = os.path.join(toy_market_root, "query")
    records = parse_split(folder)
    assert len(records) == toy_market["query_images"]
    assert [os.path.basename(r.path) for r in records] == names_in(folder)
    for rec in records:
        assert isinstance(rec, Record) and os.path.isabs(rec.path)
        name = os.path.basename(rec.path)
        assert rec.pid == int(name[:4]) and rec.camid == int(name[6]) - 1
    assert {r.camid for r in records} == set(range(6))


def test_gallery_drops_junk_keeps_distractors(toy_market_root, toy_market):
    folder = os.path.join(toy_market_root, "bounding_box_test")
    assert sum(n.startswith("-1_") for n in names_in(folder)) == toy_market["junk"] > 0
    records = parse_split(folder)
    assert len(records) == toy_market["gallery_images"]
    assert all(r.pid != -1 for r in records)
    assert sum(r.pid == 0 for r in records) == toy_market["distractors"] > 0


def test_relabel_contiguous_sorted(toy_market_root):
    folder = os.path.join(toy_market_root, "bounding_box_train")
    raw, new = parse_split(folder), parse_split(folder, relabel=True)
    original = sorted({r.pid for r in raw})
    assert sorted({r.pid for r in new}) == list(range(len(original)))
    for a, b in zip(raw, new, strict=True):
        assert a.path == b.path and a.camid == b.camid and original[b.pid] == a.pid
    assert relabel_records(raw)[1] == original


def test_relabel_rejects_distractors(toy_market_root):
    with pytest.raises(DatasetError, match="0000_c"):
        parse_split(os.path.join(toy_market_root, "bounding_box_test"), relabel=True)


def test_parse_split_ignores_non_jpg_and_rejects_bad_names(tmp_path):
    root = small_toy(tmp_path)
    query = os.path.join(root, "query")
    before = parse_split(query)
    open(os.path.join(query, "Thumbs.db"), "wb").write(b"\0" * 10)
    assert parse_split(query) == before
    open(os.path.join(query, "foo.jpg"), "wb").write(b"x")
    with pytest.raises(DatasetError, match=r"query.foo\.jpg.*pattern"):
        parse_split(query)
    with pytest.raises(DatasetError, match="foo.jpg"):
        load_market1501(root, verify_counts=False)


def test_parse_split_missing_and_empty(tmp_path):
    with pytest.raises(DatasetError, match="nope.*does not exist"):
        parse_split(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty.*no .jpg"):
        parse_split(str(tmp_path / "empty"))


# ---------------------------------------------------------------- find_root / load
def test_find_root_both_forms(toy_market_root):
    parent = os.path.dirname(toy_market_root)
    assert os.path.basename(toy_market_root) == ROOT_NAME
    assert find_root(toy_market_root) == find_root(parent) == toy_market_root


def test_find_root_errors(tmp_path):
    with pytest.raises(DatasetError, match="missing_dir.*does not exist"):
        find_root(str(tmp_path / "missing_dir"))
    (tmp_path / "bounding_box_train").mkdir()
    (tmp_path / "bounding_box_test").mkdir()
    with pytest.raises(DatasetError) as info:
        find_root(str(tmp_path))
    msg = str(info.value)
    assert str(tmp_path) in msg and "query/" in msg and "found bounding_box_test" in msg


def test_load_toy(toy_market_root, toy_market):
    data = load_market1501(os.path.dirname(toy_market_root), verify_counts=False)
    assert isinstance(data, Market1501) and data.root == toy_market_root
    assert len(data.train) == toy_market["train_images"]
    assert len(data.query) == toy_market["query_images"]
    assert len(data.gallery) == toy_market["gallery_images"]
    assert data.num_train_pids == toy_market["train_ids"]
    assert sorted({r.pid for r in data.train}) == list(range(data.num_train_pids))
    query_ids = {r.pid for r in data.query}
    gallery_ids = {r.pid for r in data.gallery} - {0}
    assert len(query_ids) == toy_market["query_ids"] and query_ids <= gallery_ids
    assert not set(data.train_pids) & gallery_ids
    stats = data.stats()
    assert stats["train"]["ids"] == 32 and stats["gallery"]["junk"] == toy_market["junk"]
    text = data.summary()
    for value in (toy_market["train_images"], toy_market["query_images"], toy_market["junk"]):
        assert str(value) in text


def test_verify_counts_mismatch(toy_market_root, toy_market):
    with pytest.raises(DatasetError) as info:
        load_market1501(toy_market_root)  # verify_counts=True by default
    msg = str(info.value)
    assert toy_market_root in msg and "DATASETS.VERIFY_COUNTS False" in msg
    for split in ("train", "query", "gallery"):
        assert split + " (" in msg
    assert "expected images %d found %d" % (EXPECTED_COUNTS["train"]["images"],
                                            toy_market["train_images"]) in msg


def test_query_id_missing_from_gallery(tmp_path):
    root = small_toy(tmp_path)
    gallery = os.path.join(root, "bounding_box_test")
    pid = names_in(os.path.join(root, "query"))[0][:4]
    for name in names_in(gallery):
        if name.startswith(pid + "_"):
            os.remove(os.path.join(gallery, name))
    with pytest.raises(DatasetError, match="query identities have no image in the gallery"):
        load_market1501(root, verify_counts=False)


def test_damaged_images_of_all_splits_are_reported_together_at_load(tmp_path):
    root = small_toy(tmp_path)
    damaged = []
    for split in ("bounding_box_train", "query", "bounding_box_test"):
        folder = os.path.join(root, split)
        kept = [n for n in names_in(folder) if not n.startswith("-1_")]
        for i, name in enumerate(kept[:4]):
            path = os.path.join(folder, name)
            data = open(path, "rb").read()
            # truncated, empty, not a JPEG, truncated at the start marker
            open(path, "wb").write([data[:len(data) // 2], b"", b"GIF89a" + data[2:],
                                    data[:2]][i])
            damaged.append(split + "/" + name)
    with open(os.path.join(root, "bounding_box_test", names_in(
            os.path.join(root, "bounding_box_test"))[-1]), "ab") as f:
        f.write(b"\0" * 300)  # zero padding after the end marker is fine
    junk = [n for n in names_in(os.path.join(root, "bounding_box_test")) if n.startswith("-1_")]
    open(os.path.join(root, "bounding_box_test", junk[0]), "wb").close()  # dropped: not checked
    with pytest.raises(DatasetError) as info:
        load_market1501(root, verify_counts=False)
    msg = str(info.value)
    assert msg.startswith(root + ": 12 damaged image files")
    assert "\n" not in msg  # one line
    shown = [name for name in damaged if name in msg]
    assert len(shown) == 10 and shown == damaged[:10]  # the first ten, in split order
    # shown: train T E N T, query T E N T, gallery T E (T: truncated, E: empty, N: not JPEG)
    assert msg.count("truncated JPEG") == 5 and msg.count("empty file") == 3
    assert msg.count("not a JPEG") == 2 and junk[0] not in msg


# ---------------------------------------------------------------- read_image
def test_read_image_rgb(tmp_path):
    path = str(tmp_path / "red.jpg")
    bgr = np.zeros((128, 64, 3), np.uint8)
    bgr[:, :, 2] = 255  # pure red in OpenCV's BGR order
    cv2.imwrite(path, bgr)
    img = read_image(path)
    assert isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.shape == (128, 64, 3)
    mean = img.reshape(-1, 3).mean(0)
    assert mean[0] > 200 and mean[1] < 50 and mean[2] < 50
    with open(path, "ab") as f:  # zero padding after the end-of-image marker is fine
        f.write(b"\0" * 64)
    assert read_image(path).shape == (128, 64, 3)


def test_read_image_toy(toy_market_root):
    path = sorted(os.path.join(toy_market_root, "query", n)
                  for n in names_in(os.path.join(toy_market_root, "query")))[0]
    assert read_image(path).shape == (128, 64, 3)


def _copy_image(toy_market_root, tmp_path, name):
    folder = os.path.join(toy_market_root, "query")
    path = str(tmp_path / name)
    shutil.copy(os.path.join(folder, names_in(folder)[0]), path)
    return path


def test_read_image_truncated(toy_market_root, tmp_path):
    path = _copy_image(toy_market_root, tmp_path, "0001_c1s1_000001_01.jpg")
    data = open(path, "rb").read()
    open(path, "wb").write(data[:len(data) // 2])
    with pytest.raises(DatasetError, match=re.escape(path) + ".*truncated"):
        read_image(path)


@pytest.mark.parametrize("content, what", [
    (b"this is not an image at all" * 10, "not a JPEG.*FFD8"),
    (b"", "empty"),
    (b"\xff\xd8\xff\xe0garbage but ends like a jpeg\xff\xd9", "not a decodable image"),
])
def test_read_image_bad_bytes(tmp_path, content, what):
    path = str(tmp_path / "bad.jpg")
    open(path, "wb").write(content)
    with pytest.raises(DatasetError, match=re.escape(path) + ".*" + what):
        read_image(path)


def test_read_image_missing(tmp_path):
    path = str(tmp_path / "missing.jpg")
    with pytest.raises(DatasetError, match=re.escape(path)):
        read_image(path)
