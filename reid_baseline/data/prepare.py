"""Get a data set's official zip, verify its checksum, extract it safely, check the layout.

Market-1501 has a download address and a published checksum; DukeMTMC-reID (withdrawn by its
authors), MSMT17 (by request to its authors) and CUHK03-NP (from the re-ranking authors'
links) come only from a local zip, and no checksum of theirs is published, so the found MD5 is
printed for the user to compare with their source (pass ``md5`` to enforce one).

Extraction is all or nothing (data/archive.py), bounded by the set's known size
(ARCHIVE_LIMITS); a wrong set's files are removed again after the layout check fails.

URL: the GluonCV address used by GluonCV's ``scripts/datasets/market1501.py`` (that script
checks no hash), in the ``apache-mxnet`` S3 bucket, which has been unreliable since MXNet's
retirement (2023). MD5: the checksum of ``Market-1501-v15.09.15.zip`` that open-reid
(``Cysu/open-reid``, ``reid/datasets/market1501.py``) verifies; it is the original release
from the authors' page, assumed to be the file the bucket serves.
"""
import os
import shutil
import tempfile

from ..errors import DatasetError
from ..progress import progress_bar
from .archive import GIB, HARD_LIMIT, extract_into, md5sum
from .datasets import load_dataset
from .datasets.market1501 import ROOT_NAME

ZIP_NAME = ROOT_NAME + ".zip"
MARKET1501_URL = ("http://apache-mxnet.s3-accelerate.dualstack.amazonaws.com/gluon/dataset/"
                  + ZIP_NAME)
MARKET1501_MD5 = "65005ab7d12ec1c44de4eeafe813e68a"
# The dataset authors' page (Liang Zheng's Market-1501 page), where the official zip is linked.
OFFICIAL_PAGE = "https://zheng-lab.cecs.anu.edu.au/Project/project_reid.html"

# name -> (official zip name, download URL or None, published MD5 or None)
ARCHIVES = {
    "market1501": (ZIP_NAME, MARKET1501_URL, MARKET1501_MD5),
    "dukemtmc": ("DukeMTMC-reID.zip", None, None),
    "msmt17": ("MSMT17_V1.zip or MSMT17_V2.zip", None, None),
    "cuhk03np": ("cuhk03-np.zip", None, None),
}
# name -> (most members, most extracted bytes) an archive of the set may hold: about twice the
# set's files (Market-1501's zip also holds gt_bbox/ and gt_query/: ~68k files, ~0.3 GB) and
# a generous bound on their bytes (person crops are a few to a few tens of KB each).
ARCHIVE_LIMITS = {
    "market1501": (150000, 2 * GIB),       # 36,036 images + 31,995 gt_bbox/gt_query files
    "dukemtmc": (80000, 4 * GIB),          # 36,411 images
    "msmt17": (260000, 12 * GIB),          # 126,441 images
    "cuhk03np": (70000, 4 * GIB),          # 2 x 14,097 images (detected and labeled)
}


