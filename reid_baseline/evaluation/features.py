"""Image features as evaluation computes them: batched, original and mirrored image averaged,
then L2-normalised; FeatureExtractor is the one path from a trained parameter file to them."""
import os

import mxnet as mx
import numpy as np
from mxnet import gluon

from ..data.datasets.base import Record
from ..data.loader import build_test_loader
from ..progress import progress_bar


def extract_features(embedding, loader, ctx, flip=True, normalize=True, desc="features",
                     num_images=None):
    """Features of every image of `loader` (in order) as a float32 (N, D) numpy array.

    `embedding` maps an image batch to features (ReIDNet.embedding); `ctx` is a list of
    contexts over which each batch is split. Only one host copy per batch is made. Progress
    labelled `desc` (reid_baseline.progress: a bar on a terminal, lines in a log; `desc` None:
    the bar only, for a part of a larger step that logs its own lines), counted in images out
    of `num_images` when given, else in batches."""
    chunks = []
    options = dict(desc=desc or "features", log_lines=desc is not None)
    if num_images is None:
        bar = progress_bar(total=len(loader) if hasattr(loader, "__len__") else None,
                           unit="batch", **options)
    else:
        bar = progress_bar(total=num_images, unit="img", **options)
    def count(chunk):
        chunk.wait_to_read()  # MXNet runs asynchronously: count a batch once it is computed
        bar.update(1 if num_images is None else chunk.shape[0])

    with bar:
        for batch in loader:
            chunks.append(_batch_features(embedding, batch, ctx, flip, normalize))
            if len(chunks) > 1:  # the previous batch: one batch stays queued behind it
                count(chunks[-2])
        if chunks:
            count(chunks[-1])
    if not chunks:
        raise ValueError("no images to extract features from")
    return mx.nd.concat(*chunks, dim=0).asnumpy().astype(np.float32, copy=False)


def _batch_features(embedding, batch, ctx, flip, normalize):
    """One batch's features (float32, on the CPU) as extract_features computes them."""
    data = batch[0] if isinstance(batch, (list, tuple)) else batch
    outputs = []
    # A last batch smaller than the device count goes to as many devices as it has images.
    for x in gluon.utils.split_and_load(data, ctx[:data.shape[0]], even_split=False):
        feat = embedding(x)
        if flip:  # NCHW: axis 3 is the width
            feat = (feat + embedding(x.flip(axis=3))) * 0.5
        if normalize:
            feat = mx.nd.L2Normalization(feat, mode="instance")
        # float32: under SOLVER.AMP the network's output may be bfloat16/float16
        outputs.append(feat.astype("float32", copy=False).as_in_context(mx.cpu()))
    return mx.nd.concat(*outputs, dim=0)


class _InMemoryImages(object):
    """The test loader's source of already decoded images: item i's array, or None for a file
    path (the loader then reads the file as for evaluation)."""

    def __init__(self, images):
        self._images = images

    def get(self, index):
        item = self._images[index]
        return None if isinstance(item, str) else item

    def put(self, index, image):
        pass


def image_features(cfg, embedding, images, ctx, desc="features"):
    """Features of `images` as evaluation computes them: the test loader (TEST.BATCH_SIZE,
    resize to INPUT.HEIGHT x WIDTH, normalisation), then extract_features with the config's
    TEST.FLIP_FEATURES and TEST.NORMALIZE_FEATURES. `images`: file paths and/or HxWx3 uint8
    RGB arrays (mixed lists are fine); returns float32 (N, D) in order."""
    images = list(images)
    records = [Record(item if isinstance(item, str) else "<array %d>" % i, 0, 0)
               for i, item in enumerate(images)]
    in_memory = None if all(isinstance(item, str) for item in images) else _InMemoryImages(images)
    loader = build_test_loader(cfg, records, decoded=in_memory)
    return extract_features(embedding, loader, ctx, flip=cfg.TEST.FLIP_FEATURES,
                            normalize=cfg.TEST.NORMALIZE_FEATURES, desc=desc,
                            num_images=len(images))


class FeatureExtractor(object):
    """The features of a trained parameter file: `extractor(images)` gives float32 (N, D)
    features exactly as evaluation computes them (image_features with the config's TEST.*).

    `cfg` is a frozen config and `params_path` a parameter file saved by training, loaded by
    modeling.network.load_trained_model onto `ctx` (default: the devices of cfg.GPUS).
    Attributes: cfg, params_path (absolute), ctx (a list of contexts), embedding."""

    def __init__(self, cfg, params_path, ctx=None):
        from ..engine.devices import build_contexts
        from ..modeling.network import load_trained_model
        self.cfg, self.params_path = cfg, os.path.abspath(params_path)
        self.ctx = build_contexts(cfg.GPUS) if ctx is None else list(ctx)
        self.embedding = load_trained_model(cfg, params_path, self.ctx).embedding

    def __call__(self, images, desc="features"):
        """float32 (N, D) features of `images` (file paths and/or HxWx3 uint8 RGB arrays)."""
        return image_features(self.cfg, self.embedding, images, self.ctx, desc)
