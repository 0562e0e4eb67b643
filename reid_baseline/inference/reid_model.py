"""ReIDModel: a trained model used from Python (the command lines are thin users of it).

    from reid_baseline import ReIDModel
    model = ReIDModel.load("runs/demo_toy")            # config.yaml + model_final.params
    feats = model.extract(["a.jpg", rgb_array, pil_image])
    model.build_index("photos/", "photos.index")       # a feature store (inference/store.py)
    results = model.search(["query.jpg"], "photos.index", topk=10)

ReIDModel is evaluation's FeatureExtractor (features exactly as evaluation computes them, on
the devices of the config's GPUS) with distances of the config's TEST.DISTANCE, feature stores
and search added.
"""
import os

import numpy as np

from ..data.images import (
    IMAGE_EXTENSIONS,
    MAX_IMAGE_PIXELS,
    decode_image,
    find_images,
    read_image,
)
from ..errors import ConfigError, DatasetError, ModelError, RunDirError
from ..evaluation.features import FeatureExtractor
from ..evaluation.provenance import FEATURE_KEYS, check_run_config, config_changes, format_changes

# Config keys that change the features of an image: a gallery and its queries must agree
# (evaluation's FEATURE_KEYS, and SOLVER.AMP, which the stored features were computed under).
GALLERY_KEYS = FEATURE_KEYS + ("SOLVER.AMP",)


def as_image(item, where="images"):
    """A file path (str) or an HxWx3 uint8 RGB array for one input image: a path (str or
    os.PathLike), an HxWx3 uint8 array, or a PIL image (converted to RGB); else DatasetError."""
    if isinstance(item, (str, os.PathLike)):
        return os.fspath(item)
    if isinstance(item, np.ndarray):
        if item.ndim != 3 or item.shape[2] != 3 or item.dtype != np.uint8 or 0 in item.shape:
            raise DatasetError("%s: expected an HxWx3 uint8 RGB array, got shape %s %s"
                               % (where, item.shape, item.dtype))
        return np.ascontiguousarray(item)
    from PIL import Image
    if isinstance(item, Image.Image):
        return _pil_pixels(item, where)
    raise DatasetError("%s: expected a file path, an HxWx3 uint8 RGB array or a PIL image; got "
                       "%s" % (where, type(item).__name__))


def _pil_pixels(image, where):
    """A PIL image's pixels as the same image saved to a file would give: encoded as PNG in
    memory and decoded by the file reader (16-bit, grey, palette and alpha modes alike)."""
    import io
    width, height = image.size
    if not width or not height:
        raise DatasetError("%s: an empty image (%d x %d pixels)" % (where, width, height))
    if width * height > MAX_IMAGE_PIXELS:
        raise DatasetError("%s: %d x %d pixels, more than MAX_IMAGE_PIXELS (%d)"
                           % (where, width, height, MAX_IMAGE_PIXELS))
    buf = io.BytesIO()
    try:
        image.save(buf, format="PNG")
    except (OSError, ValueError):  # a mode PNG cannot hold (CMYK, float): as RGB
        buf = io.BytesIO()
        image.convert("RGB").save(buf, format="PNG")
    return decode_image(buf.getvalue(), where)


