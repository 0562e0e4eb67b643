"""Pictures of a model and a run: rank lists, the CMC curve and the training curves.

matplotlib's object API on an Agg canvas (no pyplot: no global figure state, no display
needed, safe in threads and in the training process). Every PNG is written atomically
(a .tmp file, then os.replace), so a reader never sees half a picture.
"""
import collections
import math
import os

import cv2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from ..data.images import read_image
from ..errors import DatasetError
from ..fileio import output_path

# One rank-list cell (image + three lines of text), in inches at DPI: a PNG of R rows and
# C cells is exactly (C * CELL_WIDTH * DPI) x (R * CELL_HEIGHT * DPI) pixels.
CELL_WIDTH, CELL_HEIGHT, DPI = 1.25, 3.0, 100  # binary fractions: exact pixel sizes
THUMB_SIZE = (64, 128)  # (width, height) every image is shown at
_MATCH_COLOURS = {True: "#1a9c3a", False: "#d62728", None: "#1f77b4"}  # same id / other / query
_LEGEND = ((None, "query"), (True, "same person"), (False, "other person"))
NAME_CHARS = 23  # characters of a file name that fit under a tile at the caption's size

RankItem = collections.namedtuple("RankItem", "path caption match")
RankItem.__doc__ = ("One picture of a rank list: image path, caption under it, match (True: "
                    "same identity, green border; False: red; None: query or unknown, blue).")


def new_figure(width, height):
    """A Figure of width x height inches at DPI on its own Agg canvas (no pyplot)."""
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)  # attaches itself as fig.canvas
    return fig


def save_figure(fig, path, overwrite=False):
    """Render `fig` (from new_figure) to the PNG `path` atomically (fileio.output_path): an
    existing file is replaced only when the package wrote it, or with `overwrite`."""
    with output_path(path, overwrite, "picture") as tmp, open(tmp, "wb") as f:
        fig.canvas.print_png(f)


def _thumbnail(path):
    """The image at `path` as RGB uint8 at THUMB_SIZE; a grey tile if it cannot be read."""
    try:
        img = read_image(path)  # bytes decoded from memory, the pixel limit checked
    except DatasetError:
        return np.full(THUMB_SIZE[::-1] + (3,), 128, dtype=np.uint8)
    return cv2.resize(img, THUMB_SIZE, interpolation=cv2.INTER_AREA)


def short_name(path, chars=NAME_CHARS):
    """The file name of `path` as a caption shows it: whole, or its first and last characters
    around an ellipsis when longer than `chars`."""
    name = os.path.basename(path)
    if len(name) <= chars:
        return name
    head = (chars - 1) // 2
    return name[:head] + "\u2026" + name[len(name) - (chars - 1 - head):]


def write_rank_lists(path, rows, title=None, overwrite=False):
    """One PNG of rank lists: each row is (query RankItem, [ranked RankItems]), the query
    first, then the ranked items numbered from 1, each with a coloured border and caption;
    with a legend of the colours when any item's identity is known (match not None)."""
    ncols = 1 + max(len(items) for _, items in rows)
    fig = new_figure(CELL_WIDTH * ncols, CELL_HEIGHT * len(rows))
    for r, (query, items) in enumerate(rows):
        for c, item in enumerate([query] + list(items)):
            ax = fig.add_subplot(len(rows), ncols, r * ncols + c + 1)
            ax.imshow(_thumbnail(item.path))
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_edgecolor(_MATCH_COLOURS[None if item.match is None
                                                   else bool(item.match)])
                spine.set_linewidth(4)
            ax.set_title("query" if c == 0 else "%d" % c, fontsize=8)
            ax.set_xlabel(item.caption, fontsize=6, linespacing=1.3)
    if title:
        fig.suptitle(title, fontsize=8, x=0.02, ha="left")
    if any(item.match is not None for _, items in rows for item in items):
        fig.legend(handles=[Patch(facecolor="white", edgecolor=_MATCH_COLOURS[m], linewidth=3,
                                  label=label) for m, label in _LEGEND],
                   loc="upper right", ncol=3, fontsize=7, frameon=False, borderaxespad=0.3,
                   handlelength=1.2, columnspacing=1.2)
    height = CELL_HEIGHT * DPI * len(rows)  # pixels: margins in pixels, whatever the rows
    fig.subplots_adjust(left=0.02, right=0.98, top=1 - 40 / height, bottom=44 / height,
                        wspace=0.15, hspace=84 / (height / len(rows) - 84))
    save_figure(fig, path, overwrite)


def write_cmc(path, cmc, title="CMC", overwrite=False):
    """cmc.png: the fraction of queries with a true match within the first k, k = 1..len(cmc)
    (percent), with Rank-1/5/10 marked."""
    cmc = 100 * np.asarray(cmc, dtype=np.float64)
    ranks = np.arange(1, len(cmc) + 1)
    fig = new_figure(5, 3.5)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(ranks, cmc, marker=".", markersize=3)
    for k in (1, 5, 10):
        if k <= len(cmc):
            ax.annotate("Rank-%d %.1f" % (k, cmc[k - 1]), (k, cmc[k - 1]), fontsize=7,
                        xytext=(6, -12), textcoords="offset points")
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_xlim(1, len(cmc))
    ax.set_ylim(min(cmc.min(), 100) - 2 if np.isfinite(cmc).all() else 0, 101)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, overwrite)


def write_curves(run_dir, records, path=None, overwrite=False):
    """curves.png in `run_dir` (or `path`) from a run's per-epoch `records` (metrics.jsonl's
    rows, read by the caller): loss, training accuracy and learning rate per epoch,
    Rank-1/mAP/mINP at the evaluated epochs. Returns the path written."""
    path = path or os.path.join(run_dir, "curves.png")
    epochs = [r["epoch"] for r in records]
    fig = new_figure(10, 6.5)
    panels = [("loss", "training loss (softmax cross-entropy)", False),
              ("train_acc", "training accuracy", False), ("lr", "learning rate", True)]
    for i, (key, label, log) in enumerate(panels, 1):
        ax = fig.add_subplot(2, 2, i)
        pts = [(e, r[key]) for e, r in zip(epochs, records, strict=True) if _finite(r.get(key))]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker=".")
        if log and pts and min(v for _, v in pts) > 0:
            ax.set_yscale("log")
        ax.set_title(label, fontsize=9)
        _epoch_axis(ax)
    ax = fig.add_subplot(2, 2, 4)
    evaluated = [r for r in records if _finite(r.get("rank1"))]
    for key, name in (("rank1", "Rank-1"), ("mAP", "mAP"), ("mINP", "mINP")):
        pts = [(r["epoch"], r[key]) for r in evaluated if _finite(r.get(key))]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", markersize=3, label=name)
    if evaluated:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no evaluated epoch\n(SOLVER.EVAL_PERIOD)", ha="center",
                va="center", transform=ax.transAxes, fontsize=9)
    ax.set_title("retrieval at the evaluated epochs (%)", fontsize=9)
    _epoch_axis(ax)
    fig.suptitle(os.path.basename(os.path.abspath(run_dir)), fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, overwrite)
    return path


def _epoch_axis(ax):
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 1.25
    ax.grid(alpha=0.3)


def _finite(value):
    return isinstance(value, (int, float)) and math.isfinite(value)
