"""A data set's zip: its checksum, its limits, and an all-or-nothing extraction.

The archive's member count and declared sizes are checked against a bound before anything is
written (zipfile reads no member past its declared size, and a member that lies then fails its
CRC); everything lands in a temporary folder beside the final one and moves into place only
when complete; a different set already in the final folder is kept unless ``overwrite``.
"""
import hashlib
import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib

from ..errors import DatasetError
from ..progress import progress_bar

GIB = 1 << 30
# The bound for a set without a known size (and the largest a --max-size may ask for).
HARD_LIMIT = (1000000, 64 * GIB)

def md5sum(path, chunk_size=1 << 20):
    """Hex MD5 digest of a file, read in chunks (the zip is ~150 MB)."""
    digest = hashlib.md5()
    with open(path, "rb") as f, progress_bar(total=os.fstat(f.fileno()).st_size, unit="B",
                                             desc="MD5 of " + os.path.basename(path),
                                             unit_scale=True) as bar:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def _check_member(info, out_real, zip_path):
    """Reject members that would write outside out_dir or create links."""
    name = info.filename.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise DatasetError("%s: member %r has an absolute path" % (zip_path, info.filename))
    if stat.S_ISLNK(info.external_attr >> 16):
        raise DatasetError("%s: member %r is a symbolic link" % (zip_path, info.filename))
    target = os.path.realpath(os.path.join(out_real, name))
    if os.path.commonpath([out_real, target]) != out_real:
        raise DatasetError("%s: member %r would be extracted outside %s"
                           % (zip_path, info.filename, out_real))


def _size_text(num_bytes):
    return "%.1f GiB" % (num_bytes / GIB) if num_bytes >= GIB else "%d bytes" % num_bytes


def check_archive(zip_path, infos, limits, folder=None):
    """Refuse an archive whose member count or declared total size exceeds `limits`
    (max members, max bytes), or whose files do not fit on the disk of `folder`, before
    anything is written."""
    max_members, max_bytes = limits
    if len(infos) > max_members:
        raise DatasetError("%s: holds %d members, more than the %d this data set's archive can "
                           "have; not extracted (wrong or hostile archive?)"
                           % (zip_path, len(infos), max_members))
    declared = sum(info.file_size for info in infos)
    if declared > max_bytes:
        raise DatasetError("%s: declares %s of files, more than the %s this data set's archive "
                           "can hold; not extracted (wrong or hostile archive?)"
                           % (zip_path, _size_text(declared), _size_text(max_bytes)))
    free = shutil.disk_usage(folder).free if folder else declared
    if declared > free:
        raise DatasetError("%s: its files need %s, only %s are free in %s"
                           % (zip_path, _size_text(declared), _size_text(free), folder))


def safe_extract(zip_path, out_dir, limits=HARD_LIMIT):
    """Extract ``zip_path`` into ``out_dir`` after checking every member (nothing is written
    if any member is unsafe or the archive exceeds `limits`: max members, max bytes). Declared
    sizes cannot lie past the check: zipfile reads no member beyond the size it declares, so a
    member holding more fails its CRC, and the total stays within the checked bound. A
    corrupted archive raises DatasetError (what was extracted stays: prepare_dataset extracts
    into a temporary folder it removes)."""
    out_real = os.path.realpath(out_dir)
    current = None
    try:
        with zipfile.ZipFile(zip_path) as archive:
            infos = archive.infolist()
            for info in infos:
                _check_member(info, out_real, zip_path)
            check_archive(zip_path, infos, limits, out_real)
            bar = progress_bar(infos, desc="extracting " + os.path.basename(zip_path),
                               unit="files")
            for info in bar:
                current = info.filename
                target = os.path.join(out_real, info.filename.replace("\\", "/"))
                if info.is_dir():
                    os.makedirs(target, exist_ok=True)
                    continue
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with archive.open(info) as source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)  # stops at the declared size
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:
        raise DatasetError("%s: corrupted zip archive%s (%s); download it again"
                           % (zip_path, " at member %r" % current if current else "", err)) from err


def _same_entry(new, old):
    """True when `old` (a file or folder) holds exactly the files of `new`, byte for byte."""
    if os.path.isfile(new) or os.path.isfile(old):
        return (os.path.isfile(new) and os.path.isfile(old)
                and os.path.getsize(new) == os.path.getsize(old) and md5sum(new) == md5sum(old))

    def files(top):
        return {os.path.relpath(os.path.join(d, n), top)
                for d, _, names in os.walk(top) for n in names}
    names = files(new)
    if names != files(old):
        return False
    for name in names:
        a, b = os.path.join(new, name), os.path.join(old, name)
        if os.path.getsize(a) != os.path.getsize(b) or md5sum(a) != md5sum(b):
            return False
    return True


def remove_stale_extractions(out_dir):
    """Remove the temporary extraction folders (".extract-<pid>-*") a killed run left in
    ``out_dir``: only the package's own names, and only of processes that no longer run."""
    for name in os.listdir(out_dir):
        match = re.match(r"\.extract-(\d+)-", name)
        path = os.path.join(out_dir, name)
        if match and os.path.isdir(path) and not _process_alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def extract_into(zip_path, out_dir, limits=HARD_LIMIT, overwrite=False):
    """Extract ``zip_path`` into a temporary folder inside ``out_dir``, then move each of its
    top-level entries into ``out_dir``. An entry already there with other content is a
    DatasetError naming it unless ``overwrite`` (then it is replaced); one with the same
    content is kept as is. On any failure nothing of the archive is left in ``out_dir``.
    Returns the paths of the entries it added (none of them was there before)."""
    remove_stale_extractions(out_dir)
    tmp = tempfile.mkdtemp(prefix=".extract-%d-" % os.getpid(), dir=out_dir)
    try:
        safe_extract(zip_path, tmp, limits)
        entries = sorted(os.listdir(tmp))
        moves, added = [], []
        for entry in entries:
            final = os.path.join(out_dir, entry)
            if not os.path.lexists(final):
                moves.append(entry)
            elif _same_entry(os.path.join(tmp, entry), final):
                print("%s already holds this archive's files; kept as is" % final)
            elif not overwrite:
                raise DatasetError("%s already exists with other content than %s; nothing was "
                                   "changed (move it away, choose another --out, or pass "
                                   "--overwrite to replace it)" % (final, zip_path))
            else:
                moves.append(entry)
        for entry in moves:
            final = os.path.join(out_dir, entry)
            if os.path.lexists(final):  # --overwrite: the old copy goes only now
                old = tempfile.mkdtemp(prefix=".replaced-", dir=out_dir)
                os.replace(final, os.path.join(old, entry))
                os.replace(os.path.join(tmp, entry), final)
                shutil.rmtree(old)
            else:
                os.replace(os.path.join(tmp, entry), final)
                added.append(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return added
