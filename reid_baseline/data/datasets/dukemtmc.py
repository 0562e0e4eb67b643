"""DukeMTMC-reID (Ristani et al. 2016; Zheng et al. 2017) -> (path, pid, camid) records.

Layout: ``DukeMTMC-reID/{bounding_box_train,query,bounding_box_test}/`` with file names like
``0001_c2_f0046182.jpg`` (identity 0001, camera 2 of 8, frame 0046182). There is no junk and
no distractor id: the gallery's 408 identities absent from the query are its distractors.
The authors withdrew the data set in 2019; it is read here for those who hold a copy.
"""
import os
import re

from .base import ReIDDataset, parse_pid_camera
from .base import find_root as _find_root
from .market1501 import SPLIT_DIRS, has_split_dirs, parse_split

ROOT_NAME = "DukeMTMC-reID"
NUM_CAMERAS = 8
EXPECTED_COUNTS = {
    "train": {"images": 16522, "ids": 702},
    "query": {"images": 2228, "ids": 702},
    "gallery": {"images": 17661, "ids": 1110},
}
FILENAME_PATTERN = "PPPP_cC_fFFFFFFF.jpg (e.g. 0001_c2_f0046182.jpg)"
_NAME_RE = re.compile(r"^(\d{4})_c(\d)_f(\d{7})\.jpg$")


def parse_filename(path, num_cameras=NUM_CAMERAS):
    """``(pid, camid)`` of a DukeMTMC-reID file name; camid is 0-based (c1 -> 0)."""
    return parse_pid_camera(path, _NAME_RE, "DukeMTMC-reID", FILENAME_PATTERN, num_cameras)


def find_root(root):
    """The DukeMTMC-reID folder: `root` itself or `root/DukeMTMC-reID/`."""
    return _find_root(root, [ROOT_NAME], has_split_dirs, "sub-folders %s" % ", ".join(
        d + "/" for d in SPLIT_DIRS.values()), "DukeMTMC-reID")


def load_dukemtmc(root, verify_counts=True):
    """Load DukeMTMC-reID from `root` (its folder or the folder holding ``DukeMTMC-reID/``)."""
    root = find_root(root)
    split = {k: os.path.join(root, d) for k, d in SPLIT_DIRS.items()}
    records = {k: parse_split(split[k], parse=parse_filename) for k in SPLIT_DIRS}
    return ReIDDataset("DukeMTMC-reID", root, records["train"], records["query"],
                       records["gallery"], split, EXPECTED_COUNTS, verify_counts)
