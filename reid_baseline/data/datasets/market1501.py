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

from .base import (
    DISTRACTOR_PID,
    JUNK_PID,
    Record,
    ReIDDataset,
    parse_pid_camera,
    relabel_records,
    split_image_names,
)
from .base import find_root as _find_root

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

FILENAME_PATTERN = ("PPPP_cCsS_FFFFFF_BB.jpg (e.g. 0002_c1s1_000451_03.jpg; "
                    "junk: -1_c1s1_000401_03.jpg)")
_NAME_RE = re.compile(r"^(-1|\d{4})_c(\d)s(\d+)_(\d{6})_(\d{2})\.jpg$")


def parse_filename(path, num_cameras=6):
    """Return ``(pid, camid)`` of a Market-1501 file name; camid is 0-based (c1 -> 0).

    pid is -1 for junk and 0 for distractors.  Raises DatasetError naming the
    file when the name does not match the pattern or the camera is not 1..num_cameras.
    """
    return parse_pid_camera(path, _NAME_RE, "Market-1501", FILENAME_PATTERN, num_cameras)


def has_split_dirs(folder, split_dirs=SPLIT_DIRS):
    """Whether `folder` holds the three split folders of a Market-1501-style layout."""
    return all(os.path.isdir(os.path.join(folder, d)) for d in split_dirs.values())


def find_root(root):
    """Return the folder that directly holds the three split folders.

    Accepts the dataset folder itself or a parent holding ``Market-1501-v15.09.15/``.
    """
    return _find_root(root, [ROOT_NAME], has_split_dirs, "sub-folders %s" % ", ".join(
        d + "/" for d in SPLIT_DIRS.values()), "Market-1501")


def parse_split(folder, relabel=False, num_cameras=6, parse=None, extensions=(".jpg",)):
    """List Records of the image files of one split folder, sorted by file name.

    Other files (Market ships ``Thumbs.db``) are ignored; junk images (pid -1)
    are dropped as the standard protocol ignores them; distractors (pid 0) are
    kept.  With ``relabel=True`` pids become 0..N-1 (see :func:`relabel_records`).
    `parse(path) -> (pid, camid)` reads a file name (default: Market-1501's with
    `num_cameras` cameras), so Market-style layouts of other sets share this function.
    """
    folder = os.path.abspath(str(folder))
    parse = parse or (lambda path: parse_filename(path, num_cameras))
    records = []
    for name in split_image_names(folder, extensions):
        path = os.path.join(folder, name)
        pid, camid = parse(path)
        if pid != JUNK_PID:
            records.append(Record(path, pid, camid))
    if relabel:
        records = relabel_records(records)[0]
    return records


class Market1501(ReIDDataset):
    """Market-1501 loaded from disk: ``train`` (relabelled), ``query``, ``gallery``.

    ``train_pids[i]`` is the original id of training class i.  ``gallery_junk``
    counts the dropped junk images.  With ``verify_counts`` the official image
    and id counts (EXPECTED_COUNTS) are enforced.  Every kept image file is checked
    cheaply (:func:`check_image_files`) so a damaged one stops the run before training.
    """

    def __init__(self, root, verify_counts=True, num_cameras=6):
        root = find_root(root)
        split = {k: os.path.join(root, d) for k, d in SPLIT_DIRS.items()}
        records = {k: parse_split(split[k], num_cameras=num_cameras) for k in SPLIT_DIRS}
        self.gallery_junk = sum(n.startswith("-1_") and n.lower().endswith(".jpg")
                                for n in os.listdir(split["gallery"]))
        super().__init__("Market-1501", root, records["train"], records["query"],
                         records["gallery"], split, EXPECTED_COUNTS, verify_counts,
                         distractor_pid=DISTRACTOR_PID, junk_files=self.gallery_junk)


def load_market1501(root, verify_counts=True, num_cameras=6):
    """Load Market-1501 from ``root`` (dataset folder or its parent); see :class:`Market1501`."""
    return Market1501(root, verify_counts=verify_counts, num_cameras=num_cameras)
