"""Start a distributed MXNet job on this machine: a scheduler, servers and workers, as MXNet's
local launcher does (dmlc_tracker/local.py), and stop all of it when one process fails.

dmlc_tracker/local.py is not reused: under Python >= 3.9 it crashes right after starting the
scheduler (Thread.isAlive), and a worker that fails only raises in a thread of it, leaving the
job waiting forever. Here every process runs in its own process group (its DataLoader workers
included), its output is relayed line by line with a [role index] prefix, and the first one to
exit non-zero, or to be killed, stops the others, with a report naming it.
"""
import collections
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

from .errors import LaunchError

# Scheduler and servers: importing mxnet with DMLC_ROLE scheduler/server runs that role and exits.
ROLE_COMMAND = [sys.executable, "-c", "import mxnet"]
TAIL_LINES = 20  # lines of a failed process's output shown in the report



class _Process(object):
    """One process of the job, its output relayed to `out` and its last lines kept."""

    def __init__(self, role, index, command, env, out):
        self.role, self.index, self.name = role, index, "%s %d" % (role, index)
        self.tail = collections.deque(maxlen=TAIL_LINES)
        self.popen = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True)  # own group: stop() reaches its children
        self._relay = threading.Thread(target=self._read, args=(out,), daemon=True)
        self._relay.start()

    def _read(self, out):
        for raw in iter(self.popen.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self.tail.append(line)
            out.write("[%s] %s\n" % (self.name, line))
            out.flush()

    def describe_exit(self):
        code = self.popen.returncode
        if code < 0:
            return "was killed by signal %s" % signal.Signals(-code).name
        return "exited with code %d" % code

    def signal(self, sig):
        try:
            os.killpg(self.popen.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass  # already gone

    def finish_output(self, timeout=2.0):
        self._relay.join(timeout)


def free_port():
    """A TCP port nobody listens on now, for the scheduler (DMLC_PS_ROOT_PORT)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def job_env(num_workers, num_servers, port, base=None):
    """The DMLC_* environment shared by every process of a job on this machine (loopback)."""
    env = dict(os.environ if base is None else base)
    env.update({"DMLC_PS_ROOT_URI": "127.0.0.1", "DMLC_PS_ROOT_PORT": str(port),
                "DMLC_NODE_HOST": "127.0.0.1", "DMLC_NUM_WORKER": str(num_workers),
                "DMLC_NUM_SERVER": str(num_servers), "PYTHONUNBUFFERED": "1"})
    return env


def launch_local(command, num_workers, num_servers=1, out=None, grace=10.0, poll=0.2):
    """Run `command` (a list) as `num_workers` workers of a job with `num_servers` servers and
    a scheduler on this machine; returns the exit code for the launcher: 0 when every worker
    succeeded, else the first failure's code (1 for a killed process), 130 after Ctrl-C.

    On a failure, every other process gets SIGTERM, then SIGKILL after `grace` seconds, and
    `out` gets a report naming the failed process with the last lines of its output."""
    out = out or sys.stdout
    if not command:
        raise LaunchError("no command to run: launch_local.py --workers 2 -- python train.py ...")
    if shutil.which(command[0]) is None:
        raise LaunchError("command not found: %s" % command[0])
    if num_workers < 1 or num_servers < 1:
        raise LaunchError("--workers and --servers must be >= 1 (got %d and %d)"
                          % (num_workers, num_servers))
    env = job_env(num_workers, num_servers, free_port())
    procs = []
    previous = signal.signal(signal.SIGTERM, _terminated)  # e.g. `timeout`: never orphan the job
    try:
        for role, count, cmd in (("scheduler", 1, ROLE_COMMAND), ("server", num_servers, ROLE_COMMAND),
                                 ("worker", num_workers, list(command))):
            for index in range(count):
                procs.append(_Process(role, index, cmd, dict(env, DMLC_ROLE=role), out))
        out.write("launch_local: started %s\n" % ", ".join(
            "%s (pid %d)" % (p.name, p.popen.pid) for p in procs))
        out.flush()
        return _supervise(procs, out, grace, poll)
    except KeyboardInterrupt:
        # Ctrl-C reaches only this process (the job runs in other process groups): pass it on,
        # so train.py can save its interrupted checkpoint, then make sure everything stops.
        out.write("launch_local: interrupted; stopping the job\n")
        _stop(procs, signal.SIGINT, grace)
        return 130
    finally:
        _stop(procs, signal.SIGTERM, grace)
        signal.signal(signal.SIGTERM, previous)


def _terminated(signum, frame):
    raise KeyboardInterrupt  # stop the job as after Ctrl-C


def _supervise(procs, out, grace, poll):
    """Wait for the workers; returns the job's exit code."""
    workers = [p for p in procs if p.role == "worker"]
    while True:
        failed = [p for p in procs if p.popen.poll() not in (None, 0)]
        if failed:
            return _report_failure(failed[0], procs, out, grace)
        if all(p.popen.returncode == 0 for p in workers):
            # The workers' exit tells the servers and the scheduler to stop: give them time.
            deadline = time.time() + grace
            while time.time() < deadline and any(p.popen.poll() is None for p in procs):
                time.sleep(poll)
            return 0
        time.sleep(poll)


def _report_failure(failed, procs, out, grace):
    others = [p for p in procs if p is not failed and p.popen.poll() is None]
    _stop(others, signal.SIGTERM, grace)
    failed.finish_output()
    out.write("launch_local: %s (pid %d) %s; stopped the %d other processes of the job (%s)\n"
              % (failed.name, failed.popen.pid, failed.describe_exit(), len(others),
                 ", ".join(p.name for p in others) or "none left"))
    if failed.tail:
        out.write("last lines of %s:\n%s\n" % (failed.name, "\n".join(
            "  " + line for line in failed.tail)))
    out.flush()
    return failed.popen.returncode if failed.popen.returncode > 0 else 1


def _stop(procs, sig, grace):
    """Send `sig` to the process groups still running, then SIGKILL whatever is left after
    `grace` seconds (a worker blocked in MXNet waits for the others and may never react)."""
    running = [p for p in procs if p.popen.poll() is None]
    for p in running:
        p.signal(sig)
    deadline = time.time() + grace
    while time.time() < deadline and any(p.popen.poll() is None for p in running):
        time.sleep(0.1)
    for p in procs:  # also the groups whose leader is gone (its DataLoader workers)
        p.signal(signal.SIGKILL)
        p.popen.wait()
        p.finish_output()
