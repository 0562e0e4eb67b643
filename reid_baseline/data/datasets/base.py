"""What every data set layout shares: records, errors, image checks and the loaded data set.

A layout module parses its own folders or list files into (path, pid, camid) records and
hands them to :class:`ReIDDataset`, which relabels the training identities, checks the
query/gallery structure and the official counts, and checks every image file cheaply.
"""
import collections
import os

import cv2
import numpy as np

from ...errors import DatasetError

Record = collections.namedtuple("Record", "path pid camid")

JUNK_PID = -1  # the evaluation ignores gallery images with this id (Market-1501's junk)
DISTRACTOR_PID = 0  # Market-1501's distractors; other sets have no such id
SPLITS = ("train", "query", "gallery")



def find_root(root, official_names, is_root, expected, title):
    """The folder that holds a data set: `root` itself or `root/<name>` for a name in
    `official_names`, whichever `is_root` accepts first; else a DatasetError saying what
    was `expected` and what `root` holds."""
    root = os.path.abspath(os.path.expanduser(str(root)))
    if not os.path.isdir(root):
        raise DatasetError("%s: dataset folder does not exist" % root)
    for candidate in [root] + [os.path.join(root, name) for name in official_names]:
        if is_root(candidate):
            return candidate
    found = sorted(os.listdir(root))
    found = ", ".join(found[:20]) + (" ..." if len(found) > 20 else "") if found else "nothing"
    raise DatasetError("%s: not a %s folder: expected %s (or a sub-folder %s holding them); "
                       "found %s" % (root, title, expected, " or ".join(
                           n + "/" for n in official_names), found))


def list_images(folder, extensions=(".jpg",)):
    """Sorted file names in `folder` ending with one of `extensions` (any case); a missing
    folder or one without such files is a DatasetError."""
    if not os.path.isdir(folder):
        raise DatasetError("%s: split folder does not exist" % folder)
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(extensions))
    if not names:
        raise DatasetError("%s: no %s images found in this split folder"
                           % (folder, " or ".join(extensions)))
    return names


def relabel_records(records, min_pid=1):
    """Map pids to 0..N-1 in sorted order of the original pid (needed by a softmax classifier).

    Returns ``(new_records, original_pids)`` where ``original_pids[new] == old``. A pid below
    `min_pid` (Market-1501: 0 distractor, -1 junk; None: any integer) is a DatasetError.
    """
    for rec in records:
        if min_pid is not None and rec.pid < min_pid:
            # a classifier has no class for "not a person" / "bad box"
            raise DatasetError("%s: id %d (junk/distractor) in a training split; training "
                               "identities must be >= %d" % (rec.path, rec.pid, min_pid))
    original = sorted({rec.pid for rec in records})
    index = {pid: i for i, pid in enumerate(original)}
    return [rec._replace(pid=index[rec.pid]) for rec in records], original


class ReIDDataset(object):
    """A loaded data set: ``train`` (ids relabelled 0..N-1; ``train_pids[i]`` is class i's
    original id), ``query``, ``gallery``, ``num_train_pids``, ``root``, ``summary()``.

    `where` maps each split to the folder or list file it came from (for messages). Checks,
    in order: every query identity has gallery images; with `distractor_pid`, no distractor
    in the query; with `disjoint_ids` (train and test ids share one numbering), no training
    identity among the test ones; with `verify_counts`, the `expected` counts
    ({split: {"images": n, "ids": n, ...}}); and every image file (:func:`check_image_files`).
    """

    def __init__(self, title, root, train, query, gallery, where, expected=None,
                 verify_counts=True, min_train_pid=1, distractor_pid=None, disjoint_ids=True,
                 junk_files=0):
        self.title, self.root, self.where = title, root, where
        self.train, self.train_pids = relabel_records(train, min_train_pid)
        self.query, self.gallery = query, gallery
        self.num_train_pids = len(self.train_pids)
        self.distractor_pid, self.junk_files = distractor_pid, junk_files
        self._check_structure(disjoint_ids)
        if verify_counts and expected:
            self._verify_counts(expected)
        # A damaged file would otherwise surface only when first read, e.g. at the first
        # evaluation after hours of training.
        check_image_files([r.path for r in self.train + self.query + self.gallery], self.root)

    def _check_structure(self, disjoint_ids):
        # Evaluation needs every query identity in the gallery, and test identities
        # must not leak into training.
        for split in SPLITS:
            if not getattr(self, split):
                raise DatasetError("%s: the %s split has no images" % (self.where[split], split))
        gallery_ids = {r.pid for r in self.gallery}
        query_ids = {r.pid for r in self.query}
        missing = sorted(query_ids - gallery_ids)
        if missing:
            raise DatasetError("%s: %d query identities have no image in the gallery %s: %s"
                               % (self.where["query"], len(missing), self.where["gallery"],
                                  missing[:10]))
        if self.distractor_pid is not None and self.distractor_pid in query_ids:
            raise DatasetError("%s: distractor images (id %04d) in the query split"
                               % (self.where["query"], self.distractor_pid))
        leaked = sorted(set(self.train_pids) & (gallery_ids | query_ids)) if disjoint_ids else []
        if leaked:
            raise DatasetError("%s: %d training identities also appear in the test splits: %s"
                               % (self.where["train"], len(leaked), leaked[:10]))

    def stats(self):
        """Dict split -> {"images", "ids", "cameras", "distractors"}; gallery also "junk" and
        "files" (ids never count the distractor or junk ids)."""
        out = {}
        for split in SPLITS:
            records = getattr(self, split)
            pids = {r.pid for r in records}
            distractors = sum(r.pid == self.distractor_pid for r in records)
            out[split] = {"images": len(records), "cameras": len({r.camid for r in records}),
                          "ids": len(pids - {self.distractor_pid, JUNK_PID}),
                          "distractors": distractors}
        # train is relabelled: 0 is a real class there, not a distractor
        out["train"].update(ids=self.num_train_pids, distractors=0)
        out["gallery"].update(junk=self.junk_files, files=len(self.gallery) + self.junk_files)
        return out

    def _verify_counts(self, expected):
        stats, errors = self.stats(), []
        for split, counts in expected.items():
            bad = ["%s %d found %d" % (what, n, stats[split][what])
                   for what, n in counts.items() if stats[split][what] != n]
            if bad:
                errors.append("  %s (%s): expected %s" % (split, self.where[split],
                                                         "; expected ".join(bad)))
        if errors:
            raise DatasetError(
                "%s: does not match the official %s counts (incomplete or corrupted "
                "extraction?):\n%s\nIf this is intentionally a different dataset (e.g. the "
                "generated toy set), disable the check with the config key "
                "DATASETS.VERIFY_COUNTS False (verify_counts=False)."
                % (self.root, self.title, "\n".join(errors)))

    def summary(self):
        """A small text table of identities / images / cameras per split."""
        stats = self.stats()
        lines = ["%s at %s" % (self.title, self.root),
                 "  %-8s %6s %8s %8s" % ("split", "ids", "images", "cameras")]
        for split in SPLITS:
            s = stats[split]
            lines.append("  %-8s %6d %8d %8d" % (split, s["ids"], s["images"], s["cameras"]))
        if self.distractor_pid is not None:
            lines.append("  (ids exclude distractors; gallery also holds %d distractor images "
                         "(id %04d) and %d junk files (id -1, dropped))"
                         % (stats["gallery"]["distractors"], self.distractor_pid,
                            stats["gallery"]["junk"]))
        return "\n".join(lines)

    def __repr__(self):
        return self.summary()


