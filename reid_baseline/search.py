"""Feature files of image folders, and top-k queries against them.

`build_index` embeds every image under a folder (flip-averaged, normalised, batched, as for
evaluation) into an .npz holding the paths, the features, the config text and the parameter
file it was made with; `query_index` embeds query images with that same config and finds
their nearest gallery images exactly, by blocked matrix products (working memory bounded by
the block, whatever the gallery size), optionally re-ranked.
"""
import contextlib
import html
import os
import tempfile

import numpy as np
from tqdm import tqdm

from .fileio import atomic_path
from .data.loader import build_test_loader
from .data.datasets.base import DatasetError, Record
from .data.images import IMAGE_EXTENSIONS, find_images, read_image
from .evaluation import compute_distance
from .features import extract_features
from .rerank import re_ranking_features, top_k as _top_k

INDEX_KEYS = ("paths", "features", "config", "params")
CHUNK_IMAGES = 2048  # images per extraction call: an unreadable file costs one chunk's re-check
SEARCH_BLOCK_ENTRIES = 1 << 24  # query x gallery distances per block (64 MB of float32)


def embed_images(cfg, embedding, paths, ctx, desc="images"):
    """(features, kept paths, skipped [(path, reason)]) of `paths`; files the data loader
    cannot read are skipped, never a stop halfway.

    Images go through the evaluation loader in chunks of CHUNK_IMAGES; a chunk that meets an
    unreadable file is checked file by file (read_image, the loader's own reader) and
    embedded again without the bad files, so only that chunk pays for the check."""
    feats, kept, skipped = [], [], []
    bar = tqdm(total=len(paths), desc=desc, unit="img", dynamic_ncols=True, disable=None)
    for a in range(0, len(paths), CHUNK_IMAGES):
        part = list(paths[a:a + CHUNK_IMAGES])
        try:
            chunk = _extract(cfg, embedding, part, ctx)
        except DatasetError:
            good = []
            for path in part:
                try:
                    read_image(path)
                    good.append(path)
                except DatasetError as exc:
                    skipped.append((path, str(exc)))
            part = good
            chunk = _extract(cfg, embedding, part, ctx) if part else None
        if chunk is not None:
            feats.append(chunk)
            kept += part
        bar.update(min(CHUNK_IMAGES, len(paths) - a))
    bar.close()
    features = np.concatenate(feats) if feats else np.zeros((0, 0), dtype=np.float32)
    return features, kept, skipped


def _extract(cfg, embedding, paths, ctx):
    loader = build_test_loader(cfg, [Record(p, 0, 0) for p in paths])
    return extract_features(embedding, loader, ctx, flip=cfg.TEST.FLIP_FEATURES,
                            normalize=cfg.TEST.NORMALIZE_FEATURES, desc="batches")


def _load_network(cfg, params_path):
    from .devices import build_contexts
    from .model import load_trained_model
    ctx = build_contexts(cfg.GPUS)
    return load_trained_model(cfg, params_path, ctx).embedding, ctx


def build_index(cfg, params_path, images_dir, out_path):
    """Embed every image under `images_dir` into the gallery file `out_path` (.npz, written
    atomically); returns a summary dict (count, skipped [(path, reason)], dim, path)."""
    if not os.path.isdir(images_dir):
        raise DatasetError("--images: folder %s does not exist" % images_dir)
    out_dir = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(out_dir):  # found before hours of embedding, not after
        raise FileNotFoundError("--out: folder %s does not exist" % out_dir)
    paths = find_images(images_dir)
    if not paths:
        raise DatasetError("--images: no image files (%s) under %s"
                           % ("/".join(IMAGE_EXTENSIONS), images_dir))
    embedding, ctx = _load_network(cfg, params_path)
    feats, kept, skipped = embed_images(cfg, embedding, paths, ctx, desc="index")
    if not kept:
        raise DatasetError("--images: none of the %d image files under %s could be read; the "
                           "first: %s" % (len(paths), images_dir, skipped[0][1]))
    save_index(out_path, [os.path.abspath(p) for p in kept], feats, cfg.dump(),
               os.path.abspath(params_path))
    return {"path": out_path, "count": len(kept), "dim": feats.shape[1], "skipped": skipped}


def save_index(path, paths, features, config_text, params_path):
    """Write a gallery file atomically (no pickled objects: text arrays and float32)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, paths=np.array(paths, dtype=str), features=features.astype(np.float32),
                 config=np.array(config_text), params=np.array(params_path))


def load_index(path):
    """The arrays of a gallery file: paths (N,), features (N, D) float32, config and params
    (text). Raises DatasetError naming the file when it is not one."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in INDEX_KEYS if k in z.files}
    except (OSError, ValueError) as exc:
        raise DatasetError("--gallery: %s is not a gallery file written by search.py index "
                           "(%s)" % (path, exc)) from exc
    missing = [k for k in INDEX_KEYS if k not in data]
    if missing or data["features"].ndim != 2 or len(data["paths"]) != len(data["features"]):
        raise DatasetError("--gallery: %s is not a gallery file written by search.py index "
                           "(missing %s or mismatched arrays)" % (path, ", ".join(missing) or "-"))
    return {"paths": data["paths"], "features": data["features"],
            "config": str(data["config"]), "params": str(data["params"])}


