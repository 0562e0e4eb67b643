"""scripts/launch_local.py (reid_baseline/launch/local.py): a job of scheduler, servers and workers
on this machine that a signal to the launcher, a failed process or a hang stops completely.
The workers here are small scripts (no training): what is tested is the supervision."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import run_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = [sys.executable, os.path.join(ROOT, "scripts", "launch_local.py")]
# A worker that reports Ctrl-C (SIGINT: what train.py saves its checkpoint on) and otherwise
# waits, as a worker blocked in the kvstore does.
WORKER = """
import os, signal, sys, time
def stop(signum, frame):
    print("worker %d got %s" % (os.getpid(), signal.Signals(signum).name), flush=True)
    sys.exit(130)
signal.signal(signal.SIGINT, stop)
print("ready %d" % os.getpid(), flush=True)
time.sleep(600)
"""


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _start(workers, *options):
    return subprocess.Popen(LAUNCH + ["--workers", str(workers), "--grace", "5"] + list(options)
                            + ["--", sys.executable, "-c", WORKER], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=ROOT, start_new_session=True)


def _wait_ready(proc, workers):
    """Lines up to the last worker's "ready"; the pids of every process the launcher started."""
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if sum("] ready " in seen for seen in lines) == workers:
            break
    started = re.search(r"started (.*)", "".join(lines)).group(1)
    return lines, {name: int(pid) for name, pid in re.findall(r"(\w+ \d+) \(pid (\d+)\)", started)}


def _finish(proc):
    try:
        out, _ = proc.communicate(timeout=90)
        return out
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_launcher_stops_every_process_as_ctrl_c_does(sig):
    proc = _start(2, "--servers", "2")
    pids = {}
    try:
        lines, pids = _wait_ready(proc, 2)
        assert sorted(pids) == ["scheduler 0", "server 0", "server 1", "worker 0", "worker 1"]
        proc.send_signal(sig)
        out = _finish(proc)
        assert proc.returncode == 128 + sig
        assert "launch_local: got %s; stopping the job" % sig.name in out
        # The workers got SIGINT, as on Ctrl-C (train.py saves its interrupted checkpoint).
        for name in ("worker 0", "worker 1"):
            assert "[%s] worker %d got SIGINT" % (name, pids[name]) in out
    finally:
        _finish(proc)
        leftovers = [name for name, pid in pids.items() if _alive(pid)]
        for pid in pids.values():
            if _alive(pid):
                os.killpg(pid, signal.SIGKILL)
    assert pids and not leftovers  # no orphans


@pytest.mark.timeout(180)
def test_a_killed_worker_stops_the_job_and_is_named():
    proc = _start(2)
    pids = {}
    try:
        lines, pids = _wait_ready(proc, 2)
        os.kill(pids["worker 1"], signal.SIGKILL)
        out = _finish(proc)
        assert proc.returncode == 1
        assert ("launch_local: worker 1 (pid %d) was killed by signal SIGKILL; stopped the 3 other "
                "processes of the job (scheduler 0, server 0, worker 0)" % pids["worker 1"]) in out
    finally:
        _finish(proc)
    assert not [name for name, pid in pids.items() if _alive(pid)]


@pytest.mark.timeout(180)
@pytest.mark.slow
def test_the_hang_watchdog_stops_a_silent_job_and_says_when_each_worker_spoke():
    proc = _start(2, "--hang-timeout", "4")
    pids = {}
    try:
        lines, pids = _wait_ready(proc, 2)
        waited = time.time()
        out = _finish(proc)
        assert proc.returncode == 124
        assert time.time() - waited >= 3  # not before the timeout (the last line came just before)
        assert re.search(r"launch_local: no output from any worker for \d+ s \(--hang-timeout 4\): "
                         r"the job looks hung; stopping it \(last lines: worker 0 \d+ s ago, "
                         r"worker 1 \d+ s ago\)", out), out
    finally:
        _finish(proc)
    assert not [name for name, pid in pids.items() if _alive(pid)]


def test_bad_launch_options_are_one_line_errors(monkeypatch, capsys):
    code, out, err = run_script(monkeypatch, capsys, "scripts/launch_local.py", "--workers", "2",
                                "--hang-timeout", "-1", "--", sys.executable, "-c", "pass")
    assert code == 2 and err == "error: --grace and --hang-timeout must be >= 0 seconds (got 10 and -1)\n"
    code, out, err = run_script(monkeypatch, capsys, "scripts/launch_local.py", "--workers", "0",
                                "--", sys.executable)
    assert code == 2 and err.startswith("error: the worker and server counts must be >= 1")
    code, out, err = run_script(monkeypatch, capsys, "scripts/launch_local.py", "--workers", "1",
                                "--", "no-such-program-xyz")
    assert code == 2 and err == "error: command not found: no-such-program-xyz\n"
