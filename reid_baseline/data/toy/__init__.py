"""Generated data sets in the real layouts, for demos and tests: one writer per layout of
reid_baseline.data.datasets, each drawing the toy Market-1501 set's images (market1501.py)."""
from ...errors import DatasetError
from .cuhk03np import make_toy_cuhk03np
from .dukemtmc import make_toy_dukemtmc
from .folder import make_toy_folder
from .market1501 import make_toy_market1501
from .msmt17 import make_toy_msmt17

# name (as load_dataset knows it) -> writer(out_dir, seed, overwrite, **options)
_WRITERS = {
    "market1501": make_toy_market1501,
    "dukemtmc": make_toy_dukemtmc,
    "msmt17": make_toy_msmt17,
    "cuhk03np": make_toy_cuhk03np,
    "folder": make_toy_folder,
}
NAMES = tuple(_WRITERS)


def make_toy_dataset(name, out_dir, seed=0, overwrite=False, **options):
    """Write the generated toy set in the layout of `name` under `out_dir` (the folder
    load_dataset(name, out_dir) reads); returns the written images as (split, name, pid,
    cam) tuples (market1501: its counts dict). `options`: sizes of write_toy_images, and
    cuhk03np's ``subset``, msmt17's ``version`` ("MSMT17_V1" or "MSMT17_V2")."""
    if name not in _WRITERS:
        raise DatasetError("unknown data set %r; expected one of %s" % (name, ", ".join(NAMES)))
    return _WRITERS[name](out_dir, seed=seed, overwrite=overwrite, **options)