# Bytes read from the end of a file for the end-of-image check: room for zero padding.
_TAIL_BYTES = 1024
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def image_problem(head, tail):
    """What is wrong with a JPEG or PNG file given its first bytes and its last bytes, or None.

    Catches an empty file, a file that is neither a JPEG (start marker FFD8) nor a PNG
    (signature), a truncated JPEG (no end marker FFD9 at the end; zero padding after it is
    allowed) and a truncated PNG (no IEND chunk at the end).
    """
    if not head:
        return "empty file (0 bytes)"
    if head[:8] == _PNG_SIGNATURE:
        # OpenCV decodes a truncated PNG partially too; the last chunk must be IEND.
        if b"IEND" not in tail.rstrip(b"\x00")[-12:]:
            return "truncated PNG (no IEND chunk at the end of the file)"
        return None
    if head[:2] == b"BM":  # BMP: OpenCV refuses a truncated one when decoding
        return None
    if head[:2] != b"\xff\xd8":
        return ("not a JPEG (does not start with the marker FFD8; starts with %r), a PNG nor "
                "a BMP" % head[:8])
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
    """Raise one DatasetError listing every file of `paths` that :func:`image_problem` rejects.

    Reads a few bytes at both ends of each file only (Market-1501's 32k files take well
    under a second with a warm page cache); names are shown relative to `root`.
    """
    bad = []
    for path in paths:
        try:
            problem = image_problem(*_read_ends(path))
        except OSError as err:
            problem = "cannot read the file (%s)" % (err.strerror or err)
        if problem:
            bad.append("%s: %s" % (os.path.relpath(path, root), problem))
    if bad:
        first = "; the first %d:" % show if len(bad) > show else ":"
        raise DatasetError("%s: %d damaged image files (re-extract or re-download the dataset)"
                           "%s %s" % (root, len(bad), first, "; ".join(bad[:show])))


def parse_pid_camera(path, name_re, dataset, pattern, num_cameras):
    """``(pid, camid)`` from the name of `path` matched by `name_re` (group 1 the identity,
    group 2 the 1-based camera); camid is 0-based (c1 -> 0). A name that does not match, or
    a camera outside 1..num_cameras, is a DatasetError naming the file and `dataset`'s
    `pattern`."""
    match = name_re.match(os.path.basename(path))
    if match is None:
        raise DatasetError("%s: file name does not match the %s pattern %s"
                           % (path, dataset, pattern))
    pid, cam = int(match.group(1)), int(match.group(2))
    if not 1 <= cam <= num_cameras:
        raise DatasetError("%s: camera c%d out of range, expected c1..c%d"
                           % (path, cam, num_cameras))
    return pid, cam - 1


def read_image(path):
    """Read an image (JPEG or PNG) as an HWC uint8 RGB numpy array, with OpenCV: the pixels of
    MXNet's `mx.image.imdecode` (which runs OpenCV underneath) without an MXNet op, so loader
    workers never wait for an OpenMP thread (issue 10).

    Raises DatasetError naming the file when it is missing, empty, not an image, truncated
    or not decodable.  Called once per sample by the data loader: one read, one decode.
    """
    try:
        with open(path, "rb") as f:
            buf = f.read()
    except (IOError, OSError) as err:
        raise DatasetError("%s: cannot read image file (%s)" % (path, err))
    problem = image_problem(buf[:8], buf[-_TAIL_BYTES:])
    if problem:
        raise DatasetError("%s: %s; re-extract or re-download the dataset" % (path, problem))
    # IMREAD_COLOR applies the EXIF orientation, as MXNet's decoder does.
    img = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_COLOR)
    if img is None or img.ndim != 3 or img.shape[0] == 0 or img.shape[1] == 0:
        raise DatasetError("%s: not a decodable image (%d bytes, starts with %r)"
                           % (path, len(buf), buf[:8]))
    return np.ascontiguousarray(img[:, :, ::-1])  # BGR -> RGB
