"""Search result pages: an HTML page and a PNG of each query and its ranked images.

The ranking itself is ReIDModel.rank/search (reid_model.py) over a feature store (store.py).
"""
import html
import os
from urllib.parse import quote

from ..fileio import output_path


def image_url(relpath):
    """A relative file path as a URL path: its bytes percent-encoded (`#`, `?`, `%`, spaces and
    names that are not UTF-8 included), so the browser opens exactly that file."""
    return quote(os.fsencode(relpath.replace(os.sep, "/")), safe="/")


def shown_name(name):
    """A file name as text to show: bytes that are not UTF-8 become U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def write_html(path, queries, overwrite=False):
    """An HTML page (written atomically) showing each query and its ranked images, with the
    distances; image links are relative to the page's folder where possible."""
    base = os.path.dirname(os.path.abspath(path))

    def img(p, caption):
        src = image_url(os.path.relpath(os.path.abspath(p), base))
        return ('<figure><img src="%s" height="128"><figcaption>%s</figcaption></figure>'
                % (src, html.escape(caption)))

    rows = ["<h3>%s</h3><div class=row>%s%s</div>" % (
        html.escape(shown_name(q)), img(q, "query"),
        "".join(img(p, "%d: %.4f" % (r, d)) for r, (p, d) in enumerate(ranked, 1)))
        for q, ranked in queries]
    page = ("<!doctype html><meta charset=utf-8><title>search results</title>"
            "<style>"
            ".row{display:flex;gap:6px}figure{margin:0;font:11px sans-serif}</style>\n"
            + "\n".join(rows) + "\n")
    with output_path(path, overwrite, "--html") as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(page)


def write_png(path, queries, overwrite=False):
    """One PNG, a row per query: the query and its ranked images with their distances."""
    from ..evaluation.plots import RankItem, write_rank_lists
    rows = [(RankItem(q, shown_name(os.path.basename(q)), None),
             [RankItem(p, "%s\nd %.3f" % (shown_name(os.path.basename(p))[:16], d), None)
              for p, d in ranked]) for q, ranked in queries]
    write_rank_lists(path, rows, overwrite=overwrite)
