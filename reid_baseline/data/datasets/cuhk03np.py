"""CUHK03-NP (Li et al. 2014; the new protocol of Zhong et al., CVPR 2017) -> records.

Layout: ``cuhk03-np/{detected,labeled}/{bounding_box_train,query,bounding_box_test}/``, the
Market-1501 folders, with PNG files named like ``0001_c1_1.png`` (identity 0001, camera 1 of
the identity's camera pair, image 1). 767 training and 700 test identities; each test
identity has one query per camera. There is no junk and no distractor id.
"""
import os
import re

from .base import DatasetError, ReIDDataset, parse_pid_camera
from .base import find_root as _find_root
from .market1501 import SPLIT_DIRS, has_split_dirs, parse_split

ROOT_NAME = "cuhk03-np"
SUBSETS = ("detected", "labeled")
NUM_CAMERAS = 2
EXPECTED_COUNTS = {
    "detected": {"train": {"images": 7365, "ids": 767}, "query": {"images": 1400, "ids": 700},
                 "gallery": {"images": 5332, "ids": 700}},
    "labeled": {"train": {"images": 7368, "ids": 767}, "query": {"images": 1400, "ids": 700},
                "gallery": {"images": 5328, "ids": 700}},
}
FILENAME_PATTERN = "PPPP_cC_N.png (e.g. 0001_c1_1.png, camera c1 or c2)"
_NAME_RE = re.compile(r"^(\d{4})_c(\d)_(\d+)\.png$")


def parse_filename(path, num_cameras=NUM_CAMERAS):
    """``(pid, camid)`` of a CUHK03-NP file name; camid is 0-based (c1 -> 0)."""
    return parse_pid_camera(path, _NAME_RE, "CUHK03-NP", FILENAME_PATTERN, num_cameras)


def find_root(root, subset="detected"):
    """The folder of one CUHK03-NP subset: `root` itself (e.g. ``cuhk03-np/labeled``), or
    ``root/<subset>`` or ``root/cuhk03-np/<subset>``. `root` naming the other subset's folder
    is a DatasetError (DATASETS.CUHK03_SUBSET selects the subset)."""
    if subset not in SUBSETS:
        raise DatasetError("CUHK03-NP subset must be one of %s, got %r" % (SUBSETS, subset))
    found = _find_root(root, [subset, ROOT_NAME + "/" + subset], has_split_dirs,
                       "sub-folders %s" % ", ".join(d + "/" for d in SPLIT_DIRS.values()),
                       "CUHK03-NP (%s)" % subset)
    other = [s for s in SUBSETS if s != subset][0]
    if os.path.basename(found) == other:
        raise DatasetError("%s: is the CUHK03-NP %s subset but the %s one was asked for (config "
                           "key DATASETS.CUHK03_SUBSET)" % (found, other, subset))
    return found


def load_cuhk03np(root, verify_counts=True, subset="detected"):
    """Load one CUHK03-NP subset (detected or labeled) from `root` (see :func:`find_root`)."""
    root = find_root(root, subset)
    split = {k: os.path.join(root, d) for k, d in SPLIT_DIRS.items()}
    records = {k: parse_split(split[k], parse=parse_filename, extensions=(".png",))
               for k in SPLIT_DIRS}
    return ReIDDataset("CUHK03-NP (%s)" % subset, root, records["train"], records["query"],
                       records["gallery"], split, EXPECTED_COUNTS[subset], verify_counts)
