"""reid_baseline.evaluation.plots, evaluate.py --visualize and scripts/plot_run.py: the PNGs exist,
have the expected size and colours, and are written atomically."""
import glob
import json
import os

import numpy as np
import pytest
from PIL import Image

from conftest import package_png, run_script
from reid_baseline.errors import OutputError
from reid_baseline.evaluation import plots as visualize
from reid_baseline.evaluation.plots import RankItem


def _pixels_near(img, hex_colour, tol=40):
    rgb = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(np.asarray(img.convert("RGB"), dtype=int) - rgb).max(axis=2) < tol).sum())


# matplotlib's first three line colours: Rank-1 (and every single curve), mAP, mINP.
BLUE, ORANGE, GREEN = "#1f77b4", "#ff7f0e", "#2ca02c"


def _quadrants(img):
    """The four panels of a 2 x 2 figure, as PIL images."""
    w, h = img.size
    return [img.crop((x, y, x + w // 2, y + h // 2)) for y in (0, h // 2) for x in (0, w // 2)]


def _assert_curves_drawn(img):
    """Each panel of curves.png holds its curve (a blank or an empty panel fails)."""
    loss, acc, lr, retrieval = _quadrants(img)
    for panel in (loss, acc, lr, retrieval):
        assert _pixels_near(panel, BLUE, tol=30) > 50
    assert _pixels_near(retrieval, ORANGE, tol=30) > 50 and _pixels_near(retrieval, GREEN, tol=30) > 50


def test_the_pixel_checks_fail_on_a_blank_picture():
    blank = Image.new("RGB", (1000, 650), "white")
    with pytest.raises(AssertionError):
        _assert_curves_drawn(blank)


@pytest.fixture(scope="module")
def images(toy_market_root):
    return sorted(glob.glob(os.path.join(toy_market_root, "query", "*.jpg")))[:11]


def test_rank_list_size_and_border_colours(images, tmp_path):
    query = RankItem(images[0], "id 1 cam 1", None)
    all_green = [RankItem(p, "id 1 cam 2\nd 0.100", True) for p in images[1:11]]
    all_red = [RankItem(p, "id 2 cam 2\nd 0.100", False) for p in images[1:11]]
    green, red = visualize._MATCH_COLOURS[True], visualize._MATCH_COLOURS[False]
    visualize.write_rank_lists(str(tmp_path / "g.png"), [(query, all_green)])
    visualize.write_rank_lists(str(tmp_path / "r.png"), [(query, all_red), (query, all_red)])
    g, r = Image.open(str(tmp_path / "g.png")), Image.open(str(tmp_path / "r.png"))
    assert g.size == (11 * 125, 300) and r.size == (11 * 125, 600)
    # Same images, other borders: 10 borders of 4 points add thousands of pixels of the
    # match colour (the images themselves hold some of either colour).
    visualize.write_rank_lists(str(tmp_path / "r1.png"), [(query, all_red)])
    r1 = Image.open(str(tmp_path / "r1.png"))
    assert _pixels_near(g, green) - _pixels_near(r1, green) > 2000
    assert _pixels_near(r1, red) - _pixels_near(g, red) > 2000


def test_unreadable_image_is_a_grey_tile(tmp_path):
    tile = visualize._thumbnail(str(tmp_path / "missing.jpg"))
    assert tile.shape == (128, 64, 3) and (tile == 128).all()


def test_png_writes_are_atomic(images, tmp_path, monkeypatch):
    path = str(tmp_path / "cmc.png")
    visualize.write_cmc(path, np.linspace(0.5, 1.0, 50))
    before = open(path, "rb").read()
    assert Image.open(path).size == (500, 350)
    assert _pixels_near(Image.open(path), BLUE, tol=30) > 200  # the curve, not a blank picture

    def full_disk(self, f, *args, **kwargs):
        f.write(b"\x89PNG half")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(visualize.FigureCanvasAgg, "print_png", full_disk)
    with pytest.raises(OutputError) as info:
        visualize.write_cmc(path, np.linspace(0.2, 1.0, 50))
    assert str(info.value) == ("cannot write %s: No space left on device; nothing was written "
                               "under that name" % path)
    assert open(path, "rb").read() == before  # the earlier picture is intact
    # no .tmp left behind
    assert sorted(os.listdir(str(tmp_path))) == [".reid_baseline_outputs.json", "cmc.png"]


def test_curves_from_records(tmp_path):
    records = [{"epoch": e, "lr": 1e-3 * min(1, e / 2), "loss": 3.0 / e, "train_acc": e / 10}
               for e in range(1, 7)]
    for r in records[2::3]:
        r.update(rank1=10.0 * r["epoch"], mAP=5.0 * r["epoch"], mINP=2.0 * r["epoch"])
    path = visualize.write_curves(str(tmp_path), records=records)
    assert path == str(tmp_path / "curves.png")
    assert Image.open(path).size == (1000, 650)
    _assert_curves_drawn(Image.open(path))
    for record in records:  # no learning rate: its panel is empty, and the check sees it
        del record["lr"]
    with pytest.raises(AssertionError):
        _assert_curves_drawn(Image.open(visualize.write_curves(str(tmp_path), records)))


def test_plotrun_script(trained_run, tmp_path, monkeypatch, capsys):
    cfg, history = trained_run
    out = tmp_path / "c.png"
    code, printed, err = run_script(monkeypatch, capsys, "scripts/plot_run.py", cfg.OUTPUT_DIR,
                                     "--out", out)
    assert code == 0, err
    assert printed == "wrote %s\n" % out and Image.open(str(out)).size == (1000, 650)
    _assert_curves_drawn(Image.open(str(out)))
    code, printed, err = run_script(monkeypatch, capsys, "scripts/plot_run.py", tmp_path)
    assert code == 2 and "no finished epoch" in err and str(tmp_path) in err


@pytest.mark.slow
def test_evaluate_visualize_writes_cmc_and_rank_lists(trained_run, tmp_path, monkeypatch,
                                                      capsys):
    cfg, _ = trained_run
    output = tmp_path / "res.json"
    (tmp_path / "ranklists").mkdir()
    package_png(tmp_path / "ranklists" / "random_09_query00001.png")  # an earlier evaluation's
    (tmp_path / "ranklists" / "notes.txt").write_bytes(b"x")  # the user's
    code, out, err = run_script(monkeypatch, capsys, "evaluate.py", "--config",
                                 os.path.join(cfg.OUTPUT_DIR, "config.yaml"), "--params",
                                 os.path.join(cfg.OUTPUT_DIR, "model_final.params"),
                                 "--output", output, "--visualize", 3)
    assert code == 0, err
    assert "mINP" in out and "wrote 3 rank lists" in out
    results = json.loads(output.read_text())
    assert 0 < results["mINP"] <= results["mAP"] + 1e-9 <= 100 + 1e-9
    assert Image.open(str(tmp_path / "cmc.png")).size == (500, 350)
    lists = sorted(n for n in os.listdir(str(tmp_path / "ranklists")) if n.endswith(".png"))
    assert [n.split("_")[0] for n in lists] == ["random", "worst", "worst"]  # no stale one
    assert (tmp_path / "ranklists" / "notes.txt").exists()
    for name in lists:
        assert Image.open(str(tmp_path / "ranklists" / name)).size == (11 * 125, 300)


def test_rank_lists_show_the_protocols_ranking_of_the_worst_queries(images, tmp_path,
                                                                    monkeypatch):
    import collections

    from reid_baseline.config import load_config
    from reid_baseline.data.datasets.base import Record
    from reid_baseline.evaluation import evaluator
    from reid_baseline.evaluation.protocol import evaluate_ranking
    # Queries (pid, cam): q0 (1, 1), q1 (2, 1), q2 (3, 1), q3 (9, 1) without a match.
    # Gallery: g0 (1, 2), g1 (2, 2), g2 (3, 2), g3 junk, g4 (1, 1) same camera as q0, g5 (0, 3).
    query = [Record(images[i], p, 1) for i, p in enumerate((1, 2, 3, 9))]
    gallery = [Record(images[4 + i], p, c) for i, (p, c) in
               enumerate(((1, 2), (2, 2), (3, 2), (-1, 2), (1, 1), (0, 3)))]
    dist = np.array([[0.1, 0.5, 0.6, 0.05, 0.01, 0.3],    # q0: g0 first -> AP 1
                     [0.1, 0.9, 0.2, 0.3, 0.4, 0.5],      # q1: g1 ranked 5th -> the worst
                     [0.3, 0.4, 0.2, 0.1, 0.5, 0.6],      # q2: g2 first -> AP 1
                     [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]], np.float32)
    data = collections.namedtuple("Data", "query gallery camera_offset distractor_pid")(
        query, gallery, 1, 0)
    ids = ([r.pid for r in query], [r.pid for r in gallery], [1] * 4, [r.camid for r in gallery])
    ranked = evaluate_ranking(dist, ids[0], ids[1], ids[2], ids[3], max_rank=5)
    drawn = {}
    monkeypatch.setattr("reid_baseline.evaluation.plots.write_rank_lists",
                        lambda path, rows: drawn.update({os.path.basename(path): rows}))
    cfg = load_config(None, ["TEST.RERANK", "True"])
    written = evaluator.write_rank_pictures(cfg, str(tmp_path),
                                            evaluator.Ranking(data, dist, ranked), visualize=2,
                                            top=4)
    assert os.path.basename(written[0]) == "cmc_rerank.png"
    # The random one: seed 0's first of the 4 queries; the worst of the others by AP: q1
    # (AP 0.1) unless q1 is the random one, then q0 (AP 1, before q2's by index).
    random_one = np.random.RandomState(0).permutation(4)[0]
    worst = 0 if random_one == 1 else 1
    assert sorted(drawn) == sorted(["random_01_query%05d.png" % random_one,
                                    "worst_01_query%05d.png" % worst])
    assert worst == 1 and random_one == 2  # the cases below
    (q, items), = drawn["worst_01_query00001.png"]
    # 1 match at rank 5, trapezoid AP: (old precision 0 + precision 1/5) / 2
    assert q.path == images[1] and "AP 0.10" in q.caption
    # Junk (g3) and nothing else of this query's camera is left out; g4 is pid 1, kept.
    assert [i.path for i in items] == [images[4], images[6], images[8], images[9]]
    assert [bool(i.match) for i in items] == [False, False, False, False]
    # camid 1 is the files' camera 2; g5 (pid 0) is a distractor
    assert items[0].caption == "%s\nid 1 cam 3\nd 0.100" % os.path.basename(images[4])
    assert items[3].caption == "%s\ndistractor cam 4\nd 0.500" % os.path.basename(images[9])
    (q, items), = drawn["random_01_query00002.png"]
    # q2: g3 is junk and left out; g2 (pid 3, camera 2) is its match.
    assert [i.path for i in items] == [images[6], images[4], images[5], images[8]]
    assert [bool(i.match) for i in items] == [True, False, False, False]


@pytest.mark.timeout(120)
def test_rank_lists_and_result_pages_of_file_names_that_are_not_utf8(tmp_path):
    # OpenCV's own file reading crashes the process on such names: run it in a child process.
    import subprocess
    import sys
    code = (
        "import os, sys, cv2, numpy as np\n"
        "from reid_baseline.inference import pages\n"
        "d = sys.argv[1]\n"
        "p = os.path.join(d, os.fsdecode(b'q\\xff.png'))\n"
        "cv2.imwrite(os.path.join(d, 'x.png'), np.full((16, 8, 3), 200, np.uint8))\n"
        "os.replace(os.path.join(d, 'x.png'), p)\n"
        "pages.write_png(os.path.join(d, 'r.png'), [(p, [(p, 0.0)])])\n"
        "pages.write_html(os.path.join(d, 'r.html'), [(p, [(p, 0.0)])])\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=100)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert os.path.getsize(str(tmp_path / "r.png")) > 0
    assert 'src="q%FF.png"' in (tmp_path / "r.html").read_text(encoding="utf-8")


def _names_say(path):
    """(identity text, camera) as the Market-1501 file name of `path` gives them, read here
    with a pattern of its own: 0000 is a distractor."""
    import re
    pid, cam = re.match(r"^(-1|\d{4})_c(\d)s\d+_", os.path.basename(path)).groups()
    return ("distractor" if int(pid) == 0 else "id %d" % int(pid)), int(cam)


@pytest.fixture(scope="module")
def small_set(small_toy_root):
    from reid_baseline.data.datasets.market1501 import load_market1501
    return load_market1501(small_toy_root, verify_counts=False)


def _ranking(dataset, seed):
    """A Ranking of `dataset` by random distances (true matches somewhat closer)."""
    from reid_baseline.evaluation import evaluator
    from reid_baseline.evaluation.protocol import evaluate_ranking
    (q_pids, q_cams), (g_pids, g_cams) = (evaluator.record_ids(dataset.query),
                                          evaluator.record_ids(dataset.gallery))
    dist = np.random.RandomState(seed).rand(len(q_pids), len(g_pids)).astype(np.float32)
    dist[q_pids[:, None] == g_pids[None]] *= 0.5
    return evaluator.Ranking(dataset, dist, evaluate_ranking(dist, q_pids, g_pids, q_cams,
                                                             g_cams, max_rank=10))


def test_rank_list_captions_follow_the_file_names(small_set):
    from reid_baseline.evaluation.evaluator import rank_list_captions
    query = small_set.query[5]
    distractors = [r for r in small_set.gallery if r.pid == 0][:2]
    gallery = distractors + [r for r in small_set.gallery if r.pid == query.pid][:3]
    assert len(distractors) == 2 and len(gallery) == 5
    distances = np.linspace(0.1, 0.5, 5)
    captions = rank_list_captions(query, gallery, distances, 0.25, small_set.camera_offset,
                                  small_set.distractor_pid)
    assert len(captions) == 6
    for record, caption, value in zip([query] + gallery, captions,
                                      ["AP 0.25"] + ["d %.3f" % d for d in distances],
                                      strict=True):
        who, camera = _names_say(record.path)
        assert caption.split("\n") == [os.path.basename(record.path),
                                       "%s cam %d" % (who, camera), value]
    # A long name is cut in the middle, its start and end kept.
    long_name = "0000_000_01_0303morning_0015_0.jpg"
    short = visualize.short_name("/x/" + long_name)
    assert len(short) == visualize.NAME_CHARS < len(long_name)
    assert short == long_name[:11] + "\u2026" + long_name[-11:]


def test_rank_pictures_are_drawn_with_a_legend_and_no_junk(small_set, tmp_path, monkeypatch):
    from reid_baseline.config import load_config
    from reid_baseline.evaluation import evaluator
    junk = [n for n in os.listdir(os.path.dirname(small_set.gallery[0].path))
            if n.startswith("-1_")]
    assert junk and all(r.pid != -1 for r in small_set.gallery)  # junk never reaches a ranking
    drawn = []
    draw = visualize.write_rank_lists
    monkeypatch.setattr(visualize, "write_rank_lists",
                        lambda path, rows: drawn.append(rows) or draw(path, rows))
    written = evaluator.write_rank_pictures(load_config(None, []), str(tmp_path),
                                            _ranking(small_set, 0), visualize=2)
    assert len(written) == 3 and len(drawn) == 2
    for path, rows in zip(written[1:], drawn, strict=True):
        (query, items), = rows
        for item in [query] + items:
            assert not os.path.basename(item.path).startswith("-1_")
            who, camera = _names_say(item.path)
            assert item.caption.split("\n")[:2] == [os.path.basename(item.path),
                                                    "%s cam %d" % (who, camera)]
        img = Image.open(path)
        assert img.size == (11 * 125, 300)
        legend = img.crop((img.size[0] // 2, 0, img.size[0], 25))  # above the tiles
        for colour in visualize._MATCH_COLOURS.values():
            assert _pixels_near(legend, colour) > 20
    # Search results (no identities known) get no legend: blue borders only, no green or red.
    query = RankItem(small_set.query[0].path, "q", None)
    visualize.write_rank_lists(str(tmp_path / "search.png"),
                               [(query, [RankItem(r.path, "r", None)
                                         for r in small_set.gallery[:10]])])
    top = Image.open(str(tmp_path / "search.png")).crop((11 * 125 // 2, 0, 11 * 125, 25))
    assert _pixels_near(top, visualize._MATCH_COLOURS[True]) == 0


def test_random_queries_depend_on_the_seed_and_the_query_list_only(small_set):
    from reid_baseline.evaluation.evaluator import random_queries
    queries = small_set.query
    picked = random_queries(queries, 5, seed=3)
    assert len(set(picked.tolist())) == 5 and all(0 <= i < len(queries) for i in picked)
    assert random_queries(list(queries), 5, seed=3).tolist() == picked.tolist()
    assert random_queries(queries, 5, seed=4).tolist() != picked.tolist()
    assert len(random_queries(queries[:3], 5)) == 3


def test_plain_and_re_ranked_rank_lists_show_the_same_random_queries(small_set, tmp_path,
                                                                     monkeypatch):
    from reid_baseline.config import load_config
    from reid_baseline.evaluation import evaluator
    shown = {}
    for rerank, seed in (("False", 0), ("True", 1)):  # two different rankings
        names = []
        monkeypatch.setattr(visualize, "write_rank_lists",
                            lambda path, rows, names=names: names.append(os.path.basename(path)))
        ranking = _ranking(small_set, seed)
        evaluator.write_rank_pictures(load_config(None, ["TEST.RERANK", rerank]),
                                      str(tmp_path), ranking, visualize=8)
        shown[rerank] = {n[len("random_01_"):] for n in names if n.startswith("random_")}
        worst = {n[len("worst_01_"):] for n in names if n.startswith("worst_")}
        assert len(shown[rerank]) == 4 and len(worst) == 4 and not shown[rerank] & worst
        # the worst are the lowest APs of the queries not drawn at random
        ap = ranking.ranked["query_ap"]
        others = sorted(set(range(len(ap))) - {int(n[5:10]) for n in shown[rerank]},
                        key=lambda q: (ap[q], q))
        assert worst == {"query%05d.png" % q for q in others[:4]}
    assert shown["False"] == shown["True"]
