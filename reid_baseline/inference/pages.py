"""Search result pages: an HTML page and a PNG of each query and its ranked images.

The ranking itself is ReIDModel.rank/search (reid_model.py) over a feature store (store.py).
"""
import html
import os

from ..fileio import output_path


def write_html(path, queries, overwrite=False):
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
    page = ("<!doctype html><meta charset=utf-8><title>search results</title>"
            "<style>"
            ".row{display:flex;gap:6px}figure{margin:0;font:11px sans-serif}</style>\n"
            + "\n".join(rows) + "\n")
    with output_path(path, overwrite, "--html") as tmp, open(tmp, "w") as f:
        f.write(page)


def write_png(path, queries, overwrite=False):
    """One PNG, a row per query: the query and its ranked images with their distances."""
    from ..evaluation.plots import RankItem, write_rank_lists
    rows = [(RankItem(q, os.path.basename(q), None),
             [RankItem(p, "%s\nd %.3f" % (os.path.basename(p)[:16], d), None)
              for p, d in ranked]) for q, ranked in queries]
    write_rank_lists(path, rows, overwrite=overwrite)
