"""prepare_market1501: checksum, safe extraction, download errors, layout check."""
import hashlib
import os
import stat
import sys
import zipfile

import pytest

from reid_baseline.data.datasets.base import DatasetError
from reid_baseline.data.prepare import (MARKET1501_MD5, ZIP_NAME, md5sum, prepare_market1501,
                                        safe_extract)
from reid_baseline.data.toy_market1501 import make_toy_market1501


@pytest.fixture(scope="module")
def toy_zip(tmp_path_factory):
    """A zip of a tiny toy set laid out like the official archive, and its MD5."""
    base = tmp_path_factory.mktemp("toy_zip")
    summary = make_toy_market1501(str(base / "src"), num_train_ids=3, num_test_ids=3,
                                  images_per_id_per_camera=1, num_cameras=3,
                                  num_distractors=2, num_junk=2, seed=2)
    parent = os.path.dirname(summary["root"])
    path = str(base / ZIP_NAME)
    with zipfile.ZipFile(path, "w") as archive:
        for folder, _, files in os.walk(summary["root"]):
            for name in sorted(files):
                full = os.path.join(folder, name)
                archive.write(full, os.path.relpath(full, parent))
    return path, hashlib.md5(open(path, "rb").read()).hexdigest(), summary


def test_md5_constant_looks_like_md5():
    assert len(MARKET1501_MD5) == 32 and int(MARKET1501_MD5, 16) >= 0


def test_prepare_from_local_zip(toy_zip, tmp_path):
    path, digest, summary = toy_zip
    assert md5sum(path) == digest
    data = prepare_market1501(str(tmp_path), zip_path=path, md5=digest, verify_counts=False)
    assert data.root == os.path.join(str(tmp_path), "Market-1501-v15.09.15")
    assert len(data.train) == summary["train_images"]
    assert len(data.query) == summary["query_images"]
    assert len(data.gallery) == summary["gallery_images"]


def test_prepare_verify_counts_passed_through(toy_zip, tmp_path):
    path, digest, _ = toy_zip
    with pytest.raises(DatasetError, match="VERIFY_COUNTS"):
        prepare_market1501(str(tmp_path), zip_path=path, md5=digest)


def test_prepare_without_md5_warns(toy_zip, tmp_path, capsys):
    path, digest, _ = toy_zip
    prepare_market1501(str(tmp_path), zip_path=path, md5=None, verify_counts=False)
    printed = capsys.readouterr().out
    assert "WARNING: MD5 check skipped" in printed and digest in printed


def test_bad_checksum(toy_zip, tmp_path):
    path, digest, _ = toy_zip
    with pytest.raises(DatasetError) as info:
        prepare_market1501(str(tmp_path), zip_path=path, md5="0" * 32, verify_counts=False)
    msg = str(info.value)
    assert path in msg and "0" * 32 in msg and digest in msg
    assert not os.path.exists(os.path.join(str(tmp_path), "Market-1501-v15.09.15"))


def test_download_via_url_and_no_network(toy_zip, tmp_path):
    path, digest, summary = toy_zip
    out = tmp_path / "dl"
    data = prepare_market1501(str(out), url="file://" + path, md5=digest, verify_counts=False)
    assert os.path.isfile(os.path.join(str(out), ZIP_NAME))
    assert len(data.query) == summary["query_images"]
    out = tmp_path / "offline"
    with pytest.raises(DatasetError, match="could not download.*--zip"):
        prepare_market1501(str(out), url="http://127.0.0.1:9/" + ZIP_NAME, md5=digest)
    assert os.listdir(str(out)) == []  # no partial download left behind


def test_missing_zip(tmp_path):
    with pytest.raises(DatasetError, match="nothere.zip.*does not exist"):
        prepare_market1501(str(tmp_path), zip_path=str(tmp_path / "nothere.zip"))


def _zip_with(path, name, data=b"x", symlink=False):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("Market-1501-v15.09.15/query/ok.txt", b"fine")
        info = zipfile.ZipInfo(name)
        if symlink:
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, data)
    return path


@pytest.mark.parametrize("member, symlink", [
    ("../evil.jpg", False),
    ("Market-1501-v15.09.15/../../evil.jpg", False),
    ("/tmp/evil_absolute.jpg", False),
    ("Market-1501-v15.09.15/query/link.jpg", True),
])
def test_unsafe_members_rejected(tmp_path, member, symlink):
    out = tmp_path / "out"
    out.mkdir()
    path = _zip_with(str(tmp_path / "evil.zip"), member, b"/etc/passwd", symlink)
    with pytest.raises(DatasetError) as info:
        prepare_market1501(str(out), zip_path=path, md5=md5sum(path))
    assert repr(member) in str(info.value) and path in str(info.value)
    assert os.listdir(str(out)) == []  # checked before anything is written
    assert not os.path.exists(str(tmp_path / "evil.jpg"))


def test_corrupted_zip(toy_zip, tmp_path):
    path, _, _ = toy_zip
    junk = str(tmp_path / "junk.zip")
    open(junk, "wb").write(b"not a zip at all" * 100)
    with pytest.raises(DatasetError, match="junk.zip.*corrupted"):
        safe_extract(junk, str(tmp_path / "a"))
    # flip bytes inside the first image's data: the CRC check fails on extraction
    data = bytearray(open(path, "rb").read())
    with zipfile.ZipFile(path) as archive:
        info = archive.infolist()[0]
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for i in range(start + 100, start + 110):
        data[i] ^= 0xFF
    bad = str(tmp_path / "bad_crc.zip")
    open(bad, "wb").write(bytes(data))
    with pytest.raises(DatasetError, match="bad_crc.zip.*corrupted.*" + info.filename):
        prepare_market1501(str(tmp_path / "b"), zip_path=bad, md5=None)


def test_script(toy_zip, tmp_path, capsys):
    path, digest, summary = toy_zip
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "scripts"))
    try:
        import prepare_market1501 as script
    finally:
        sys.path.pop(0)
    out = str(tmp_path / "s")
    script.main(["--out", out, "--zip", path, "--md5", digest, "--no-verify-counts"])
    assert str(summary["train_images"]) in capsys.readouterr().out
    with pytest.raises(DatasetError, match="MD5 checksum mismatch"):  # default (official) MD5
        script.main(["--out", out, "--zip", path])
