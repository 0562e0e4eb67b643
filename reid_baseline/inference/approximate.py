"""The optional approximate search of a feature store: a compact faiss index finds a shortlist,
and the store's own rows re-rank it exactly.

Design (one index file, approximate.faiss, beside the store's memory map):
  coarse search  the features are projected to REDUCED_DIM dimensions (the leading eigenvectors
                 of a sample's second-moment matrix for L2-normalised features searched by
                 inner product, of its covariance otherwise) and kept as 8-bit codes (SQ8) in
                 an IVF index of `nlist` k-means cells: REDUCED_DIM bytes per image in memory.
                 A query scans the codes of its `nprobe` nearest cells and keeps the best
                 `shortlist` rows. Which cells are scanned, not the precision of the codes,
                 decides what is found (the re-ranking repairs the order): 128 dimensions
                 found as many neighbours as 256 in 40-60% of the scanning time.
  re-ranking     those rows are read from the store's memory map (float16 or float32), once
                 per block of queries and in file order, and ranked by the config's exact
                 distance (exact search's formula and tie order: lower row first): the
                 returned order and distances are the exact ones of the rows found.
  calibration    at build time, CALIBRATION_QUERIES stored rows are held out of the cell and
                 projection training and used as queries (their own row not counted); nprobe
                 and the shortlist are raised until their recall@10 against exact search
                 reaches `target_recall` (0.995 by default: at 0.95 the misses include true
                 matches of the query's identity, and mAP fell 3-5 points below exact search;
                 at 0.995 it was 0.3-0.6 below, docs/BENCHMARKS.md). The setting, the measured recall and whether
                 the target was met go into the store's manifest; queries use that setting
                 unless given `nprobe` / `shortlist`.
Building reads the store in blocks of BLOCK_ROWS rows (never the whole gallery as float32);
the index is written beside its final name and renamed. Stored rows as queries are not new
queries: recall on new images is measured by scripts/benchmark_index.py (docs/INFERENCE.md).
faiss is the `[faiss]` extra, imported only here.
"""
import math
import os

import numpy as np

from ..errors import ConfigError, DatasetError, OutputError, error_line, install_hint
from ..evaluation.distances import top_k
from ..fileio import atomic_path
from .exact import SEARCH_BLOCK_BYTES, exact_top_k

APPROXIMATE = "approximate.faiss"
KIND = "ivf-sq8-rerank"
BLOCK_ROWS = 16384  # rows read from the memory map (as float32) at a time while building
REDUCED_DIM = 128  # dimensions of the coarse codes
TRAIN_PER_CELL = 40  # k-means training rows per cell (faiss asks for at least 39)
CALIBRATION_QUERIES = 500  # held-out stored rows used as queries to calibrate
SHORTLISTS = (25, 50, 100, 200, 400)  # shortlist sizes tried by the calibration
TARGET_RECALL = 0.995
RERANK_BYTES = SEARCH_BLOCK_BYTES  # float32 candidate rows gathered at a time to re-rank


def import_faiss():
    """The faiss module, or a one-line ConfigError naming the extra that installs it."""
    try:
        import faiss
    except ImportError as exc:
        raise ConfigError("the approximate index needs faiss: %s (faiss-cpu)"
                          % install_hint("faiss")) from exc
    return faiss


def check_cells(nlist=None, nprobe=None, shortlist=None, target_recall=None):
    """ConfigError unless `nlist`, `nprobe` and `shortlist` are each None (the default) or an
    integer >= 1, and `target_recall` None or a number in (0, 1]: checked before any work."""
    for name, value in (("nlist", nlist), ("nprobe", nprobe), ("shortlist", shortlist)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  and not isinstance(value, np.integer) or value < 1):
            raise ConfigError("%s must be an integer >= 1 (or None for the default), got %r"
                              % (name, value))
    if target_recall is not None and (isinstance(target_recall, bool) or not isinstance(
            target_recall, (int, float, np.number)) or not 0 < target_recall <= 1):
        raise ConfigError("target recall must be a number in (0, 1], got %r" % (target_recall,))


