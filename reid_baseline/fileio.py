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
