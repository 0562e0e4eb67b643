"""An optional approximate nearest-neighbour index (faiss IVF) over a feature store.

For galleries of millions, exact search reads every stored feature per query batch. An IVF
index clusters the gallery into `nlist` cells (k-means on a sample) and a query scans only its
`nprobe` nearest cells. The vectors are kept at the store's precision (IVF-Flat for float32,
IVF-SQfp16 for float16). L2-normalised features are searched by inner product (the same order
as the cosine and Euclidean distances); other features by Euclidean distance. When it is built,
its recall@10 against exact search is measured on a sample of stored rows and recorded in the
store's manifest. faiss is the `[faiss]` extra, imported only here.
"""
import math
import os

import numpy as np

from ..errors import ConfigError, DatasetError, OutputError, error_line, install_hint
from ..fileio import atomic_path
from .exact import exact_top_k

APPROXIMATE = "approximate.faiss"
ADD_BLOCK = 1 << 16  # rows converted to float32 at a time while adding
RECALL_QUERIES = 500  # stored rows used as queries to measure recall@10
TRAIN_PER_CELL = 40  # k-means training rows per cell (faiss asks for at least 39)


def import_faiss():
    """The faiss module, or a one-line ConfigError naming the extra that installs it."""
    try:
        import faiss
    except ImportError as exc:
        raise ConfigError("the approximate index needs faiss: %s (faiss-cpu)"
                          % install_hint("faiss")) from exc
    return faiss


def check_cells(nlist=None, nprobe=None):
    """ConfigError unless `nlist` and `nprobe` are each None (the default) or an integer >= 1:
    checked before any work."""
    for name, value in (("nlist", nlist), ("nprobe", nprobe)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  and not isinstance(value, np.integer) or value < 1):
            raise ConfigError("%s must be an integer >= 1 (or None for the default), got %r"
                              % (name, value))


def _uses_inner_product(store):
    feats = np.asarray(store.features[:min(len(store), 256)], np.float32)
    return bool(np.allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-2))


def _prepared(rows, inner_product, metric):
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    if inner_product and metric == "cosine":
        rows = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    return rows


def build_approximate(store, metric="cosine", nlist=None, nprobe=None, seed=0,
                      recall_queries=RECALL_QUERIES):
    """Build the IVF index of a FeatureStore into its folder; returns what it recorded in the
    manifest (kind, nlist, nprobe, inner_product, recall_at_10 and the sample size). The cells
    are trained on TRAIN_PER_CELL stored rows per cell (a seeded sample)."""
    faiss = import_faiss()
    n, dim = store.features.shape
    check_cells(nlist, nprobe)
    if nlist is not None and int(nlist) > n:
        # faiss trains each cell from the stored rows: more cells than rows cannot be trained.
        raise ConfigError("nlist %d: the index holds %d images, and an IVF index needs at "
                          "least as many images as cells (try nlist %d)"
                          % (int(nlist), n, max(1, n // 39)))
    nlist = int(nlist or max(1, min(int(4 * math.sqrt(n)), n // 39)))
    nprobe = int(nprobe or max(1, min(nlist, 16)))
    inner = _uses_inner_product(store) or metric == "cosine"
    faiss_metric = faiss.METRIC_INNER_PRODUCT if inner else faiss.METRIC_L2
    codec = "Flat" if store.features.dtype == np.float32 else "SQfp16"
    index = faiss.index_factory(dim, "IVF%d,%s" % (nlist, codec), faiss_metric)
    rng = np.random.RandomState(seed)
    train = np.sort(rng.choice(n, min(n, TRAIN_PER_CELL * nlist), replace=False))
    index.train(_prepared(store.features[train], inner, metric))
    for a in range(0, n, ADD_BLOCK):
        index.add(_prepared(store.features[a:a + ADD_BLOCK], inner, metric))
    index.nprobe = nprobe
    path = os.path.join(store.folder, APPROXIMATE)
    try:  # written beside, then renamed: a full disk leaves no truncated index
        with atomic_path(path) as tmp:
            faiss.write_index(index, tmp)
    except (OSError, RuntimeError) as exc:
        raise OutputError("%s: cannot write the approximate index (%s)"
                          % (path, error_line(exc))) from exc
    sample = np.sort(rng.choice(n, min(n, int(recall_queries)), replace=False))
    queries = np.asarray(store.features[sample], np.float32)
    exact, _ = exact_top_k(queries, store.features, 11, metric=metric)
    approx, _ = _search(index, queries, 11, inner, metric)
    info = {"kind": "ivf", "codec": codec, "nlist": nlist, "nprobe": nprobe,
            "inner_product": inner, "recall_at_10": recall_at_10(exact, approx, sample),
            "recall_queries": len(sample)}
    store.update_manifest("approximate", info)
    return info


def recall_at_10(exact, approx, own_rows=None):
    """Mean share of each row's 10 exact neighbours that the approximate search found (a
    query's own row, when the queries are stored rows, counts for neither)."""
    hits = []
    for r, (e, a) in enumerate(zip(exact, approx, strict=True)):
        own = -1 if own_rows is None else own_rows[r]
        e = [i for i in e if i != own][:10]
        a = [i for i in a if i != own][:10]
        hits.append(len(set(e) & set(a)) / max(1, len(e)))
    return float(np.mean(hits)) if hits else float("nan")


def _search(index, queries, topk, inner, metric):
    scores, idx = index.search(_prepared(queries, inner, metric), int(topk))
    if inner:  # inner products of unit vectors -> the config's distance
        dist = 1.0 - scores if metric == "cosine" else np.sqrt(np.maximum(2.0 - 2.0 * scores, 0))
    else:  # faiss gives squared Euclidean distances
        dist = np.sqrt(np.maximum(scores, 0))
    return idx.astype(np.int64), dist.astype(np.float32)


def approximate_top_k(store, query_feats, topk, metric="cosine", nprobe=None):
    """(indices, distances) of the approximate index of `store` (built by build_approximate);
    -1 marks a missing neighbour when the probed cells hold fewer than topk rows."""
    check_cells(nprobe=nprobe)
    faiss = import_faiss()
    info = store.manifest.get("approximate")
    path = os.path.join(store.folder, APPROXIMATE)
    if not info or not os.path.isfile(path):
        raise ConfigError("gallery %s has no approximate index; build it with "
                          "search.py index --approximate" % store.folder)
    if store.approximate_index is None:  # read once per opened store, not per query batch
        try:
            store.approximate_index = faiss.read_index(path)
        except (OSError, RuntimeError) as exc:
            raise DatasetError("gallery %s is a damaged index (its %s cannot be read: %s); "
                               "build it again" % (store.folder, APPROXIMATE, error_line(exc))
                               ) from exc
    index = store.approximate_index
    index.nprobe = int(info["nprobe"] if nprobe is None else nprobe)
    return _search(index, query_feats, min(int(topk), len(store)), info["inner_product"], metric)
