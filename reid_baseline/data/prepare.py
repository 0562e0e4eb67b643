"""Get a data set's official zip, verify its checksum, extract it safely, check the layout.

Market-1501 has a mirror and a published checksum; DukeMTMC-reID (withdrawn by its authors),
MSMT17 (by request to its authors) and CUHK03-NP (from the re-ranking authors' links) come
only from a local zip, and no checksum of theirs is published, so the found MD5 is printed
for the user to compare with their source (pass ``md5`` to enforce one).

URL: the GluonCV mirror used by GluonCV's ``scripts/datasets/market1501.py`` (that
script checks no hash).  MD5: the checksum of ``Market-1501-v15.09.15.zip`` that
open-reid (``Cysu/open-reid``, ``reid/datasets/market1501.py``) verifies; it is
the original release from Liang Zheng's page, assumed to be the file the mirror
serves.  If a download from the mirror fails the check, compare with a copy from
the official page and pass ``md5=None`` / ``--md5 none`` to skip verification.
"""
import hashlib
import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib

from .datasets import load_dataset
from ..errors import DatasetError
from .datasets.market1501 import ROOT_NAME

ZIP_NAME = ROOT_NAME + ".zip"
MARKET1501_URL = ("http://apache-mxnet.s3-accelerate.dualstack.amazonaws.com/gluon/dataset/"
                  + ZIP_NAME)
MARKET1501_MD5 = "65005ab7d12ec1c44de4eeafe813e68a"
OFFICIAL_PAGE = "http://www.liangzheng.org/Project/project_reid.html"  # as cited by torchreid


def md5sum(path, chunk_size=1 << 20):
    """Hex MD5 digest of a file, read in chunks (the zip is ~150 MB)."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url, path, timeout=60):
    """Stream ``url`` to a temp file next to ``path`` then rename, so no half file is left."""
    from urllib.request import urlopen  # local: only needed when downloading

    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".download-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out:
            response = urlopen(url, timeout=timeout)
            shutil.copyfileobj(response, out, 1 << 20)
        os.replace(tmp, path)
    except (OSError, ValueError) as err:  # URLError and socket timeouts are OSErrors
        raise DatasetError(
            "could not download %s (%s). No network? Download %s manually (official page: "
            "%s) and pass its path with --zip (zip_path=...)" % (url, err, ZIP_NAME, OFFICIAL_PAGE))
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


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


def safe_extract(zip_path, out_dir):
    """Extract ``zip_path`` into ``out_dir`` after checking every member (nothing is
    written if any member is unsafe); a corrupted archive raises DatasetError."""
    out_real = os.path.realpath(out_dir)
    current = None
    try:
        with zipfile.ZipFile(zip_path) as archive:
            infos = archive.infolist()
            for info in infos:
                _check_member(info, out_real, zip_path)
            for info in infos:
                current = info.filename
                archive.extract(info, out_real)  # CRC is checked while reading
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:
        raise DatasetError("%s: corrupted zip archive%s (%s); download it again"
                           % (zip_path, " at member %r" % current if current else "", err))


# name -> (official zip name, download URL or None, published MD5 or None)
ARCHIVES = {
    "market1501": (ZIP_NAME, MARKET1501_URL, MARKET1501_MD5),
    "dukemtmc": ("DukeMTMC-reID.zip", None, None),
    "msmt17": ("MSMT17_V1.zip or MSMT17_V2.zip", None, None),
    "cuhk03np": ("cuhk03-np.zip", None, None),
}


def prepare_dataset(name, out_dir, zip_path=None, url=None, md5="published", verify_counts=True,
                    **options):
    """Verify and extract the zip of data set `name` into ``out_dir``; return the loaded set.

    ``zip_path``: a local copy of the zip; if None, ``out_dir/<official zip name>`` is used,
    downloaded from ``url`` (default: the set's mirror; Market-1501 only) when missing.
    ``md5``: the expected digest, "published" for the set's published one (if it has one),
    None to skip the check (the found digest is printed). ``verify_counts`` and ``options``
    (cuhk03np: ``subset``) are passed to :func:`load_dataset`.
    """
    if name not in ARCHIVES:
        raise DatasetError("%s: no archive to prepare; expected one of %s (your own data needs "
                           "no preparation)" % (name, ", ".join(ARCHIVES)))
    zip_name, default_url, published = ARCHIVES[name]
    url = default_url if url is None else url
    md5 = published if md5 == "published" else md5
    out_dir = os.path.abspath(os.path.expanduser(str(out_dir)))
    os.makedirs(out_dir, exist_ok=True)
    if zip_path is None:
        zip_path = os.path.join(out_dir, zip_name)
        if not os.path.isfile(zip_path):
            if not url:
                raise DatasetError("%s: no zip given and no download: pass the path of your copy "
                                   "of %s with --zip (zip_path=...)" % (name, zip_name))
            print("Downloading %s to %s" % (url, zip_path))
            download(url, zip_path)
    zip_path = os.path.abspath(os.path.expanduser(str(zip_path)))
    if not os.path.isfile(zip_path):
        raise DatasetError("%s: zip file does not exist" % zip_path)
    found = md5sum(zip_path)
    if md5 is None:
        print("WARNING: MD5 check skipped for %s (%s; its MD5 is %s)" % (
            zip_path, "no checksum is published" if not published else "as asked", found))
    elif found != md5.lower():
        raise DatasetError("%s: MD5 checksum mismatch: expected %s, found %s (incomplete or "
                           "wrong file; download it again)" % (zip_path, md5.lower(), found))
    print("Extracting %s to %s" % (zip_path, out_dir))
    safe_extract(zip_path, out_dir)
    return load_dataset(name, out_dir, verify_counts=verify_counts, **options)


def prepare_market1501(out_dir, zip_path=None, url=MARKET1501_URL, md5=MARKET1501_MD5,
                       verify_counts=True):
    """Verify and extract ``Market-1501-v15.09.15.zip`` into ``out_dir``; return the loaded
    dataset (see :func:`prepare_dataset`; ``md5=None`` skips the check)."""
    return prepare_dataset("market1501", out_dir, zip_path, url, md5, verify_counts)