def _uses_inner_product(store):
    feats = np.asarray(store.features[:min(len(store), 256)], np.float32)
    return bool(np.allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-2))


def _prepared(rows, inner_product, metric):
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    if inner_product and metric == "cosine":
        rows = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    return rows


def _blocks(features, rows, inner, metric):
    """float32 blocks of the stored `rows` (sorted), prepared for the index."""
    for a in range(0, len(rows), BLOCK_ROWS):
        yield _prepared(features[rows[a:a + BLOCK_ROWS]], inner, metric)


def _projection(faiss, store, rows, inner, metric, out_dim):
    """A faiss LinearTransform to `out_dim` dimensions: the leading eigenvectors of the
    second-moment matrix of `rows` (inner product), or of their covariance (L2, centred)."""
    dim = store.features.shape[1]
    moment, total = np.zeros((dim, dim)), np.zeros(dim)
    for block in _blocks(store.features, rows, inner, metric):
        moment += block.T.astype(np.float64) @ block
        total += block.sum(axis=0)
    mean = np.zeros(dim) if inner else total / max(1, len(rows))
    _, vectors = np.linalg.eigh(moment / max(1, len(rows)) - np.outer(mean, mean))
    matrix = np.ascontiguousarray(vectors[:, ::-1][:, :out_dim].T, dtype=np.float32)
    transform = faiss.LinearTransform(dim, out_dim, True)
    faiss.copy_array_to_vector(matrix.ravel(), transform.A)
    faiss.copy_array_to_vector((-matrix @ mean).astype(np.float32), transform.b)
    transform.is_trained = True
    return transform


