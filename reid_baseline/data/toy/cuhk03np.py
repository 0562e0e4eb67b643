"""The toy set in the CUHK03-NP layout (reid_baseline.data.datasets.cuhk03np)."""
import os

from ..datasets.cuhk03np import NUM_CAMERAS, ROOT_NAME
from ..datasets.market1501 import SPLIT_DIRS
from .market1501 import prepare_output, write_toy_images


def make_toy_cuhk03np(out_dir, subset="detected", seed=0, overwrite=False, **sizes):
    """Write a generated set in the CUHK03-NP layout under ``out_dir/cuhk03-np/<subset>``: PNG
    files, 2 cameras (every identity in both, so one query per camera), no junk and no
    distractors. `sizes`: :func:`write_toy_images` sizes. Returns the written images."""
    root = os.path.join(os.path.abspath(str(out_dir)), ROOT_NAME, subset)
    prepare_output(root, overwrite)
    index = {}

    def name(rng, split, pid, cam, frame):
        index[pid] = index.get(pid, 0) + 1
        return "%04d_c%d_%d.png" % (pid, cam + 1, index[pid])

    return write_toy_images({k: os.path.join(root, d) for k, d in SPLIT_DIRS.items()}, name,
                            seed=seed, num_cameras=NUM_CAMERAS, cameras_per_id=(2, 2),
                            num_distractors=0, num_junk=0, **sizes)
