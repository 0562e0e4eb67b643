"""The OpenCV/NumPy input pipeline against the MXNet/GluonCV blocks (reference_pipeline.py),
the loader's determinism whatever NUM_WORKERS and DATALOADER.CACHE, and the cache itself."""
import os
import shutil
import struct

import cv2
import numpy as np
import pytest
from PIL import Image

from reference_pipeline import (
    old_read_image,
    old_test_transform,
    old_train_sample,
    old_train_transform,
)
from reid_baseline.config import load_config
from reid_baseline.data import cache as cache_module
from reid_baseline.data.datasets.base import DatasetError, Record
from reid_baseline.data.images import read_image
from reid_baseline.data.loader import build_test_loader, build_train_loader
from reid_baseline.data.transforms import build_train_transform, resize_image


def _exif_orientation(jpeg, orientation):
    """`jpeg` with an EXIF APP1 segment holding only an orientation tag."""
    tiff = (b"II*\x00" + struct.pack("<IH", 8, 1)
            + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0))
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", 8 + len(tiff)) + b"Exif\x00\x00" + tiff \
        + jpeg[2:]


@pytest.fixture(scope="module")
def varied_images(tmp_path_factory):
    """Image files of many kinds: sizes, JPEG qualities, progressive, 4:4:4, EXIF, PNG."""
    folder, rng, paths = tmp_path_factory.mktemp("varied"), np.random.RandomState(0), []
    for i in range(12):
        h, w = rng.randint(20, 400), rng.randint(16, 200)
        img = cv2.GaussianBlur(rng.randint(0, 256, (h, w, 3)).astype(np.uint8), (5, 5), 0)
        params = [cv2.IMWRITE_JPEG_QUALITY, int(rng.randint(60, 100))]
        params += [[], [cv2.IMWRITE_JPEG_PROGRESSIVE, 1],
                   [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]][i % 3]
        data = cv2.imencode(".jpg", img, params)[1].tobytes()
        if i % 4 == 3:
            data = _exif_orientation(data, 6)  # rotated 90 degrees
        paths.append(str(folder / ("%02d.jpg" % i)))
        with open(paths[-1], "wb") as f:
            f.write(data)
    paths.append(str(folder / "image.png"))
    cv2.imwrite(paths[-1], rng.randint(0, 256, (50, 30, 3)).astype(np.uint8))
    return paths


def test_decode_and_resize_give_mxnets_pixels(varied_images):
    import mxnet as mx
    from mxnet.gluon.data.vision import transforms

    for path in varied_images:
        old = old_read_image(path)
        new = read_image(path)
        np.testing.assert_array_equal(new, old.asnumpy(), err_msg=path)
        for height, width in ((384, 128), (64, 32)):
            resize = transforms.Resize(size=(width, height), interpolation=1)
            np.testing.assert_array_equal(resize_image(new, height, width),
                                          resize(mx.nd.array(new, dtype=np.uint8)).asnumpy())
    # the EXIF orientation was applied: the stored (width, height) became (height, width)
    with Image.open(varied_images[3]) as stored:
        assert read_image(varied_images[3]).shape[:2] == stored.size


def test_decode_errors_name_the_file(tmp_path):
    bad = tmp_path / "0001_c1s1_000001_01.jpg"
    bad.write_bytes(b"\xff\xd8not really a jpeg")
    with pytest.raises(DatasetError, match="0001_c1s1_000001_01.jpg"):
        read_image(str(bad))


@pytest.fixture(scope="module")
def toy_train_records(toy_market_root):
    folder = os.path.join(toy_market_root, "bounding_box_train")
    return [Record(os.path.join(folder, n), i % 7, 0) for i, n in enumerate(sorted(os.listdir(folder)))]


@pytest.mark.parametrize("overrides", [
    ["INPUT.ERASING_PROB", "0.5"],  # the recipe at 384x128, plus erasing
    ["INPUT.HEIGHT", "64", "INPUT.WIDTH", "32", "INPUT.PAD", "0", "INPUT.FLIP_PROB", "0.3",
     "INPUT.ERASING_PROB", "1.0", "SOLVER.SEED", "5"]])
def test_train_batch_equals_the_old_blocks(toy_train_records, overrides):
    cfg = load_config(None, overrides)
    old, new = old_train_transform(cfg), build_train_transform(cfg)
    paths = [r.path for r in toy_train_records[:48]]
    keys = list(range(1000, 1000 + len(paths)))
    expected = np.stack([old_train_sample(old, old_read_image(p), cfg.SOLVER.SEED, k).asnumpy()
                         for p, k in zip(paths, keys, strict=True)])
    images = [resize_image(read_image(p), cfg.INPUT.HEIGHT, cfg.INPUT.WIDTH) for p in paths]
    np.testing.assert_array_equal(new(images, keys), expected)
    drawn = [new.draw(k) for k in keys]
    # every kind of decision happened, so the equality covered them
    assert 0 < sum(a.flip for a in drawn) < len(keys)
    assert 0 < sum(a.erase is not None for a in drawn) < len(keys)


def test_test_batches_equal_the_old_blocks(make_tiny_cfg, toy_train_records, tmp_path):
    cfg = make_tiny_cfg(tmp_path, "TEST.BATCH_SIZE", "16")
    records = toy_train_records[:40]
    got = np.concatenate([d.asnumpy() for d, _ in build_test_loader(cfg, records)])
    old = old_test_transform(cfg)
    expected = np.stack([old(old_read_image(r.path)).asnumpy() for r in records])
    np.testing.assert_array_equal(got, expected)


