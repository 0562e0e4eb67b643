"""The toy set as your own data, in folders and as a CSV list
(reid_baseline.data.datasets.folder)."""
import csv
import os

from ...fileio import atomic_path
from ..datasets.base import SPLITS
from ..datasets.folder import CSV_HEADER, parse_filename
from .market1501 import prepare_output, write_toy_images


def make_toy_folder(out_dir, seed=0, overwrite=False, **sizes):
    """Write a generated set as your own data: ``out_dir/{train,query,gallery}/`` with
    ``<pid>_c<cam>_<frame>.jpg`` names (gallery-only ids from 100000 for the distractor
    images) and the same images listed in ``out_dir/list.csv``. Returns the written images."""
    root = os.path.abspath(str(out_dir))
    prepare_output(root, overwrite)
    distractors = []

    def name(rng, split, pid, cam, frame):
        if pid == 0:
            pid = 100000 + len(distractors)
            distractors.append(pid)
        return "%d_c%d_%06d.jpg" % (pid, cam + 1, frame)

    written = write_toy_images({s: os.path.join(root, s) for s in SPLITS}, name, seed=seed,
                               num_junk=0, **sizes)
    with atomic_path(os.path.join(root, "list.csv")) as tmp, open(tmp, "w", newline="") as f:
        rows = csv.writer(f)
        rows.writerow(CSV_HEADER)
        for split, rel, _, _ in written:
            pid, cam = parse_filename(rel)
            rows.writerow([split + "/" + rel, pid, cam, split])
    return written
