"""The package's writes: atomic (a reader, or a run stopped mid-write, never sees half a file),
recorded, and never replacing a file the package did not write.

Every folder the package writes outputs into holds a small manifest, OUTPUTS_MANIFEST, naming
each file the package wrote there with its SHA-256. An existing file is replaced only when its
content is still what the manifest records (the package's own, unedited); anything else (a
user's file, or the package's file edited since) is refused before any work, unless the user
passes --overwrite. A folder a process writes can be locked (lock_folder): a second writer is
refused with the holder's PID; the lock dies with its process.
"""
import contextlib
import errno
import json
import os
import tempfile

PRODUCER = "reid_baseline"  # the package's name in the manifests it writes
OUTPUTS_MANIFEST = ".reid_baseline_outputs.json"
LOCK_FILE = ".reid_baseline.lock"
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # the disk, the quota, the file size limit
_HELD = {}  # folder -> open lock file of the locks this process holds for its lifetime


def file_sha256(path):
    """Hex SHA-256 of a file, read in 4 MB blocks."""
    import hashlib
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            sha.update(block)
    return sha.hexdigest()


def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path` to write; when the block ends without error the
    file is flushed to disk (os.fsync) and replaces `path` (os.replace), otherwise it is
    removed: never a half-written `path`. The temporary name carries the process id, so two
    processes writing one file never collide. A full disk is an OutputError (one line naming
    `path`); another OSError is re-raised naming `path` (cli.run prints it as one line)."""
    from .errors import OutputError
    tmp = "%s.tmp%d" % (path, os.getpid())
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno in _FULL:
            raise OutputError("cannot write %s: %s; nothing was written under that name"
                              % (path, os.strerror(exc.errno))) from exc
        raise OSError(exc.errno, "cannot write (%s)" % (exc.strerror or exc), path) from exc
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_json_object(path):
    """The JSON object (dict) in `path`, or None when it is missing, unreadable or not one."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _manifest_maps(folder):
    data = read_json_object(os.path.join(folder, OUTPUTS_MANIFEST)) or {}
    return tuple(m if isinstance(m, dict) else {}
                 for m in (data.get("files"), data.get("replacing")))


def written_outputs(folder):
    """{file name: SHA-256} of the files the package wrote in `folder` ({} if none)."""
    return _manifest_maps(folder)[0]


def is_ours(path):
    """True when `path` is a file the package wrote and nobody changed since: its SHA-256 is
    the one its folder's manifest records (or, while the package replaces it, the one it
    replaces: a process stopped between the rename and the record leaves either content)."""
    folder, name = os.path.split(os.path.abspath(path))
    files, replacing = _manifest_maps(folder)
    accepted = {files.get(name), replacing.get(name)} - {None}
    return bool(accepted) and os.path.isfile(path) and file_sha256(path) in accepted


def check_output_file(path, overwrite=False, what="output file",
                      advice="choose another name or pass --overwrite"):
    """Check, before any work starts, that `path` can receive an output file.

    A folder at `path`, or a missing parent folder, is an OutputError. An existing file is
    replaced only when `overwrite` is true or it is the package's own, unedited (is_ours);
    any other existing file is an OutputError naming it. Returns `path`."""
    from .errors import OutputError
    if os.path.isdir(path):
        raise OutputError("%s %s is a folder; expected a file name" % (what, path))
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise OutputError("%s %s: folder %s does not exist" % (what, path, parent))
    try:  # a read-only folder or file system is found now, not after the work
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise OutputError("%s %s: folder %s cannot be written (%s)"
                          % (what, path, parent, exc.strerror or exc)) from exc
    if os.path.lexists(path) and not overwrite and not is_ours(path):
        raise OutputError("%s %s exists and is not a file the package wrote (or was changed "
                          "since); %s" % (what, path, advice))
    return path


def _record(path, sha, forget=None, replacing=None):
    """Record `path` with `sha` (None: not at all) in its folder's manifest and drop the name
    `forget`, atomically, under a lock on the folder (two processes writing one folder never
    lose each other's entries). `replacing`: the SHA-256 of the content `sha` is about to
    replace, accepted as the package's until the next record of that name."""
    import fcntl
    folder, name = os.path.split(os.path.abspath(path))
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        files, pending = (dict(m) for m in _manifest_maps(folder))
        if sha is not None:
            files[name] = sha
        for names in (files, pending):
            names.pop(forget, None)
        pending.pop(name, None)
        if replacing is not None:
            pending[name] = replacing
        data = {"written_by": PRODUCER, "files": files}
        if pending:
            data["replacing"] = pending
        with atomic_path(os.path.join(folder, OUTPUTS_MANIFEST)) as tmp, open(tmp, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
    finally:
        os.close(fd)


@contextlib.contextmanager
def output_path(path, overwrite=False, what="output file",
                advice="choose another name or pass --overwrite"):
    """The one way the package writes an output file: check `path` (check_output_file), yield
    a temporary path beside it to write, then flush, replace `path` atomically (atomic_path)
    and record its SHA-256 in the folder's manifest. The new SHA-256 is recorded before the
    rename, beside the one it replaces: a process stopped at any point leaves a file the
    next run still knows as the package's."""
    check_output_file(path, overwrite, what, advice)
    folder, name = os.path.split(os.path.abspath(path))
    with atomic_path(path) as tmp:
        yield tmp
        _fsync(tmp)  # the new content is on disk before the manifest names it
        sha = file_sha256(tmp)
        _record(path, sha, replacing=written_outputs(folder).get(name))
    _record(path, sha)


def move_output(src, dst, overwrite=False, what="output file"):
    """Rename the package's output `src` to `dst` in the same folder (checked as output_path
    checks it) and move its manifest entry along."""
    check_output_file(dst, overwrite, what)
    sha = file_sha256(src)
    os.replace(src, dst)
    _record(dst, sha, forget=os.path.basename(src))


def remove_output(path):
    """Delete the file `path` and drop its entry from its folder's manifest (a new run
    replacing the package's outputs; the caller decides that the file may go, e.g. is_ours)."""
    os.remove(path)
    _record(path, None, forget=os.path.basename(path))


def write_output(path, data, overwrite=False, what="output file",
                 advice="choose another name or pass --overwrite"):
    """Write `data` (str: UTF-8 text; bytes) to `path` through output_path."""
    with output_path(path, overwrite, what, advice) as tmp:
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)


def lock_folder(folder, error=None, what="folder"):
    """Lock `folder` for this process's lifetime (fcntl.flock on LOCK_FILE inside it, which
    then holds the PID). Another process holding it is an `error` (default OutputError)
    naming its PID. The lock dies with the process: no stale lock to clean."""
    import fcntl

    from .errors import OutputError
    key = os.path.realpath(folder)
    if key in _HELD:
        return
    path = os.path.join(folder, LOCK_FILE)
    f = open(path, "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        raise (error or OutputError)("%s %s is being written by another process (PID %s); wait "
                                     "for it to finish or stop it" % (what, folder, holder)) from exc
    f.seek(0)
    f.truncate()
    f.write("%d\n" % os.getpid())
    f.flush()
    _HELD[key] = f


def unlock_folder(folder):
    """Release a lock_folder lock this process holds (a no-op when it holds none)."""
    f = _HELD.pop(os.path.realpath(folder), None)
    if f is not None:
        import fcntl
        # Unlocked, not only closed: a data loader's forked workers hold copies of the descriptor.
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        f.close()
