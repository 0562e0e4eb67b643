"""Market-1501 folder layout -> lists of (path, pid, camid) records.

Layout (Zheng et al., ICCV 2015)::

    Market-1501-v15.09.15/
        bounding_box_train/   training images (identities relabelled 0..N-1 here)
        bounding_box_test/    gallery: test identities + distractors (0000) + junk (-1)
        query/                one query image per (test identity, camera)

File names look like ``0002_c1s1_000451_03.jpg``: identity 0002, camera 1,
sequence 1, frame 000451, box 03.
"""
import collections
import os
import re

import mxnet as mx

ROOT_NAME = "Market-1501-v15.09.15"
SPLIT_DIRS = collections.OrderedDict(
    [("train", "bounding_box_train"), ("query", "query"), ("gallery", "bounding_box_test")])

# Official numbers; "ids" never counts the distractor id 0 nor the junk id -1,
# and "images" is after dropping junk (19,732 files = 15,913 kept + 3,819 junk).
EXPECTED_COUNTS = {
    "train": {"images": 12936, "ids": 751},
    "query": {"images": 3368, "ids": 750},
    "gallery": {"images": 15913, "ids": 750, "files": 19732, "junk": 3819, "distractors": 2793},
}

JUNK_PID = -1
DISTRACTOR_PID = 0
FILENAME_PATTERN = ("PPPP_cCsS_FFFFFF_BB.jpg (e.g. 0002_c1s1_000451_03.jpg; "
                    "junk: -1_c1s1_000401_03.jpg)")
_NAME_RE = re.compile(r"^(-1|\d{4})_c(\d)s(\d+)_(\d{6})_(\d{2})\.jpg$")

Record = collections.namedtuple("Record", "path pid camid")


class DatasetError(ValueError):
    """A dataset file or folder is missing or is not what Market-1501 has."""


def parse_filename(path, num_cameras=6):
    """Return ``(pid, camid)`` of a Market-1501 file name; camid is 0-based (c1 -> 0).

    pid is -1 for junk and 0 for distractors.  Raises DatasetError naming the
    file when the name does not match the pattern or the camera is not 1..num_cameras.
    """
    match = _NAME_RE.match(os.path.basename(path))
    if match is None:
        raise DatasetError("%s: file name does not match the Market-1501 pattern %s"
                           % (path, FILENAME_PATTERN))
    pid, cam = int(match.group(1)), int(match.group(2))
    if not 1 <= cam <= num_cameras:
        raise DatasetError("%s: camera c%d out of range, expected c1..c%d"
                           % (path, cam, num_cameras))
    return pid, cam - 1


def _has_splits(folder):
    return all(os.path.isdir(os.path.join(folder, d)) for d in SPLIT_DIRS.values())


def find_root(root):
    """Return the folder that directly holds the three split folders.

    Accepts the dataset folder itself or a parent holding ``Market-1501-v15.09.15/``.
    """
    root = os.path.abspath(os.path.expanduser(str(root)))
    if not os.path.isdir(root):
        raise DatasetError("%s: dataset folder does not exist" % root)
    for candidate in (root, os.path.join(root, ROOT_NAME)):
        if _has_splits(candidate):
            return candidate
    found = sorted(os.listdir(root))
    found = ", ".join(found[:20]) + (" ..." if len(found) > 20 else "") if found else "nothing"
    raise DatasetError(
        "%s: not a Market-1501 folder: expected sub-folders %s (or a sub-folder %s/ holding "
        "them); found %s" % (root, ", ".join(d + "/" for d in SPLIT_DIRS.values()), ROOT_NAME,
                             found))


def relabel_records(records):
    """Map pids to 0..N-1 in sorted order of the original pid (needed by a softmax classifier).

    Returns ``(new_records, original_pids)`` where ``original_pids[new] == old``.
    """
    for rec in records:
        if rec.pid <= 0:
            # a classifier has no class for "not a person" / "bad box"
            raise DatasetError("%s: id %d (junk/distractor) in a training split; training "
                               "identities must be >= 1" % (rec.path, rec.pid))
    original = sorted({rec.pid for rec in records})
    index = {pid: i for i, pid in enumerate(original)}
    return [rec._replace(pid=index[rec.pid]) for rec in records], original


