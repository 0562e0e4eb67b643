"""The toy set in the DukeMTMC-reID layout (reid_baseline.data.datasets.dukemtmc)."""
import os

from ..datasets.dukemtmc import NUM_CAMERAS, ROOT_NAME
from ..datasets.market1501 import SPLIT_DIRS
from .market1501 import prepare_output, write_toy_images


def make_toy_dukemtmc(out_dir, seed=0, overwrite=False, num_distractor_ids=4, **sizes):
    """Write a generated set in the DukeMTMC-reID layout under ``out_dir/DukeMTMC-reID``:
    8 cameras, no junk; the gallery's distractor images get ids (from 9000) seen in no query,
    as Duke's are. `sizes`: :func:`write_toy_images` sizes. Returns the written images."""
    root = os.path.join(os.path.abspath(str(out_dir)), ROOT_NAME)
    prepare_output(root, overwrite)

    def name(rng, split, pid, cam, frame):
        pid = pid or 9000 + rng.randint(num_distractor_ids)  # a distractor identity
        return "%04d_c%d_f%07d.jpg" % (pid, cam + 1, frame)

    sizes.setdefault("num_cameras", NUM_CAMERAS)
    sizes.setdefault("num_distractors", 12)
    return write_toy_images({k: os.path.join(root, d) for k, d in SPLIT_DIRS.items()}, name,
                            seed=seed, num_junk=0, **sizes)
