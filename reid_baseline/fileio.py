"""Atomic file writes: a reader (or a run stopped mid-write) never sees half a file."""
import contextlib
import os


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path` to write; when the block ends without error it
    replaces `path` (os.replace), otherwise it is removed: never a half-written `path`. The
    temporary name carries the process id, so two processes writing one file never collide.
    An OSError is re-raised naming `path` (cli.run prints it as one line)."""
    tmp = "%s.tmp%d" % (path, os.getpid())
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        raise OSError(exc.errno, "cannot write (%s)" % (exc.strerror or exc), path) from exc
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def file_sha256(path):
    """Hex SHA-256 of a file, read in 4 MB blocks."""
    import hashlib
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            sha.update(block)
    return sha.hexdigest()


# The package marks what it writes, so it can tell its own outputs (safe to replace) from a
# user's file that happens to sit at the output path (never replaced without --overwrite).
PRODUCER = "reid_baseline"


def check_output_file(path, overwrite=False, is_ours=None, what="output file"):
    """Check, before any work starts, that `path` can receive an output file.

    A folder at `path`, or a missing parent folder, is an OutputError. An existing file is
    replaced only when `overwrite` is true or `is_ours(path)` says the package wrote it (e.g. a
    JSON file with "written_by": PRODUCER); any other existing file is an OutputError naming
    it. Returns `path`."""
    from .errors import OutputError
    if os.path.isdir(path):
        raise OutputError("%s %s is a folder; expected a file name" % (what, path))
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise OutputError("%s %s: folder %s does not exist" % (what, path, parent))
    try:  # a read-only folder or file system is found now, not after the work
        import tempfile
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise OutputError("%s %s: folder %s cannot be written (%s)"
                          % (what, path, parent, exc.strerror or exc)) from exc
    if os.path.lexists(path) and not overwrite and not (is_ours is not None and is_ours(path)):
        raise OutputError("%s %s exists and was not written by %s; choose another name or "
                          "pass --overwrite" % (what, path, PRODUCER))
    return path


def read_json_object(path):
    """The JSON object (dict) in `path`, or None when it is missing, unreadable or not one."""
    import json
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def json_is_ours(path):
    """True when `path` is a JSON object the package wrote ("written_by": PRODUCER)."""
    data = read_json_object(path)
    return data is not None and data.get("written_by") == PRODUCER


def png_is_ours(path):
    """True when `path` is a PNG the package wrote (its "Software" text chunk is PRODUCER;
    matplotlib writes it from savefig(..., metadata={"Software": PRODUCER}))."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return False
    return head.startswith(b"\x89PNG") and (b"tEXtSoftware\x00" + PRODUCER.encode()) in head