def parse_split(folder, relabel=False, num_cameras=6):
    """List Records of the ``*.jpg`` files of one split folder, sorted by file name.

    Non-jpg files (Market ships ``Thumbs.db``) are ignored; junk images (pid -1)
    are dropped as the standard protocol ignores them; distractors (pid 0) are
    kept.  With ``relabel=True`` pids become 0..N-1 (see :func:`relabel_records`).
    """
    folder = os.path.abspath(str(folder))
    if not os.path.isdir(folder):
        raise DatasetError("%s: split folder does not exist" % folder)
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(".jpg"))
    if not names:
        raise DatasetError("%s: no .jpg images found in this split folder" % folder)
    records = []
    for name in names:
        path = os.path.join(folder, name)
        pid, camid = parse_filename(path, num_cameras)
        if pid != JUNK_PID:
            records.append(Record(path, pid, camid))
    if relabel:
        records = relabel_records(records)[0]
    return records


def _stats(records):
    pids = {r.pid for r in records}
    return {"images": len(records), "ids": len(pids - {DISTRACTOR_PID, JUNK_PID}),
            "cameras": len({r.camid for r in records}),
            "distractors": sum(r.pid == DISTRACTOR_PID for r in records)}


class Market1501(object):
    """Market-1501 loaded from disk: ``train`` (relabelled), ``query``, ``gallery``.

    ``train_pids[i]`` is the original id of training class i.  ``gallery_junk``
    counts the dropped junk images.  With ``verify_counts`` the official image
    and id counts (EXPECTED_COUNTS) are enforced.  Every kept image file is checked
    cheaply (:func:`check_image_files`) so a damaged one stops the run before training.
    """

    def __init__(self, root, verify_counts=True, num_cameras=6):
        self.root = find_root(root)
        split = {k: os.path.join(self.root, d) for k, d in SPLIT_DIRS.items()}
        train = parse_split(split["train"], num_cameras=num_cameras)
        self.train, self.train_pids = relabel_records(train)
        self.query = parse_split(split["query"], num_cameras=num_cameras)
        self.gallery = parse_split(split["gallery"], num_cameras=num_cameras)
        self.gallery_junk = sum(n.startswith("-1_") and n.lower().endswith(".jpg")
                                for n in os.listdir(split["gallery"]))
        self.num_train_pids = len(self.train_pids)
        self._check_structure(split)
        if verify_counts:
            self._verify_counts()
        # A damaged file would otherwise surface only when first read, e.g. at the first
        # evaluation after hours of training.
        check_image_files([r.path for r in self.train + self.query + self.gallery], self.root)

    def _check_structure(self, split):
        # Evaluation needs every query identity in the gallery, and test identities
        # must not leak into training.
        gallery_ids = {r.pid for r in self.gallery}
        query_ids = {r.pid for r in self.query}
        missing = sorted(query_ids - gallery_ids)
        if missing:
            raise DatasetError("%s: %d query identities have no image in the gallery %s: %s"
                               % (split["query"], len(missing), split["gallery"], missing[:10]))
        if DISTRACTOR_PID in query_ids:
            raise DatasetError("%s: distractor images (id 0000) in the query split"
                               % split["query"])
        leaked = sorted(set(self.train_pids) & (gallery_ids | query_ids))
        if leaked:
            raise DatasetError("%s: %d training identities also appear in the test splits: %s"
                               % (split["train"], len(leaked), leaked[:10]))

    def stats(self):
        """Dict split -> {"images", "ids", "cameras", "distractors"}; gallery also "junk"."""
        out = {k: _stats(getattr(self, k)) for k in SPLIT_DIRS}
        # train is relabelled: 0 is a real class there, not a distractor
        out["train"].update(ids=self.num_train_pids, distractors=0)
        out["gallery"]["junk"] = self.gallery_junk
        out["gallery"]["files"] = len(self.gallery) + self.gallery_junk
        return out

    def _verify_counts(self):
        stats, errors = self.stats(), []
        for key, expected in EXPECTED_COUNTS.items():
            bad = ["%s %d found %d" % (what, n, stats[key][what])
                   for what, n in expected.items() if stats[key][what] != n]
            if bad:
                errors.append("  %s (%s): expected %s" % (
                    key, os.path.join(self.root, SPLIT_DIRS[key]), "; expected ".join(bad)))
        if errors:
            raise DatasetError(
                "%s: does not match the official Market-1501 counts (incomplete or corrupted "
                "extraction?):\n%s\nIf this is intentionally a different dataset (e.g. the "
                "generated toy set), disable the check with the config key "
                "DATASETS.VERIFY_COUNTS False (verify_counts=False)."
                % (self.root, "\n".join(errors)))

    def summary(self):
        """A small text table of identities / images / cameras per split."""
        stats = self.stats()
        lines = ["Market-1501 at %s" % self.root,
                 "  %-8s %6s %8s %8s" % ("split", "ids", "images", "cameras")]
        for key in SPLIT_DIRS:
            s = stats[key]
            lines.append("  %-8s %6d %8d %8d" % (key, s["ids"], s["images"], s["cameras"]))
        lines.append("  (ids exclude distractors; gallery also holds %d distractor images "
                     "(id 0000) and %d junk files (id -1, dropped))"
                     % (stats["gallery"]["distractors"], stats["gallery"]["junk"]))
        return "\n".join(lines)

    def __repr__(self):
        return self.summary()


