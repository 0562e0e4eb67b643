"""reid_baseline.progress: a bar on a terminal, lines with a count and the time left in a log;
feature extraction and re-ranking report through it."""
import re

import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon
from tqdm import tqdm

from reid_baseline import progress

LINE = re.compile(r"^(?P<desc>[\w -]+): (?P<n>\d+)/(?P<total>\d+) (?P<unit>\w+) "
                  r"\((?P<percent>\d+)%\), (?:(?P<h>\d+):(?P<m>\d\d):(?P<s>\d\d) left|done "
                  r"after (?P<took>\d+:\d\d:\d\d))$")


class FakeClock(object):
    """time.monotonic that moves `step` seconds at every reading."""

    def __init__(self, step=1.0):
        self.now, self.step = -step, step

    def monotonic(self):
        self.now += self.step
        return self.now


@pytest.fixture
def lines(monkeypatch):
    """The progress lines written, with no terminal and a fake clock (1 s a reading)."""
    written = []
    monkeypatch.setattr(progress, "on_terminal", lambda stream=None: False)
    monkeypatch.setattr(progress, "write_line", written.append)
    monkeypatch.setattr(progress, "time", FakeClock())
    return written


def _parse(line):
    match = LINE.match(line)
    assert match, line
    return match


@pytest.mark.timeout(30)
def test_a_long_extraction_logs_counts_and_time_left_without_a_terminal(lines):
    from reid_baseline.evaluation.features import extract_features

    block = gluon.nn.HybridSequential()
    block.add(gluon.nn.Flatten(), gluon.nn.Dense(3))
    block.initialize(ctx=mx.cpu())
    images = np.zeros((40, 3, 4, 2), np.float32)
    batches = [(mx.nd.array(images[i:i + 4]), mx.nd.zeros(4)) for i in range(0, 40, 4)]
    feats = extract_features(block, batches, [mx.cpu()], desc="features gallery", num_images=40)
    assert feats.shape == (40, 3)
    # The clock reads 0 when the bar opens and 1 s more at each of the 10 batches (4 images,
    # a tenth of the work each): a tenth done is worth a line once LOG_GAP (3 s) has passed
    # since the previous one, so batches 3, 6 and 9 write one; the last batch leaves it to
    # the close (at 10 s) to say done.
    assert progress.LOG_GAP == 3 and progress.LOG_INTERVAL == 30
    assert len(lines) == 4, lines
    parsed = [_parse(line) for line in lines]
    assert {m["desc"] for m in parsed} == {"features gallery"}
    assert [int(m["n"]) for m in parsed] == [12, 24, 36, 40]
    assert {(m["total"], m["unit"]) for m in parsed} == {("40", "img")}
    assert [int(m["percent"]) for m in parsed] == [30, 60, 90, 100]
    for match, batch in zip(parsed[:3], (3, 6, 9), strict=True):
        # 4 images a second so far: (40 - 4 * batch) / 4 seconds left
        left = 3600 * int(match["h"]) + 60 * int(match["m"]) + int(match["s"])
        assert left == (40 - 4 * batch) / 4
    assert parsed[3]["took"] == "0:00:10"


@pytest.mark.timeout(30)
def test_lines_every_interval_when_tenths_come_slowly(lines):
    bar = progress.progress_bar(total=1000, desc="index", unit="img")
    for _ in range(90):  # 90 readings, 1 s apart: under a tenth done, so only the 30 s lines
        bar.update(1)
    bar.close()
    parsed = [_parse(line) for line in lines]
    assert [int(m["n"]) for m in parsed] == [30, 60, 90, 90]
    assert [m["took"] for m in parsed] == [None, None, None, "0:01:31"]
    # 30 images in 30 s: 970 s left; 60 in 60 s: 940 s left
    assert [(int(m["m"]), int(m["s"])) for m in parsed[:2]] == [(16, 10), (15, 40)]


@pytest.mark.timeout(30)
def test_a_quick_step_writes_nothing_and_a_failed_one_says_stopped(lines):
    with progress.progress_bar(total=5, desc="metrics", unit="steps") as bar:
        bar.update(5)  # 1 s: under LOG_GAP, nothing to say
    assert lines == []
    with pytest.raises(RuntimeError):
        with progress.progress_bar(total=10, desc="index", unit="img") as bar:
            for _ in range(3):
                bar.update(1)
            raise RuntimeError("full disk")
    # opened at 3 s; the third image at 6 s (3 s since the last line, 3 images in 3 s: 7 s
    # left); the failure at 7 s
    assert lines == ["index: 3/10 img (30%), 0:00:07 left", "index: 3/10 img (30%), stopped "
                     "after 0:00:04"]


@pytest.mark.timeout(30)
def test_a_terminal_gets_a_tqdm_bar_and_a_training_epoch_no_lines(monkeypatch):
    monkeypatch.setattr(progress, "on_terminal", lambda stream=None: True)
    bar = progress.progress_bar(range(3), desc="epoch 1/2", file=open("/dev/null", "w"))
    assert isinstance(bar, tqdm) and not bar.disable and bar.total == 3
    bar.close()
    monkeypatch.setattr(progress, "on_terminal", lambda stream=None: False)
    silent = progress.progress_bar(range(3), desc="epoch 1/2", log_lines=False)
    assert isinstance(silent, tqdm) and silent.disable and list(silent) == [0, 1, 2]


@pytest.mark.timeout(30)
def test_lines_go_to_stderr_or_to_the_package_log(monkeypatch, capsys):
    import logging
    monkeypatch.setattr(progress.logger, "handlers", [])
    progress.write_line("index: 1/2 img (50%), 0:00:01 left")
    assert capsys.readouterr().err == "index: 1/2 img (50%), 0:00:01 left\n"
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    monkeypatch.setattr(progress.logger, "handlers", [handler])
    monkeypatch.setattr(progress.logger, "level", progress.logger.level)  # restored after
    progress.logger.setLevel(logging.INFO)  # setLevel, not the attribute: it clears the cache
    progress.write_line("index: 2/2 img (100%), done after 0:00:02")
    assert [r.getMessage() for r in records] == ["index: 2/2 img (100%), done after 0:00:02"]
    assert capsys.readouterr().err == ""


@pytest.mark.timeout(60)
def test_re_ranking_counts_every_row(lines, monkeypatch):
    from reid_baseline.evaluation.rerank import re_ranking_features
    monkeypatch.setattr(progress, "time", FakeClock(step=10.0))  # every block worth a line

    rng = np.random.RandomState(0)
    q, g = rng.rand(7, 5).astype(np.float32), rng.rand(20, 5).astype(np.float32)
    re_ranking_features(q, g, k1=4, k2=2)
    parsed = [_parse(line) for line in lines]
    # neighbours of all 27 items, then the 7 queries' final rows, as one count
    assert parsed and {m["total"] for m in parsed} == {str(2 * 7 + 20)}
    assert parsed[-1]["n"] == parsed[-1]["total"] and parsed[-1]["took"]