def _epochs(cfg, records, epochs=(0, 1), after_first=None):
    loader = build_train_loader(cfg, records)
    out = []
    for epoch in epochs:
        loader.set_epoch(epoch)
        out.append([(data.asnumpy(), label.asnumpy()) for data, label in loader])
        if after_first:
            after_first()
            after_first = None
    return out


@pytest.fixture(scope="module")
def copied_records(toy_train_records, tmp_path_factory):
    """96 toy training images copied to a folder of this module's own (they get deleted)."""
    folder = tmp_path_factory.mktemp("copied")
    records = []
    for r in toy_train_records[:96]:
        path = str(folder / os.path.basename(r.path))
        shutil.copy(r.path, path)
        records.append(r._replace(path=path))
    return records


def test_same_batches_whatever_workers_and_cache(make_tiny_cfg, copied_records, tmp_path):
    reference = _epochs(make_tiny_cfg(tmp_path, "INPUT.ERASING_PROB", "0.5"), copied_records)
    assert not np.array_equal(reference[0][0][0], reference[1][0][0])  # epochs differ
    for workers, cache in (("2", "none"), ("0", "decoded"), ("2", "resized")):
        cfg = make_tiny_cfg(tmp_path, "INPUT.ERASING_PROB", "0.5", "DATALOADER.NUM_WORKERS",
                            workers, "DATALOADER.CACHE", cache)
        got = _epochs(cfg, copied_records)
        for epoch_ref, epoch_got in zip(reference, got, strict=True):
            assert len(epoch_ref) == len(epoch_got) == 3
            for (d0, l0), (d1, l1) in zip(epoch_ref, epoch_got, strict=True):
                np.testing.assert_array_equal(d1, d0)
                np.testing.assert_array_equal(l1, l0)


@pytest.mark.parametrize("mode", ["decoded", "resized"])
def test_cache_filled_by_the_workers_serves_later_epochs(make_tiny_cfg, copied_records, tmp_path,
                                                         mode):
    records = copied_records[:64]
    moved = tmp_path / "moved"
    moved.mkdir()

    def remove_files():  # after epoch 1 the images must come from the shared cache
        for r in records:
            shutil.move(r.path, str(moved / os.path.basename(r.path)))

    cfg = make_tiny_cfg(tmp_path, "DATALOADER.NUM_WORKERS", "2", "DATALOADER.CACHE", mode)
    try:
        first, second = _epochs(cfg, records, after_first=remove_files)
    finally:
        for r in records:
            shutil.move(str(moved / os.path.basename(r.path)), r.path)
    assert len(first) == len(second) == 2
    expected = _epochs(make_tiny_cfg(tmp_path), records, epochs=(1,))[0]
    for (d0, _), (d1, _) in zip(expected, second, strict=True):
        np.testing.assert_array_equal(d1, d0)


def test_cache_size_estimate_and_refusal(make_tiny_cfg, copied_records, tmp_path, monkeypatch):
    paths = [r.path for r in copied_records[:10]]
    decoded = cache_module.cache_slot_bytes("decoded", paths, 64, 32)
    assert decoded.tolist() == [read_image(p).nbytes for p in paths]
    assert cache_module.cache_slot_bytes("resized", paths, 64, 32).tolist() == [64 * 32 * 3] * 10
    # 96 images of 384x128x3 need 14.2 MB: refused with 10 MB available, before any decoding
    monkeypatch.setattr(cache_module, "mem_available_bytes", lambda: 10 * 10**6)
    cfg = make_tiny_cfg(tmp_path, "INPUT.HEIGHT", "384", "INPUT.WIDTH", "128",
                        "DATALOADER.CACHE", "resized")
    with pytest.raises(DatasetError, match=r"DATALOADER.CACHE resized needs 0.01 GB for 96 "
                                           r"training images .*MemAvailable"):
        build_train_loader(cfg, copied_records)
    monkeypatch.setattr(cache_module, "mem_available_bytes", lambda: 20 * 10**6)
    build_train_loader(cfg, copied_records)


def test_mem_available_reads_proc_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  1000 kB\nMemFree:  10 kB\nMemAvailable:  2048 kB\n")
    assert cache_module.mem_available_bytes(str(meminfo)) == 2048 * 1024
    assert cache_module.mem_available_bytes(str(tmp_path / "missing")) is None


def test_batch_files_of_a_killed_loader_are_removed_by_the_next_one():
    from reid_baseline.data import shared_batch

    if not os.path.isdir(shared_batch.SHM_DIR):
        pytest.skip("no /dev/shm")
    live = shared_batch.shared_prefix()  # this process's loader: its lock is held
    dead = "reid_batch_999999_0_"  # a loader killed with -9: its lock file is left, unlocked
    paths = [os.path.join(shared_batch.SHM_DIR, p + s) for p in (live, dead) for s in ("x", "lock")]
    for path in paths:
        open(path, "a").close()
    try:
        shared_batch.remove_unreceived(shared_batch.shared_prefix())  # a new loader's start
        assert [os.path.exists(p) for p in paths] == [True, True, False, False]
    finally:
        shared_batch.remove_unreceived(live)
        assert not any(os.path.exists(p) for p in paths)