def download(url, path, timeout=60):
    """Stream ``url`` to a temp file next to ``path`` then rename, so no half file is left."""
    from urllib.request import urlopen  # local: only needed when downloading

    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".download-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out:
            response = urlopen(url, timeout=timeout)
            size = response.headers.get("Content-Length")
            with progress_bar(total=int(size) if size and size.isdigit() else None, unit="B",
                              desc="downloading " + os.path.basename(path),
                              unit_scale=True) as bar:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
        os.replace(tmp, path)
    except (OSError, ValueError) as err:  # URLError and socket timeouts are OSErrors
        store = ("the apache-mxnet bucket behind it has been unreliable since MXNet's "
                 "retirement (2023); " if url == MARKET1501_URL else "")
        page = (" from the dataset authors' page %s" % OFFICIAL_PAGE
                if os.path.basename(path) == ZIP_NAME else "")
        raise DatasetError("could not download %s (%s): %sdownload the official %s%s and pass "
                           "its path with --zip (zip_path=...)"
                           % (url, err, store, os.path.basename(path), page)) from err
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def prepare_dataset(name, out_dir, zip_path=None, url=None, md5="published", verify_counts=True,
                    overwrite=False, max_size=None, **options):
    """Verify and extract the zip of data set `name` into ``out_dir``; return the loaded set.

    ``zip_path``: a local copy of the zip; if None, ``out_dir/<official zip name>`` is used,
    downloaded from ``url`` (default: the set's download address; Market-1501 only) when
    missing. ``md5``: the expected digest, "published" for the set's published one (if it has
    one), None to skip the check (the found digest is printed). ``overwrite``: replace a
    different copy of the set in ``out_dir``. ``max_size``: the largest extracted size in
    bytes to accept (default: the set's bound in ARCHIVE_LIMITS). ``verify_counts`` and
    ``options`` (cuhk03np: ``subset``) are passed to :func:`load_dataset`.
    """
    if name not in ARCHIVES:
        raise DatasetError("%s: no archive to prepare; expected one of %s (your own data needs "
                           "no preparation)" % (name, ", ".join(ARCHIVES)))
    zip_name, default_url, published = ARCHIVES[name]
    limits = ARCHIVE_LIMITS.get(name, HARD_LIMIT)
    if max_size is not None:
        if not 0 < max_size <= HARD_LIMIT[1]:
            raise DatasetError("--max-size must be in (0, %d] GiB, got %.3g GiB"
                               % (HARD_LIMIT[1] // GIB, max_size / GIB))
        limits = (HARD_LIMIT[0], int(max_size))
    url = default_url if url is None else url
    md5 = published if md5 == "published" else md5
    out_dir = os.path.abspath(os.path.expanduser(str(out_dir)))
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise DatasetError("--out %s is a file; expected a folder" % out_dir)
    if zip_path is not None:
        zip_path = os.path.abspath(os.path.expanduser(str(zip_path)))
        if not os.path.isfile(zip_path):
            raise DatasetError("%s: zip file does not exist" % zip_path)
    created = not os.path.isdir(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    try:
        if zip_path is None:
            zip_path = os.path.join(out_dir, zip_name)
            if not os.path.isfile(zip_path):
                if not url:
                    raise DatasetError("%s: no zip given and no download: pass the path of your "
                                       "copy of %s with --zip (zip_path=...)" % (name, zip_name))
                print("Downloading %s to %s" % (url, zip_path))
                download(url, zip_path)
        found = md5sum(zip_path)
        if md5 is None:
            print("WARNING: MD5 check skipped for %s (%s; its MD5 is %s)" % (
                zip_path, "no checksum is published" if not published else "as asked", found))
        elif found != md5.lower():
            raise DatasetError("%s: MD5 checksum mismatch: expected %s, found %s (incomplete or "
                               "wrong file; download it again)" % (zip_path, md5.lower(), found))
        print("Extracting %s to %s" % (zip_path, out_dir))
        added = extract_into(zip_path, out_dir, limits, overwrite)
        try:
            return load_dataset(name, out_dir, verify_counts=verify_counts, **options)
        except BaseException:
            # Not this set's layout (a wrong archive): what it added goes again.
            for path in added:
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
            raise
    except BaseException:
        if created and not os.listdir(out_dir):
            os.rmdir(out_dir)  # a failed first run leaves no empty folder behind
        raise


def prepare_market1501(out_dir, zip_path=None, url=MARKET1501_URL, md5=MARKET1501_MD5,
                       verify_counts=True, overwrite=False):
    """Verify and extract ``Market-1501-v15.09.15.zip`` into ``out_dir``; return the loaded
    dataset (see :func:`prepare_dataset`; ``md5=None`` skips the check)."""
    return prepare_dataset("market1501", out_dir, zip_path, url, md5, verify_counts,
                           overwrite=overwrite)