class ReIDModel(FeatureExtractor):
    """A trained network with its config: extract features, compare them, index and search.

    `cfg` is a frozen config (config.load_config) and `params_path` a parameter file saved by
    training; the network is loaded on the devices of cfg.GPUS (FeatureExtractor)."""

    def __init__(self, cfg, params_path):
        super().__init__(cfg, params_path)
        self._sha256 = None

    @classmethod
    def load(cls, run_dir=None, config=None, params=None, overrides=(), force=False):
        """The model of a run folder (its config.yaml and model_final.params), or of a given
        `config` YAML and `params` file (each overrides the run folder's); `overrides`:
        KEY VALUE config overrides, e.g. ["GPUS", "[]"].

        As evaluate.py: when the params belong to a run (its config.yaml beside them, or above
        their checkpoint folder), a config that changes a feature-defining key of the run's
        (evaluation.provenance.FEATURE_KEYS) is a ConfigError naming each `KEY: run -> given`;
        `force=True` loads it anyway with a warning (warnings.warn)."""
        from ..config import load_config
        if run_dir is not None:
            if not os.path.isdir(run_dir):
                raise RunDirError("%s: no such run folder" % run_dir)
            config = config or os.path.join(run_dir, "config.yaml")
            params = params or _final_params(run_dir)
        if not config or not params:
            raise ConfigError("ReIDModel.load needs a run folder, or both config and params")
        if not os.path.isfile(config):
            raise ConfigError("%s: no such config file" % config)
        cfg = load_config(config, list(overrides))
        match = check_run_config(cfg, params, force=force)
        if match.warning:
            import warnings
            warnings.warn(match.warning, stacklevel=2)
        return cls(cfg, params)

    @classmethod
    def for_gallery(cls, gallery, params=None, overrides=()):
        """The model a gallery (index folder or its FeatureStore) was built with: its config
        (plus `overrides`) and its params file, or `params` (which must be the same file's
        bytes)."""
        from ..config import load_config
        from .store import open_gallery
        gallery = open_gallery(gallery) if isinstance(gallery, (str, os.PathLike)) else gallery
        return cls(load_config(gallery.config_path, list(overrides)), params or gallery.params)

    @property
    def params_sha256(self):
        """SHA-256 of the parameter file (computed once)."""
        if self._sha256 is None:
            from ..fileio import file_sha256
            self._sha256 = file_sha256(self.params_path)
        return self._sha256

    def extract(self, images):
        """float32 (N, D) features of `images` (file paths, HxWx3 uint8 RGB arrays or PIL
        images; one or a list), in TEST.BATCH_SIZE batches, flip-averaged and L2-normalised as
        the config's TEST.* knobs say. An unreadable file is a DatasetError naming it."""
        from PIL import Image
        if isinstance(images, (str, os.PathLike, np.ndarray, Image.Image)) and not (
                isinstance(images, np.ndarray) and images.ndim == 4):
            images = [images]
        images = [as_image(item, "images[%d]" % i) for i, item in enumerate(images)]
        for item in images:
            if isinstance(item, str) and not os.path.isfile(item):
                raise DatasetError("%s: no such image file" % item)
        if not images:
            from ..modeling.network import feature_dim
            return np.zeros((0, feature_dim(self.cfg)), np.float32)
        return self(images)

    def extract_files(self, paths, desc="images"):
        """(features, kept paths, skipped [(path, reason)]) of image files, skipping the files
        that cannot be read instead of stopping (`desc`: the progress label, None for a bar on
        a terminal only). A chunk that meets one is checked file by file
        (read_image, the loader's own reader) and embedded again without the bad files."""
        paths = [os.fspath(p) for p in paths]
        try:
            return self(paths, desc), paths, []
        except DatasetError:
            kept, skipped = [], []
            for path in paths:
                try:
                    read_image(path)
                    kept.append(path)
                except DatasetError as exc:
                    skipped.append((path, str(exc)))
        feats = self(kept, desc) if kept else np.zeros((0, 0), np.float32)
        return feats, kept, skipped

    def distance(self, query_feats, gallery_feats):
        """(Q, G) float32 distances of the config's TEST.DISTANCE (evaluation's)."""
        from ..evaluation.distances import compute_distance
        q, g = np.asarray(query_feats), np.asarray(gallery_feats)
        if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
            raise DatasetError("distance: expected two (N, D) feature arrays of one length D, "
                               "got shapes %s and %s" % (q.shape, g.shape))
        return compute_distance(q, g, metric=self.cfg.TEST.DISTANCE)

    def check_gallery(self, gallery):
        """Raise unless `gallery` holds features of this model: the same params file bytes
        (SHA-256) and the same feature-defining config keys (GALLERY_KEYS)."""
        if gallery.params_sha256 != self.params_sha256:
            raise ModelError("params file %s is not the parameter file the gallery %s was built "
                             "with (%s; SHA-256 %.12s, this one %.12s): the features would not "
                             "be comparable; query with the gallery's own parameters (the "
                             "default) or build the index again"
                             % (self.params_path, gallery.folder, gallery.params,
                                gallery.params_sha256, self.params_sha256))
        import yaml
        try:
            theirs = yaml.safe_load(gallery.config_text) or {}
        except yaml.YAMLError:
            theirs = {}
        differ = config_changes(theirs if isinstance(theirs, dict) else {}, self.cfg,
                                GALLERY_KEYS)
        if differ:
            raise ConfigError("the query config changes the features the gallery %s was built "
                              "with: %s; drop these overrides"
                              % (gallery.folder, format_changes(differ)))

    def rank(self, query_feats, gallery, topk=10, rerank=False, approximate=False, nprobe=None,
             shortlist=None):
        """(indices, distances), each (Q, min(topk, G)), of the nearest gallery rows of each
        query feature: exact by default (the store read in blocks); `approximate`: the store's
        faiss shortlist re-ranked exactly (`nprobe`, `shortlist`: default the calibrated
        setting); `rerank`: k-reciprocal re-ranking (TEST.RERANK_* knobs; it holds the whole
        gallery in memory and its cost grows with the square of the gallery size)."""
        from ..evaluation.distances import top_k
        from ..evaluation.rerank import re_ranking_features
        from .approximate import check_cells
        from .exact import exact_top_k
        from .store import open_gallery
        if isinstance(topk, bool) or not isinstance(topk, (int, np.integer)) or topk < 1:
            raise ConfigError("topk must be an integer >= 1, got %r" % (topk,))
        check_cells(nprobe=nprobe, shortlist=shortlist)
        gallery = open_gallery(gallery) if isinstance(gallery, (str, os.PathLike)) else gallery
        self.check_gallery(gallery)
        query_feats, dim = np.asarray(query_feats), gallery.features.shape[1]
        if query_feats.ndim != 2 or query_feats.shape[1] != dim:
            raise DatasetError("query features: expected an (N, %d) array (the gallery's width), "
                               "got shape %s" % (dim, query_feats.shape))
        metric, test = self.cfg.TEST.DISTANCE, self.cfg.TEST
        if rerank:
            dist = re_ranking_features(query_feats, np.asarray(gallery.features, np.float32),
                                       k1=test.RERANK_K1, k2=test.RERANK_K2,
                                       lambda_value=test.RERANK_LAMBDA)
            idx = top_k(dist, min(topk, dist.shape[1]))
            return idx, np.take_along_axis(dist, idx, axis=1)
        if approximate:
            from .approximate import approximate_top_k
            return approximate_top_k(gallery, query_feats, topk, metric=metric, nprobe=nprobe,
                                     shortlist=shortlist)
        return exact_top_k(query_feats, gallery.features, topk, metric=metric)

    def search(self, query_images, gallery, topk=10, rerank=False, approximate=False,
               nprobe=None, shortlist=None):
        """For each query image, its `topk` nearest gallery images as [(path, distance)] in
        rank order. `gallery`: an index folder built by build_index (or its FeatureStore);
        `approximate`/`nprobe`/`shortlist` as in rank()."""
        from .approximate import check_cells
        from .store import open_gallery
        check_cells(nprobe=nprobe, shortlist=shortlist)  # before the queries are embedded
        gallery = open_gallery(gallery) if isinstance(gallery, (str, os.PathLike)) else gallery
        idx, dist = self.rank(self.extract(query_images), gallery, topk, rerank, approximate,
                              nprobe, shortlist)
        return ranked_paths(gallery, idx, dist)

    def build_index(self, folder, out, dtype="float32", overwrite=False, approximate=False,
                    nlist=None, nprobe=None, shortlist=None, target_recall=None):
        """Embed every image under `folder` into the feature store `out` (a folder), streaming
        and resumable (reid_baseline.inference.store.build_store); unreadable files are skipped and
        listed. `approximate`: also build the approximate index and calibrate its search
        depth (nprobe, shortlist) to `target_recall` (default 0.995) of exact search's top 10
        (reid_baseline.inference.approximate); a given `nprobe` / `shortlist` is kept. Returns the store's manifest (count, dim, skipped, approximate...)."""
        from .approximate import check_cells
        from .store import FeatureStore, build_store, check_store_output
        check_cells(nlist, nprobe, shortlist, target_recall)  # before hours of embedding
        if not os.path.isdir(folder):
            raise DatasetError("images folder %s does not exist" % folder)
        check_store_output(out, overwrite)  # before hours of embedding, not after
        paths = [os.path.abspath(p) for p in find_images(folder)]
        if not paths:
            raise DatasetError("images folder %s: no image files (%s) under it"
                               % (folder, "/".join(IMAGE_EXTENSIONS)))
        if approximate:
            from .approximate import import_faiss
            import_faiss()
        # In a log, the store's "index" lines cover the extraction of each chunk.
        manifest = build_store(out, paths, lambda chunk: self.extract_files(chunk, desc=None),
                               self.cfg.dump(), self.params_path, self.params_sha256,
                               dtype=dtype, overwrite=overwrite, source=os.path.abspath(folder))
        if approximate:
            from .approximate import build_approximate
            manifest["approximate"] = build_approximate(
                FeatureStore(out), metric=self.cfg.TEST.DISTANCE, nlist=nlist, nprobe=nprobe,
                shortlist=shortlist, **({} if target_recall is None
                                        else {"target_recall": target_recall}))
        return manifest


def ranked_paths(gallery, idx, dist):
    """[(path, distance)] per query row of (indices, distances); -1 indices are dropped."""
    paths = gallery.paths(np.maximum(idx, 0))
    return [[(p, float(d)) for p, d, i in zip(prow, drow, irow, strict=True) if i >= 0]
            for prow, drow, irow in zip(paths, dist, idx, strict=True)]


def _final_params(run_dir):
    """run_dir/model_final.params, or a RunDirError naming the newest checkpoint to use."""
    final = os.path.join(run_dir, "model_final.params")
    if os.path.isfile(final):
        return final
    from ..engine.checkpoint import PARAMS_FILE, last_checkpoint
    newest = last_checkpoint(run_dir)
    if newest is None:
        raise RunDirError("%s has no model_final.params and no checkpoint: training has not "
                          "saved a model yet" % run_dir)
    raise RunDirError("%s has no model_final.params (training has not finished); its newest "
                      "checkpoint is %s: ReIDModel.load(%r, params=%r)"
                      % (run_dir, newest, run_dir, os.path.join(newest, PARAMS_FILE)))