def build_approximate(store, metric="cosine", nlist=None, nprobe=None, seed=0,
                      recall_queries=CALIBRATION_QUERIES, shortlist=None,
                      target_recall=TARGET_RECALL):
    """Build the approximate index of a FeatureStore into its folder and calibrate it (module
    docstring); returns what it recorded in the manifest: kind, codec, nlist, nprobe,
    shortlist, inner_product, target_recall, recall_at_10, target_met, recall_queries."""
    faiss = import_faiss()
    n, dim = store.features.shape
    check_cells(nlist, nprobe, shortlist, target_recall)
    if nlist is not None and int(nlist) > n:
        # faiss trains each cell from the stored rows: more cells than rows cannot be trained.
        raise ConfigError("nlist %d: the index holds %d images, and an IVF index needs at "
                          "least as many images as cells (try nlist %d)"
                          % (int(nlist), n, max(1, n // 39)))
    held = max(1, min(int(recall_queries), n // 10, n - int(nlist or 0)))
    nlist = int(nlist or max(1, min(int(4 * math.sqrt(n)), (n - held) // 39)))
    inner = _uses_inner_product(store) or metric == "cosine"
    faiss_metric = faiss.METRIC_INNER_PRODUCT if inner else faiss.METRIC_L2
    reduced = min(dim, REDUCED_DIM)
    # Held-out queries: neither the projection nor the cells are trained on them (unless
    # the cells need every row).
    order = np.random.RandomState(seed).permutation(n)
    held, rest = np.sort(order[:held]), order[held:] if n - held >= nlist else order
    train = np.sort(rest[:max(1, min(len(rest), TRAIN_PER_CELL * nlist))])
    transform = _projection(faiss, store, train, inner, metric, reduced)
    quantizer = (faiss.IndexFlatIP if inner else faiss.IndexFlatL2)(reduced)
    ivf = faiss.IndexIVFScalarQuantizer(quantizer, reduced, nlist,
                                        faiss.ScalarQuantizer.QT_8bit, faiss_metric)
    ivf.cp.seed = seed
    ivf.train(np.concatenate([transform.apply(b) for b in _blocks(store.features, train, inner,
                                                                  metric)]))
    index = faiss.IndexPreTransform(transform, ivf)
    index.own_fields = False  # the Python objects own the transform and the cells
    for block in _blocks(store.features, np.arange(n), inner, metric):
        index.add(block)
    info = {"kind": KIND, "codec": "PCA%d,IVF%d,SQ8" % (reduced, nlist), "nlist": nlist,
            "reduced_dim": reduced, "inner_product": inner}
    info.update(_calibrate(store, index, info, held, metric, nprobe, shortlist, target_recall))
    path = os.path.join(store.folder, APPROXIMATE)
    try:  # written beside, then renamed: a full disk leaves no truncated index
        with atomic_path(path) as tmp:
            faiss.write_index(index, tmp)
    except (OSError, RuntimeError) as exc:
        raise OutputError("%s: cannot write the approximate index (%s)"
                          % (path, error_line(exc))) from exc
    store.approximate_index = None
    store.update_manifest("approximate", info)
    return info


def _calibrate(store, index, info, held, metric, nprobe, shortlist, target):
    """The smallest nprobe (doubling, then bisecting) and, at it, the smallest shortlist whose
    recall@10 on the held-out rows reaches `target`; fixed values are kept as given."""
    exact, _ = exact_top_k(store.features[held], store.features, 11, metric=metric)
    lists = [int(shortlist)] if shortlist else list(SHORTLISTS)
    found = {}

    def recall(probes):
        probes = min(int(probes), info["nlist"])
        if probes not in found:
            base = dict(info, nprobe=probes, shortlist=max(lists) + 1)
            coarse = _search(store, index, base, store.features[held], 12, metric, True)
            ranked = _rerank(store, store.features[held], coarse, coarse.shape[1], metric)[0]
            found[probes] = {}
            for size in lists:  # the exact order of a shorter shortlist: a filter of this one
                kept = [r[np.isin(r, c[:size + 1])][:11] for r, c in zip(ranked, coarse, strict=True)]
                found[probes][size] = recall_at_10(exact, kept, held)
        return found[probes]

    def first_size(probes):
        return next((s for s in lists if recall(probes)[s] >= target), None)
    if nprobe:
        probes = int(nprobe)
    else:
        probes = 1
        while first_size(probes) is None and probes < info["nlist"]:
            probes = min(2 * probes, info["nlist"])
        low = probes // 2
        while first_size(probes) is not None and probes - low > 1:
            middle = (low + probes) // 2
            low, probes = (low, middle) if first_size(middle) is not None else (middle, probes)
    probes = min(probes, info["nlist"])
    size = first_size(probes) or max(lists)
    return {"nprobe": probes, "shortlist": size, "target_recall": float(target),
            "recall_at_10": recall(probes)[size], "target_met": recall(probes)[size] >= target,
            "recall_queries": len(held)}


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


def _rerank(store, queries, candidates, topk, metric):
    """(indices, distances) of each query's `topk` nearest among its candidate rows (-1
    padded), by the exact distance on the rows read from the store's memory map. Queries go in
    blocks whose candidates make at most RERANK_BYTES of float32 rows: each block reads the
    union of its rows once, in file order, and ranks every query's own rows at once."""
    candidates = np.asarray(candidates, np.int64)
    n_q, size = candidates.shape
    topk = min(int(topk), max(1, size))
    idx = np.full((n_q, topk), -1, np.int64)
    dist = np.full((n_q, topk), np.inf, np.float32)
    dim = store.features.shape[1]
    step = max(1, RERANK_BYTES // (4 * dim * max(1, size)))
    missing = np.iinfo(np.int64).max
    for a in range(0, n_q, step):
        # Each query's rows in increasing order (a repeat or -1 is no row): at equal distance
        # the lower row comes first, as in exact search.
        rows = np.sort(np.where(candidates[a:a + step] >= 0, candidates[a:a + step], missing),
                       axis=1)
        rows[:, 1:][rows[:, 1:] == rows[:, :-1]] = missing
        found = rows != missing
        union = np.unique(rows[found])
        if not len(union):
            continue
        feats = np.asarray(store.features[union], np.float32)  # one read, in file order
        where = np.searchsorted(union, np.where(found, rows, union[0]))
        d = _paired_distances(np.asarray(queries[a:a + step], np.float32), feats, where, metric)
        d[~found] = np.inf
        keep = top_k(d, topk)
        best = np.take_along_axis(d, keep, axis=1)
        idx[a:a + step] = np.where(np.isfinite(best), np.take_along_axis(rows, keep, axis=1), -1)
        dist[a:a + step] = best
    return idx, dist


def _paired_distances(queries, feats, where, metric):
    """(B, S) distances of each query to its own rows feats[where[b]] by compute_distance's
    formula (cosine: 1 - cos; euclidean: sqrt(max(|q|^2 + |g|^2 - 2 q.g, 0))), float32."""
    rows = feats[where]  # (B, S, dim)
    dot = np.matmul(rows, queries[:, :, None])[:, :, 0]
    q2 = np.einsum("ij,ij->i", queries, queries)
    g2 = np.einsum("ijk,ijk->ij", rows, rows)
    if metric == "cosine":
        eps = np.float32(1e-12)  # zero vectors get similarity 0
        dot /= np.maximum(np.sqrt(q2), eps)[:, None]
        dot /= np.maximum(np.sqrt(g2), eps)
        return np.subtract(np.float32(1.0), dot, out=dot)
    dot *= np.float32(-2.0)
    dot += q2[:, None]
    dot += g2
    np.maximum(dot, 0, out=dot)
    return np.sqrt(dot, out=dot)


def _search(store, index, info, queries, topk, metric, coarse_only=False):
    import_faiss().extract_index_ivf(index).nprobe = int(info["nprobe"])
    size = min(len(store), max(int(info["shortlist"]), int(topk)))
    _, candidates = index.search(_prepared(queries, info["inner_product"], metric), size)
    if coarse_only:
        return candidates
    return _rerank(store, queries, candidates, min(int(topk), len(store)), metric)


def approximate_top_k(store, query_feats, topk, metric="cosine", nprobe=None, shortlist=None):
    """(indices, distances) of the approximate search of `store` (built by build_approximate):
    the shortlist of the index re-ranked exactly; -1 marks a missing neighbour when the probed
    cells hold fewer than topk rows. `nprobe` / `shortlist` override the calibrated setting."""
    check_cells(nprobe=nprobe, shortlist=shortlist)
    faiss = import_faiss()
    info = store.manifest.get("approximate")
    path = os.path.join(store.folder, APPROXIMATE)
    if not info or not os.path.isfile(path):
        raise ConfigError("gallery %s has no approximate index; build it with "
                          "search.py index --approximate" % store.folder)
    damaged = "gallery %s is a damaged index (its %s %%s); build it again" % (
        os.fspath(store.folder).replace("%", "%%"), APPROXIMATE)
    if not isinstance(info, dict) or info.get("kind") != KIND:
        raise DatasetError(damaged % ("is of another kind, %r" % (
            info.get("kind") if isinstance(info, dict) else info,)))
    if store.approximate_index is None:  # read once per opened store, not per query batch
        try:
            index = faiss.read_index(path)
        except (OSError, RuntimeError) as exc:
            raise DatasetError(damaged % ("cannot be read: %s" % error_line(exc))) from exc
        if index.d != store.features.shape[1] or index.ntotal != len(store):
            raise DatasetError(damaged % ("holds %d rows of %d dimensions, the store %s"
                                          % (index.ntotal, index.d, store.features.shape)))
        store.approximate_index = index
    setting = dict(info, nprobe=info["nprobe"] if nprobe is None else nprobe,
                   shortlist=info["shortlist"] if shortlist is None else shortlist)
    return _search(store, store.approximate_index, setting, np.asarray(query_feats), topk,
                   metric)