def load_market1501(root, verify_counts=True, num_cameras=6):
    """Load Market-1501 from ``root`` (dataset folder or its parent); see :class:`Market1501`."""
    return Market1501(root, verify_counts=verify_counts, num_cameras=num_cameras)


# Bytes read from the end of a file for the end-of-image check: room for zero padding.
_TAIL_BYTES = 1024


def jpeg_problem(head, tail):
    """What is wrong with a JPEG file given its first bytes and its last bytes, or None.

    Catches an empty file, a file not starting with the JPEG start marker FFD8 and a
    truncated JPEG (no end marker FFD9 at the end; zero padding after it is allowed).
    """
    if not head:
        return "empty file (0 bytes)"
    if head[:2] != b"\xff\xd8":
        return "not a JPEG (does not start with the marker FFD8; starts with %r)" % head[:8]
    # OpenCV decodes a truncated JPEG partially (grey bottom) without any error, so
    # require the end-of-image marker; some writers pad with zeros after it.
    if b"\xff\xd9" not in tail.rstrip(b"\x00")[-16:]:
        return "truncated JPEG (no end-of-image marker FFD9 at the end of the file)"
    return None


def _read_ends(path):
    with open(path, "rb", buffering=0) as f:
        head = f.read(8)
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - _TAIL_BYTES))
        return head, f.read()


def check_image_files(paths, root, show=10):
    """Raise one DatasetError listing every file of `paths` that :func:`jpeg_problem` rejects.

    Reads a few bytes at both ends of each file only (Market-1501's 32k files take well
    under a second with a warm page cache); names are shown relative to `root`.
    """
    bad = []
    for path in paths:
        try:
            problem = jpeg_problem(*_read_ends(path))
        except OSError as err:
            problem = "cannot read the file (%s)" % (err.strerror or err)
        if problem:
            bad.append("%s: %s" % (os.path.relpath(path, root), problem))
    if bad:
        first = "; the first %d:" % show if len(bad) > show else ":"
        raise DatasetError("%s: %d damaged image files (re-extract or re-download the dataset)"
                           "%s %s" % (root, len(bad), first, "; ".join(bad[:show])))


def read_image(path):
    """Read an image as an HWC uint8 RGB ``mx.nd.NDArray``.

    Raises DatasetError naming the file when it is missing, empty, not a JPEG, truncated
    or not decodable.  Called once per sample by the data loader: one read, one decode.
    """
    try:
        with open(path, "rb") as f:
            buf = f.read()
    except (IOError, OSError) as err:
        raise DatasetError("%s: cannot read image file (%s)" % (path, err))
    problem = jpeg_problem(buf[:8], buf[-_TAIL_BYTES:])
    if problem:
        raise DatasetError("%s: %s; re-extract or re-download the dataset" % (path, problem))
    try:
        img = mx.image.imdecode(buf, flag=1, to_rgb=True)
    except mx.base.MXNetError:
        raise DatasetError("%s: not a decodable image (%d bytes, starts with %r)"
                           % (path, len(buf), buf[:8]))
    if img.ndim != 3 or img.shape[0] == 0 or img.shape[1] == 0:
        raise DatasetError("%s: decoded to an empty image %s" % (path, img.shape))
    return img
