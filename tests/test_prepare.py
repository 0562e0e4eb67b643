"""prepare_dataset: checksum, size bounds, safe all-or-nothing extraction,
download errors, layout check."""
import hashlib
import os
import stat
import sys
import zipfile

import pytest

from reid_baseline.data import prepare
from reid_baseline.data.archive import md5sum, safe_extract
from reid_baseline.data.datasets.base import DatasetError
from reid_baseline.data.prepare import (
    MARKET1501_URL,
    OFFICIAL_PAGE,
    ZIP_NAME,
    prepare_dataset,
    prepare_market1501,
)
from reid_baseline.data.toy.market1501 import make_toy_market1501


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


def test_md5sum_matches_the_rfc_1321_test_vectors(tmp_path):
    path = str(tmp_path / "f")
    for text, digest in ((b"", "d41d8cd98f00b204e9800998ecf8427e"),
                         (b"message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
                         (b"1234567890" * 8, "57edf4a22be3c955ac49da2e2107b67a")):
        open(path, "wb").write(text)
        assert md5sum(path, chunk_size=3) == digest  # read in several chunks


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
    assert not os.path.exists(str(out))  # no partial download, nor the folder it made


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
        import prepare_dataset as script
    finally:
        sys.path.pop(0)
    out = str(tmp_path / "s")
    script.main(["market1501", "--out", out, "--zip", path, "--md5", digest,
                 "--no-verify-counts"])
    assert str(summary["train_images"]) in capsys.readouterr().out
    with pytest.raises(DatasetError, match="MD5 checksum mismatch"):  # default (official) MD5
        script.main(["market1501", "--out", out, "--zip", path])


def test_failed_market1501_download_names_the_official_page(tmp_path, monkeypatch):
    import urllib.request
    from urllib.error import URLError

    def refuse(url, timeout=None):
        assert url == MARKET1501_URL
        raise URLError("403 Forbidden")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    with pytest.raises(DatasetError) as info:
        prepare_market1501(str(tmp_path / "m"))
    msg = str(info.value)
    assert "\n" not in msg and "403 Forbidden" in msg
    assert "unreliable since MXNet's retirement (2023)" in msg
    assert OFFICIAL_PAGE in msg and "zheng" in OFFICIAL_PAGE and "--zip" in msg
    assert not os.path.exists(str(tmp_path / "m"))


def _zeros_zip(path, members=1, size=1 << 20):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for i in range(members):
            archive.writestr("Market-1501-v15.09.15/query/%04d.bin" % i, b"\0" * size)
    return path


def test_archive_larger_than_the_sets_bound_is_refused_before_writing(tmp_path, monkeypatch):
    bomb = _zeros_zip(str(tmp_path / "bomb.zip"), members=2, size=3 << 20)  # 6 MiB declared
    assert os.path.getsize(bomb) < 100000
    monkeypatch.setitem(prepare.ARCHIVE_LIMITS, "market1501", (100, 5 << 20))
    out = tmp_path / "out"
    with pytest.raises(DatasetError) as info:
        prepare_market1501(str(out), zip_path=bomb, md5=None)
    assert str(info.value).startswith(bomb + ": declares 6291456 bytes of files, more than")
    assert not os.path.exists(str(out))
    # the same bound given by the user: --max-size
    with pytest.raises(DatasetError, match="bomb.zip: declares"):
        prepare_dataset("msmt17", str(out), zip_path=bomb, md5=None, max_size=1 << 20)
    with pytest.raises(DatasetError, match="--max-size must be"):
        prepare_dataset("msmt17", str(out), zip_path=bomb, md5=None, max_size=1 << 50)
    assert not os.path.exists(str(out))


def test_archive_with_too_many_members_is_refused(tmp_path, monkeypatch):
    many = _zeros_zip(str(tmp_path / "many.zip"), members=30, size=10)
    monkeypatch.setitem(prepare.ARCHIVE_LIMITS, "market1501", (20, 1 << 30))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(DatasetError, match="many.zip: holds 30 members, more than the 20"):
        prepare_market1501(str(out), zip_path=many, md5=None)
    assert os.listdir(str(out)) == []


def test_unknown_sets_get_the_hard_bound():
    assert safe_extract.__defaults__[0] == prepare.HARD_LIMIT
    for members, size in prepare.ARCHIVE_LIMITS.values():
        assert members <= prepare.HARD_LIMIT[0] and size <= prepare.HARD_LIMIT[1]


def test_member_with_a_false_declared_size_is_not_extracted(tmp_path):
    """A member whose header declares 16 bytes but holds 1 MiB: refused, nothing left."""
    path = str(tmp_path / "liar.zip")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("Market-1501-v15.09.15/query/big.bin", b"\1" * (1 << 20))
    data = bytearray(open(path, "rb").read())
    with zipfile.ZipFile(path) as archive:
        info = archive.infolist()[0]
    # uncompressed size fields: local header offset 22, central directory entry offset 24
    data[info.header_offset + 22:info.header_offset + 26] = (16).to_bytes(4, "little")
    central = bytes(data).rindex(b"PK\x01\x02")
    data[central + 24:central + 28] = (16).to_bytes(4, "little")
    open(path, "wb").write(bytes(data))
    out = tmp_path / "out"
    with pytest.raises(DatasetError) as info:
        prepare_market1501(str(out), zip_path=path, md5=None)
    # Read up to its declared 16 bytes only, the member then fails its CRC.
    assert str(info.value).startswith(path + ": corrupted zip archive at member "
                                      "'Market-1501-v15.09.15/query/big.bin' (Bad CRC-32")
    assert not os.path.exists(str(out))


def test_existing_different_set_is_kept_unless_overwrite(toy_zip, tmp_path):
    path, digest, summary = toy_zip
    out = tmp_path / "out"
    prepare_market1501(str(out), zip_path=path, md5=digest, verify_counts=False)
    root = out / "Market-1501-v15.09.15"
    # an unchanged copy: a second run keeps it and succeeds
    data = prepare_market1501(str(out), zip_path=path, md5=digest, verify_counts=False)
    assert len(data.query) == summary["query_images"]
    edited = sorted((root / "query").iterdir())[0]
    edited.write_bytes(b"the user's edit")
    with pytest.raises(DatasetError) as info:
        prepare_market1501(str(out), zip_path=path, md5=digest, verify_counts=False)
    assert str(info.value).startswith("%s already exists with other content" % root)
    assert "--overwrite" in str(info.value)
    assert edited.read_bytes() == b"the user's edit"
    assert sorted(os.listdir(str(out))) == ["Market-1501-v15.09.15"]  # no temporary folder
    prepare_market1501(str(out), zip_path=path, md5=digest, verify_counts=False, overwrite=True)
    assert edited.read_bytes()[:2] == b"\xff\xd8"  # the archive's JPEG again
    assert sorted(os.listdir(str(out))) == ["Market-1501-v15.09.15"]


def test_truncated_zip_leaves_nothing_behind(toy_zip, tmp_path):
    path, _, _ = toy_zip
    data = open(path, "rb").read()
    for cut, name in ((len(data) // 2, "half.zip"), (len(data) - 30, "tail.zip")):
        bad = str(tmp_path / name)
        open(bad, "wb").write(data[:cut])
        out = tmp_path / ("out_" + name)
        with pytest.raises(DatasetError, match=name + ".*corrupted"):
            prepare_market1501(str(out), zip_path=bad, md5=None)
        assert not os.path.exists(str(out))


def test_a_killed_extractions_folder_is_removed_by_the_next_run(toy_zip, tmp_path):
    import subprocess
    import sys
    path, digest, _ = toy_zip
    out = tmp_path / "out"
    out.mkdir()
    # A process that has ended (its pid is free) left its temporary folder; a live process's
    # folder and a user's look-alike folder stay.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    (out / (".extract-%s-abc" % dead) / "Market").mkdir(parents=True)
    (out / (".extract-%d-live" % os.getpid())).mkdir()
    (out / ".extract-mine").mkdir()
    prepare_market1501(str(out), zip_path=path, md5=digest, verify_counts=False)
    left = sorted(n for n in os.listdir(str(out)) if n.startswith(".extract-"))
    assert left == [".extract-%d-live" % os.getpid(), ".extract-mine"]


def test_script_refuses_a_different_set_and_overwrite_replaces_it(toy_zip, tmp_path,
                                                                  monkeypatch, capsys):
    from conftest import run_script

    path, digest, summary = toy_zip
    out = tmp_path / "s"
    args = ["market1501", "--out", out, "--zip", path, "--md5", digest, "--no-verify-counts"]
    assert run_script(monkeypatch, capsys, "scripts/prepare_dataset.py", *args)[0] == 0
    user_file = out / "Market-1501-v15.09.15" / "query" / "mine.jpg"
    user_file.write_bytes(b"x")
    code, _, err = run_script(monkeypatch, capsys, "scripts/prepare_dataset.py", *args)
    assert code == 2 and err.count("\n") == 1 and "already exists with other content" in err
    assert user_file.exists()
    code, out_text, _ = run_script(monkeypatch, capsys, "scripts/prepare_dataset.py", *args,
                                   "--overwrite")
    assert code == 0 and str(summary["train_images"]) in out_text and not user_file.exists()


def test_an_archive_of_another_set_leaves_nothing_behind(toy_zip, tmp_path):
    """The Market-1501 zip given as DukeMTMC-reID: its layout is refused after extraction, and
    what it added goes again; the user's own files in --out stay."""
    path, _, _ = toy_zip
    out = tmp_path / "duke"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="DukeMTMC"):
        prepare_dataset("dukemtmc", str(out), zip_path=path, md5=None)
    assert sorted(os.listdir(str(out))) == ["notes.txt"]
