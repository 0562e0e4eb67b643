"""Batched feature extraction: original and flipped image averaged, then L2-normalised."""
import mxnet as mx
import numpy as np
from mxnet import gluon
from tqdm import tqdm


def extract_features(embedding, loader, ctx, flip=True, normalize=True, desc="features"):
    """Features of every image of `loader` (in order) as a float32 (N, D) numpy array.

    `embedding` maps an image batch to features (ReIDNet.embedding); `ctx` is a list of
    contexts over which each batch is split. Only one host copy per batch is made. A progress
    bar labelled `desc` shows on a terminal (and nowhere else)."""
    chunks = []
    for batch in tqdm(loader, desc=desc, unit="batch", leave=False, dynamic_ncols=True,
                      disable=None):
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
        chunks.append(mx.nd.concat(*outputs, dim=0))
    if not chunks:
        raise ValueError("no images to extract features from")
    return mx.nd.concat(*chunks, dim=0).asnumpy().astype(np.float32, copy=False)
