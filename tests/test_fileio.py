"""fileio: the one output rule (the folder's manifest), atomic writes on a full disk, locks."""
import errno
import json
import os

import pytest

from conftest import lock_held_by_another_process
from reid_baseline import fileio
from reid_baseline.errors import OutputError, RunDirError


def test_only_the_packages_own_unedited_file_is_replaced(tmp_path):
    path = str(tmp_path / "out.txt")
    fileio.write_output(path, "first")
    manifest = json.loads((tmp_path / fileio.OUTPUTS_MANIFEST).read_text())
    assert manifest["files"] == {"out.txt": fileio.file_sha256(path)}
    fileio.write_output(path, "second")  # the package's own: replaced
    assert open(path).read() == "second"
    with open(path, "a") as f:
        f.write(" and my note")  # edited by a user: theirs now
    with pytest.raises(OutputError) as info:
        fileio.write_output(path, "third")
    assert str(info.value) == ("output file %s exists and is not a file the package wrote (or "
                               "was changed since); choose another name or pass --overwrite"
                               % path)
    assert open(path).read() == "second and my note"
    mine = tmp_path / "mine.txt"
    mine.write_text("a user's file")
    with pytest.raises(OutputError, match="mine.txt exists"):
        fileio.write_output(str(mine), "x")
    assert mine.read_text() == "a user's file"
    fileio.write_output(str(mine), "x", overwrite=True)  # the user asked for it
    assert mine.read_text() == "x" and fileio.is_ours(str(mine))


@pytest.mark.parametrize("call", ["write", "fsync"])
def test_a_full_disk_is_one_line_and_leaves_no_cut_file(tmp_path, monkeypatch, call):
    path = str(tmp_path / "out.bin")
    fileio.write_output(path, b"whole")

    def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    if call == "fsync":
        monkeypatch.setattr(os, "fsync", full)
        data = b"new"
    else:
        data = None
    with pytest.raises(OutputError) as info:
        with fileio.output_path(path) as tmp, open(tmp, "wb") as f:
            f.write(b"half")
            if data is None:
                full()
    assert str(info.value) == ("cannot write %s: No space left on device; nothing was written "
                               "under that name" % path)
    assert open(path, "rb").read() == b"whole"
    assert sorted(os.listdir(tmp_path)) == [fileio.OUTPUTS_MANIFEST, "out.bin"]


@pytest.mark.timeout(60)
def test_a_folder_locked_by_another_process_names_its_pid(tmp_path):
    with lock_held_by_another_process(tmp_path) as pid:
        with pytest.raises(RunDirError) as info:
            fileio.lock_folder(str(tmp_path), RunDirError, "OUTPUT_DIR")
        assert str(info.value) == ("OUTPUT_DIR %s is being written by another process (PID %d); "
                                   "wait for it to finish or stop it" % (tmp_path, pid))
    fileio.lock_folder(str(tmp_path))  # the lock died with its process
    assert open(tmp_path / fileio.LOCK_FILE).read() == "%d\n" % os.getpid()
    fileio.unlock_folder(str(tmp_path))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("stop", ["before the rename", "after the rename"])
def test_a_write_stopped_at_any_point_leaves_a_file_the_package_knows(tmp_path, monkeypatch,
                                                                       stop):
    path = str(tmp_path / "metrics.jsonl")
    fileio.write_output(path, "epoch 1\n")
    real_replace, real_record = os.replace, fileio._record

    class Stopped(BaseException):  # a kill: nothing after it runs
        pass

    def replace(src, dst):
        if dst == path:
            raise Stopped
        real_replace(src, dst)

    def record(target, sha, forget=None, replacing=None):
        if target == path and replacing is None:  # the record after the rename
            raise Stopped
        real_record(target, sha, forget, replacing)
    monkeypatch.setattr(fileio.os, "replace", replace) if stop == "before the rename" else \
        monkeypatch.setattr(fileio, "_record", record)
    with pytest.raises(Stopped):
        fileio.write_output(path, "epoch 1\nepoch 2\n")
    monkeypatch.undo()
    expected = "epoch 1\n" if stop == "before the rename" else "epoch 1\nepoch 2\n"
    assert open(path).read() == expected and fileio.is_ours(path)
    fileio.write_output(path, "epoch 1\nepoch 2\nepoch 3\n")  # the next run goes on
    manifest = json.loads((tmp_path / fileio.OUTPUTS_MANIFEST).read_text())
    assert manifest == {"written_by": fileio.PRODUCER,
                        "files": {"metrics.jsonl": fileio.file_sha256(path)}}
    with open(path, "a") as f:  # and a user's edit is still theirs
        f.write("mine\n")
    assert not fileio.is_ours(path)
