"""The data set registry: ``load_dataset(name, root)`` gives the same records object for every
layout, and ``build_datasets(cfg)`` the training + query/gallery sets a run uses.

Every loaded set has ``train`` (records (path, pid, camid), ids relabelled 0..N-1),
``train_pids``, ``num_train_pids``, ``query``, ``gallery``, ``root`` and ``summary()``.
"""
from .base import DatasetError, ReIDDataset  # noqa: F401
from .cuhk03np import load_cuhk03np
from .dukemtmc import load_dukemtmc
from .folder import load_folder
from .market1501 import load_market1501
from .msmt17 import load_msmt17

# name -> loader(root, verify_counts, **options); reid_baseline.data.toy writes a generated set
# in each layout
_LAYOUTS = {
    "market1501": load_market1501,
    "dukemtmc": load_dukemtmc,
    "msmt17": load_msmt17,
    "cuhk03np": load_cuhk03np,
    "folder": load_folder,
}
NAMES = tuple(_LAYOUTS)


def _layout(name):
    if name not in _LAYOUTS:
        raise DatasetError("unknown data set %r; expected one of %s" % (name, ", ".join(NAMES)))
    return _LAYOUTS[name]


def load_dataset(name, root, verify_counts=True, **options):
    """Load the data set `name` (market1501, dukemtmc, msmt17, cuhk03np, folder) from `root`:
    the set's own folder or the folder holding it under its official name (folder: a folder
    with train/ query/ gallery/, or a CSV list file). With `verify_counts` the official counts
    are checked. `options`: cuhk03np takes ``subset`` ("detected" or "labeled"), folder
    ``allow_outside_root`` (a CSV list may name images outside its folder)."""
    return _layout(name)(root, verify_counts=verify_counts, **options)


def _options(cfg, name):
    if name == "folder":
        return {"allow_outside_root": cfg.DATASETS.ALLOW_OUTSIDE_ROOT}
    return {"subset": cfg.DATASETS.CUHK03_SUBSET} if name == "cuhk03np" else {}


def query_gallery_source(cfg):
    """(name, root) of the query/gallery set: DATASETS.TEST_NAME / TEST_ROOT, "" meaning the
    training set's NAME / ROOT."""
    return (cfg.DATASETS.TEST_NAME or cfg.DATASETS.NAME,
            cfg.DATASETS.TEST_ROOT or cfg.DATASETS.ROOT)


def load_test_set(cfg):
    """The data set whose query/gallery a model is evaluated on (see query_gallery_source)."""
    name, root = query_gallery_source(cfg)
    return load_dataset(name, root, cfg.DATASETS.VERIFY_COUNTS, **_options(cfg, name))


def build_datasets(cfg):
    """The training set (DATASETS.NAME at ROOT) and the query/gallery set (TEST_NAME at
    TEST_ROOT) of a run as one object; loaded once when they are the same set."""
    train_set = load_dataset(cfg.DATASETS.NAME, cfg.DATASETS.ROOT, cfg.DATASETS.VERIFY_COUNTS,
                             **_options(cfg, cfg.DATASETS.NAME))
    if query_gallery_source(cfg) == (cfg.DATASETS.NAME, cfg.DATASETS.ROOT):
        return train_set
    return CrossDataset(train_set, load_test_set(cfg))


class CrossDataset(object):
    """The training split of one data set with the query/gallery of another (cross-dataset
    evaluation); the same attributes as a single set, ``root`` being the training set's."""

    def __init__(self, train_set, test_set):
        self.train_set, self.test_set = train_set, test_set
        self.train, self.train_pids = train_set.train, train_set.train_pids
        self.num_train_pids, self.root = train_set.num_train_pids, train_set.root
        self.query, self.gallery = test_set.query, test_set.gallery
        self.distractor_pid, self.camera_offset = test_set.distractor_pid, test_set.camera_offset

    def summary(self):
        """Both sets' tables: train on the first, query/gallery of the second."""
        return "training split of:\n%s\nquery/gallery of:\n%s" % (self.train_set.summary(),
                                                                   self.test_set.summary())

    def __repr__(self):
        return self.summary()
