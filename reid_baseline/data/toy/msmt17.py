"""The toy set in the MSMT17 layout (reid_baseline.data.datasets.msmt17)."""
import os

from ..datasets.msmt17 import LIST_FILES, NUM_CAMERAS, VERSION_DIRS
from .market1501 import prepare_output, write_toy_images


def make_toy_msmt17(out_dir, version="MSMT17_V1", seed=0, overwrite=False, val_every=8,
                    **sizes):
    """Write a generated set in the MSMT17 layout under ``out_dir/<version>``: images in
    per-identity sub-folders, the four list files (every `val_every`-th training image in
    list_val.txt), ids numbered from 0 in train and in test, 15 cameras, no junk and no
    distractors. `sizes`: :func:`write_toy_images` sizes. Returns the written images."""
    root = os.path.join(os.path.abspath(str(out_dir)), version)
    prepare_output(root, overwrite)
    train_dir, test_dir = (os.path.join(root, d) for d in VERSION_DIRS[version])
    new_ids = {"train": {}, "test": {}}  # original toy id -> MSMT17 id, in order of appearance
    seen = {}

    def name(rng, split, pid, cam, frame):
        ids = new_ids["train" if split == "train" else "test"]
        new = ids.setdefault(pid, len(ids))
        key = (split == "train", pid)
        seen[key] = index = seen.get(key, -1) + 1
        return "%04d/%04d_%03d_%02d_0303%s_%04d_%d.jpg" % (
            new, new, index, cam + 1, ("morning", "noon", "afternoon")[frame % 3], frame,
            rng.randint(3))

    sizes.setdefault("num_cameras", NUM_CAMERAS)
    written = write_toy_images({"train": train_dir, "query": test_dir, "gallery": test_dir},
                               name, seed=seed, num_distractors=0, num_junk=0, **sizes)
    lines = {f: [] for files in LIST_FILES.values() for f in files}
    for i, (_, rel, _, _) in enumerate(w for w in written if w[0] == "train"):
        lines["list_val.txt" if i % val_every == val_every - 1 else "list_train.txt"].append(rel)
    for split in ("query", "gallery"):
        lines[LIST_FILES[split][0]] = [w[1] for w in written if w[0] == split]
    for list_name, rels in lines.items():
        with open(os.path.join(root, list_name), "w") as f:
            f.writelines("%s %d\n" % (rel, int(rel.split("/")[0])) for rel in rels)
    return written
