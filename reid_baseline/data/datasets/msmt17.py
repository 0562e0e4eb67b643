"""MSMT17 (Wei et al., CVPR 2018), V1 and V2 -> (path, pid, camid) records.

Layout: ``MSMT17_V1/{train,test}/`` or ``MSMT17_V2/{mask_train_v2,mask_test_v2}/`` (V2 has the
faces masked) beside four list files, one image per line as ``<path> <pid>`` with the path
relative to the train folder (``list_train.txt``, ``list_val.txt``) or the test folder
(``list_query.txt``, ``list_gallery.txt``). The camera is the third field of the file name:
``0000/0000_000_01_0303morning_0015_0.jpg`` is camera 01 of 15. Training uses train + val
(1,041 identities, numbered from 0); test identities are numbered from 0 again, so train and
test ids are separate numberings. There is no junk and no distractor id.
"""
import os

from .base import DatasetError, Record, ReIDDataset
from .base import find_root as _find_root

ROOT_NAMES = ("MSMT17_V1", "MSMT17_V2")
# (train folder, test folder) of each release
VERSION_DIRS = {"MSMT17_V1": ("train", "test"), "MSMT17_V2": ("mask_train_v2", "mask_test_v2")}
LIST_FILES = {"train": ("list_train.txt", "list_val.txt"), "query": ("list_query.txt",),
              "gallery": ("list_gallery.txt",)}
NUM_CAMERAS = 15
EXPECTED_COUNTS = {
    "train": {"images": 32621, "ids": 1041},
    "query": {"images": 11659, "ids": 3060},
    "gallery": {"images": 82161, "ids": 3060},
}
LINE_FORMAT = "<path> <pid>, e.g. 0000/0000_000_01_0303morning_0015_0.jpg 0"


def _image_dirs(folder):
    """(train folder, test folder) names of the release found in `folder`, or None."""
    for dirs in VERSION_DIRS.values():
        if all(os.path.isdir(os.path.join(folder, d)) for d in dirs):
            return dirs
    return None


def _is_root(folder):
    return _image_dirs(folder) is not None and all(
        os.path.isfile(os.path.join(folder, f)) for files in LIST_FILES.values() for f in files)


def find_root(root):
    """The MSMT17 folder: `root` itself or `root/MSMT17_V1/` or `root/MSMT17_V2/`."""
    return _find_root(root, ROOT_NAMES, _is_root, "train/ and test/ (V1) or mask_train_v2/ and "
                      "mask_test_v2/ (V2) beside %s" % ", ".join(
                          f for files in LIST_FILES.values() for f in files), "MSMT17")


def parse_camera(path, num_cameras=NUM_CAMERAS):
    """0-based camera of an MSMT17 file name (its third ``_`` field, 01..15)."""
    fields = os.path.basename(path).split("_")
    if len(fields) < 3 or not fields[2].isdigit() or not 1 <= int(fields[2]) <= num_cameras:
        raise DatasetError("%s: no camera 01..%02d in the third field of the file name (MSMT17 "
                           "names look like 0000_000_01_0303morning_0015_0.jpg)"
                           % (path, num_cameras))
    return int(fields[2]) - 1


def parse_list(list_path, image_dir):
    """Records of one MSMT17 list file; a malformed line is a DatasetError naming the file
    and the line."""
    records = []
    with open(list_path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            fields = line.split()
            if len(fields) != 2 or not fields[1].isdigit():
                raise DatasetError("%s, line %d: expected %s, got %r"
                                   % (list_path, number, LINE_FORMAT, line.strip()))
            path = os.path.join(image_dir, fields[0])
            try:
                camid = parse_camera(fields[0])
            except DatasetError as exc:
                raise DatasetError("%s, line %d: %s" % (list_path, number, exc)) from exc
            records.append(Record(path, int(fields[1]), camid))
    return records


def load_msmt17(root, verify_counts=True):
    """Load MSMT17 (V1 or V2) from `root` (its folder or the folder holding ``MSMT17_V*/``)."""
    root = find_root(root)
    train_dir, test_dir = (os.path.join(root, d) for d in _image_dirs(root))
    image_dir = {"train": train_dir, "query": test_dir, "gallery": test_dir}
    records = {split: [r for name in files
                       for r in parse_list(os.path.join(root, name), image_dir[split])]
               for split, files in LIST_FILES.items()}
    where = {split: " + ".join(os.path.join(root, f) for f in files)
             for split, files in LIST_FILES.items()}
    return ReIDDataset(os.path.basename(root) if os.path.basename(root) in ROOT_NAMES
                       else "MSMT17", root, records["train"], records["query"],
                       records["gallery"], where, EXPECTED_COUNTS, verify_counts,
                       min_train_pid=0, disjoint_ids=False)
