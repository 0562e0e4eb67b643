"""Progress of the long steps (feature extraction, distances and metrics, re-ranking,
indexing, preparing a set): a tqdm bar on a terminal; without one (a log file, a pipe, a
job scheduler), a line such as ``features gallery: 3200/19732 img (16%), 0:01:10 left`` at
least every LOG_INTERVAL seconds and at every further LOG_FRACTION of the work (at most one a
LOG_GAP seconds), and one when the step ends (if it took LOG_GAP seconds or more). The lines go to the package's logger when it
has a handler (train.log, during training) and to stderr otherwise.

tqdm writes nothing readable to a file (carriage returns), and its disable=None turns it off
there: this wrapper is the one place that chooses between the two.
"""
import datetime
import logging
import sys
import time

from tqdm import tqdm

LOG_INTERVAL = 30.0  # seconds between two lines at most
LOG_FRACTION = 0.1  # a line at every further tenth of the work...
LOG_GAP = 3.0  # ...unless the previous line is younger than this (no burst on a fast step)

logger = logging.getLogger("reid_baseline")


def on_terminal(stream=None):
    """Whether `stream` (default: stderr, where tqdm draws) is a terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def progress_bar(iterable=None, total=None, desc="", unit="it", initial=0, log_lines=True,
             **bar_options):
    """A progress bar over `iterable` (or updated by hand with update(n) up to `total`).

    On a terminal: tqdm(iterable, total=..., desc=..., unit=..., initial=..., leave=False,
    dynamic_ncols=True, **bar_options). Otherwise a LogProgress with the same iteration,
    update(), set_postfix() and close(), or with `log_lines` False (a step that logs lines of
    its own, as training does, or a part of a larger step whose lines cover it) a silent
    tqdm."""
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if on_terminal():
        options = dict(leave=False, dynamic_ncols=True)
        options.update(bar_options)
        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, **options)
    if not log_lines:
        return tqdm(iterable, total=total, disable=True)
    return LogProgress(iterable, total=total, desc=desc, unit=unit, initial=initial)


def format_seconds(seconds):
    """h:mm:ss of a number of seconds (rounded to whole seconds)."""
    return str(datetime.timedelta(seconds=int(round(max(seconds, 0.0)))))


def write_line(line):
    """One progress line: to the package's logger if it has a handler, else to stderr."""
    if logger.handlers:
        logger.info(line)
    else:
        print(line, file=sys.stderr, flush=True)


def _amount(value):
    return "%d" % value if float(value).is_integer() else "%.1f" % value


class LogProgress(object):
    """tqdm's interface (iteration, update, set_postfix, close, a context manager) writing
    lines instead of a bar: `desc`: done/total unit (percent), h:mm:ss left. A line when
    `interval` seconds have passed since the previous one, or when a further `fraction` of the
    total is done and `gap` seconds have passed; a last line with the time taken at close(),
    unless the step took less than `gap` seconds.
    `clock` (time.monotonic) and `write` (write_line) can be replaced, e.g. in tests."""

    def __init__(self, iterable=None, total=None, desc="", unit="it", initial=0,
                 interval=LOG_INTERVAL, fraction=LOG_FRACTION, gap=LOG_GAP, clock=None,
                 write=None):
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n = self._start_n = initial
        self.interval, self.fraction, self.gap = interval, fraction, gap
        self._clock = clock or time.monotonic
        self._write = write or write_line
        self._start = self._last = self._clock()
        self._last_n, self._postfix, self._closed = initial, "", False

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()  # not when the loop stops early: no "done" line for a failed step

    def __len__(self):
        return self.total

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        self.close(stopped=kind is not None)

    def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
        """Numbers shown after the count, as tqdm's set_postfix."""
        items = dict(ordered_dict or {}, **kwargs)
        self._postfix = ", ".join("%s=%s" % (k, v) for k, v in items.items())

    def set_postfix_str(self, s="", refresh=True):
        self._postfix = str(s)

    def update(self, n=1):
        """`n` more done; writes a line when one is due."""
        self.n += n
        if self.total and self.n >= self.total:
            return  # all done: close() says so
        now = self._clock()
        since = now - self._last
        step = self.fraction * self.total if self.total else None
        further = step is not None and self.n - self._last_n >= step
        if since >= self.interval or (further and since >= self.gap):
            self._log(now)

    def _log(self, now, done=False, stopped=False):
        scale, unit = (1e6, "MB") if self.unit == "B" else (1, self.unit)
        count = ("%s/%s %s (%d%%)" % (_amount(self.n / scale), _amount(self.total / scale), unit,
                                      100 * self.n // self.total) if self.total
                 else "%s %s" % (_amount(self.n / scale), unit))
        elapsed = now - self._start
        if done:
            tail = "%s after %s" % ("stopped" if stopped else "done", format_seconds(elapsed))
        elif self.total and self.n > self._start_n:
            rate = (self.n - self._start_n) / max(elapsed, 1e-9)
            tail = "%s left" % format_seconds((self.total - self.n) / rate)
        else:
            tail = "%s so far" % format_seconds(elapsed)
        extra = ", " + self._postfix if self._postfix else ""
        self._write("%s: %s, %s%s" % (self.desc, count, tail, extra))
        self._last, self._last_n = now, self.n

    def close(self, stopped=False):
        """The last line (count and time taken; `stopped`: the step failed); once."""
        if not self._closed:
            self._closed = True
            now = self._clock()
            if self._last > self._start or now - self._start >= self.gap:  # not a quick step
                self._log(now, done=True, stopped=stopped)