@contextlib.contextmanager
def index_config_file(index):
    """A temporary YAML file holding the config a gallery file was made with (for
    cli.config_from_args, so that --gpus and KEY VALUE overrides apply on top of it)."""
    fd, tmp = tempfile.mkstemp(suffix=".yaml", prefix="reid_index_config_")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(index["config"])
        yield tmp
    finally:
        os.remove(tmp)


def top_k_search(query_feats, gallery_feats, topk, metric="cosine"):
    """(indices, distances), each (Q, min(topk, G)): the `topk` nearest gallery items of each
    query in order (ties: lower gallery index first), exact, by blocks of gallery rows so
    that at most SEARCH_BLOCK_ENTRIES distances exist at once."""
    n_q, n_g = len(query_feats), len(gallery_feats)
    k = min(int(topk), n_g)
    block = max(k, SEARCH_BLOCK_ENTRIES // max(n_q, 1))
    best_i = np.zeros((n_q, 0), dtype=np.int64)
    best_d = np.zeros((n_q, 0), dtype=np.float32)
    for a in range(0, n_g, block):
        dist = compute_distance(query_feats, gallery_feats[a:a + block], metric=metric)
        idx = _top_k(dist, min(k, dist.shape[1]))
        # Earlier blocks first: at equal distance the lower gallery index stays ahead.
        cand_i = np.concatenate([best_i, idx + a], axis=1)
        cand_d = np.concatenate([best_d, np.take_along_axis(dist, idx, axis=1)], axis=1)
        keep = _top_k(cand_d, k)
        best_i = np.take_along_axis(cand_i, keep, axis=1)
        best_d = np.take_along_axis(cand_d, keep, axis=1)
    return best_i, best_d


def query_index(index, cfg, image_paths, params_path=None, topk=10, rerank=False):
    """Rank the gallery of `index` (load_index) for each image of `image_paths`.

    Returns (queries, skipped): queries is a list of (query path, [(gallery path, distance)]
    in rank order); skipped lists unreadable query files with the reason. With `rerank`,
    k-reciprocal re-ranking (TEST.RERANK_* knobs) of the whole gallery: its cost grows with
    the square of the gallery size."""
    embedding, ctx = _load_network(cfg, params_path or index["params"])
    feats, kept, skipped = embed_images(cfg, embedding, image_paths, ctx, desc="queries")
    if not kept:
        raise DatasetError("no query image could be read: %s" % "; ".join(r for _, r in skipped))
    gallery = index["features"]
    if feats.shape[1] != gallery.shape[1]:
        raise DatasetError("the network gives %d-d features, the gallery holds %d-d ones: "
                           "use the --params the gallery was made with" % (feats.shape[1],
                                                                           gallery.shape[1]))
    if rerank:
        dist = re_ranking_features(feats, gallery, k1=cfg.TEST.RERANK_K1,
                                   k2=cfg.TEST.RERANK_K2, lambda_value=cfg.TEST.RERANK_LAMBDA)
        idx = _top_k(dist, min(topk, dist.shape[1]))
        dist = np.take_along_axis(dist, idx, axis=1)
    else:
        idx, dist = top_k_search(feats, gallery, topk, metric=cfg.TEST.DISTANCE)
    queries = [(q, [(str(index["paths"][j]), float(d)) for j, d in zip(row_i, row_d)])
               for q, row_i, row_d in zip(kept, idx, dist)]
    return queries, skipped


def write_html(path, queries):
    """An HTML page (written atomically) showing each query and its ranked images, with the
    distances; image links are relative to the page's folder where possible."""
    base = os.path.dirname(os.path.abspath(path))

    def img(p, caption):
        src = html.escape(os.path.relpath(os.path.abspath(p), base).replace(os.sep, "/"))
        return ('<figure><img src="%s" height="128"><figcaption>%s</figcaption></figure>'
                % (src, html.escape(caption)))

    rows = ["<h3>%s</h3><div class=row>%s%s</div>" % (
        html.escape(q), img(q, "query"),
        "".join(img(p, "%d: %.4f" % (r, d)) for r, (p, d) in enumerate(ranked, 1)))
        for q, ranked in queries]
    page = ("<!doctype html><meta charset=utf-8><title>search results</title><style>"
            ".row{display:flex;gap:6px}figure{margin:0;font:11px sans-serif}</style>\n"
            + "\n".join(rows) + "\n")
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(page)


def write_png(path, queries):
    """One PNG, a row per query: the query and its ranked images with their distances."""
    from .visualize import RankItem, write_rank_lists
    rows = [(RankItem(q, os.path.basename(q), None),
             [RankItem(p, "%s\nd %.3f" % (os.path.basename(p)[:16], d), None)
              for p, d in ranked]) for q, ranked in queries]
    write_rank_lists(path, rows)
