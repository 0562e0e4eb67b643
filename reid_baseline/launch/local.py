"""Start a distributed MXNet job on this machine: a scheduler, servers and workers, as MXNet's
local launcher does (dmlc_tracker/local.py), and stop all of it when one process fails, when
the job stops making progress, or when the launcher itself is told to stop.

dmlc_tracker/local.py is not reused: under Python >= 3.9 it crashes right after starting the
scheduler (Thread.isAlive), and a worker that fails only raises in a thread of it, leaving the
job waiting forever. Here every process runs in its own process group (its DataLoader workers
included), its output is relayed line by line with a [name] prefix, and the first one to exit
non-zero, or to be killed, stops the others, with a report naming it. `Job` is that supervision,
shared with the multi-machine wrapper (hosts.py).
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

from ..errors import LaunchError

# Scheduler and servers: importing mxnet with DMLC_ROLE scheduler/server runs that role and exits.
ROLE_COMMAND = [sys.executable, "-c", "import mxnet"]
TAIL_LINES = 20  # lines of a failed process's output shown in the report
HANG_EXIT_CODE = 124  # the job was stopped by the hang watchdog (as timeout(1) exits)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # each stops the job as Ctrl-C


class JobProcess(object):
    """One process of a job, in its own process group, its output relayed to `out` with a
    [name] prefix, its last lines kept and the time of its last line noted."""

    def __init__(self, name, role, command, env, out):
        self.name, self.role = name, role
        self.tail = collections.deque(maxlen=TAIL_LINES)
        self.last_output = time.time()
        self.popen = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True)  # own group: stop() reaches its children
        self._relay = threading.Thread(target=self._read, args=(out,), daemon=True)
        self._relay.start()

    def _read(self, out):
        for raw in iter(self.popen.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self.last_output = time.time()
            self.tail.append(line)
            out.write("[%s] %s\n" % (self.name, line))
            out.flush()

    def describe_exit(self):
        """How the process ended: its exit code or the signal that killed it."""
        code = self.popen.returncode
        if code < 0:
            return "was killed by signal %s" % signal.Signals(-code).name
        return "exited with code %d" % code

    def signal(self, sig):
        """Send `sig` to the process's group (nothing if it is gone)."""
        try:
            os.killpg(self.popen.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass  # already gone

    def finish_output(self, timeout=2.0):
        """Wait (bounded) until the last of its output has been relayed."""
        self._relay.join(timeout)


class Job(object):
    """The processes of one job and the rules that end it: the first process to fail stops the
    others; with `hang_timeout` > 0, `hang_timeout` seconds without a line from any worker stop
    it too. Processes may be added from other threads (MXNet's launcher starts them in threads)."""

    def __init__(self, label, out=None, grace=10.0, hang_timeout=0.0):
        self.label, self.out, self.grace, self.hang_timeout = label, out or sys.stdout, grace, hang_timeout
        self.procs, self.stopped = [], False
        self.started_at = time.time()
        self._lock = threading.Lock()

    def start(self, name, role, command, env):
        """Start one process of the job; returns its JobProcess."""
        with self._lock:
            proc = JobProcess(name, role, command, env, self.out)
            self.procs.append(proc)
            if self.stopped:  # started by a launcher thread after the job was stopped
                proc.signal(signal.SIGKILL)
            return proc

    def say(self, text):
        """One line of the launcher's own output."""
        self.out.write("%s: %s\n" % (self.label, text))
        self.out.flush()

    def check(self):
        """None while the job runs as it should; else the job's exit code, after reporting the
        failed process (or the hang) and stopping every other process."""
        with self._lock:
            procs = list(self.procs)
        failed = [p for p in procs if p.popen.poll() not in (None, 0)]
        if failed:
            return self._report_failure(failed[0], procs)
        if self.hang_timeout > 0:
            workers = [p for p in procs if p.role == "worker" and p.popen.poll() is None]
            if workers:
                last = max([self.started_at] + [p.last_output for p in workers])
                if time.time() - last > self.hang_timeout:
                    return self._report_hang(workers)
        return None

    def _report_failure(self, failed, procs):
        others = [p for p in procs if p is not failed and p.popen.poll() is None]
        self.stop(signal.SIGTERM)
        failed.finish_output()
        self.say("%s (pid %d) %s; stopped the %d other processes of the job (%s)"
                 % (failed.name, failed.popen.pid, failed.describe_exit(), len(others),
                    ", ".join(p.name for p in others) or "none left"))
        if failed.tail:
            self.out.write("last lines of %s:\n%s\n" % (failed.name, "\n".join(
                "  " + line for line in failed.tail)))
            self.out.flush()
        return failed.popen.returncode if failed.popen.returncode > 0 else 1

    def _report_hang(self, workers):
        now = time.time()
        heard = ", ".join("%s %.0f s ago" % (p.name, now - p.last_output) if p.tail else
                          "%s never" % p.name for p in workers)
        self.say("no output from any worker for %.0f s (--hang-timeout %g): the job looks hung; "
                 "stopping it (last lines: %s)"
                 % (now - max(p.last_output for p in workers), self.hang_timeout, heard))
        self.stop(signal.SIGTERM)
        return HANG_EXIT_CODE

    def stop(self, sig=signal.SIGTERM):
        """Send `sig` to the process groups still running, then SIGKILL whatever is left after
        the grace period (a worker blocked in MXNet waits for the others and may never react)."""
        with self._lock:
            self.stopped = True
            procs = list(self.procs)
        running = [p for p in procs if p.popen.poll() is None]
        for p in running:
            p.signal(sig)
        deadline = time.time() + self.grace
        while time.time() < deadline and any(p.popen.poll() is None for p in running):
            time.sleep(0.1)
        for p in procs:  # also the groups whose leader is gone (its DataLoader workers)
            p.signal(signal.SIGKILL)
            p.popen.wait()
            p.finish_output()

    def wait_for_rest(self, poll=0.2):
        """After the workers succeeded: give the servers and the scheduler (told to stop by the
        workers' exit) the grace period to end."""
        deadline = time.time() + self.grace
        while time.time() < deadline and any(p.popen.poll() is None for p in self.procs):
            time.sleep(poll)


class StopRequested(KeyboardInterrupt):
    """The launcher got SIGINT, SIGTERM or SIGHUP: stop the job as after Ctrl-C."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


def _raise_stop(signum, frame):
    raise StopRequested(signum)


def install_stop_handlers():
    """Make SIGTERM (e.g. `timeout`, a scheduler's kill) and SIGHUP (the terminal closed) stop the
    job as Ctrl-C does, never orphaning it; returns the previous handlers for
    restore_handlers. Does nothing outside the main thread (Python allows handlers there only)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, _raise_stop) for sig in STOP_SIGNALS}


def restore_handlers(previous):
    """Put back the handlers install_stop_handlers replaced."""
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def stop_exit_code(exc):
    """The launcher's exit code after a stop request: 128 + the signal number (130 for Ctrl-C)."""
    return 128 + getattr(exc, "signum", signal.SIGINT)


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


def add_job_options(parser, command_help):
    """The options both launch commands share: --grace, --hang-timeout and the command."""
    parser.add_argument("--grace", type=float, default=10.0,
                        help="seconds a process gets to stop before it is killed (default 10)")
    parser.add_argument("--hang-timeout", type=float, default=0.0, metavar="SECONDS",
                        help="stop the job when no worker prints a line for this long "
                        "(default 0: wait forever)")
    parser.add_argument("command", nargs="...", help=command_help)


def job_command(args):
    """The command words after an optional "--"."""
    return args.command[1:] if args.command[:1] == ["--"] else args.command


def check_job_shape(num_workers, num_servers, grace, hang_timeout):
    """LaunchError unless the counts are >= 1 and the times are >= 0."""
    if num_workers < 1 or num_servers < 1:
        raise LaunchError("the worker and server counts must be >= 1 (got %d and %d)"
                          % (num_workers, num_servers))
    if grace < 0 or hang_timeout < 0:
        raise LaunchError("--grace and --hang-timeout must be >= 0 seconds (got %g and %g)"
                          % (grace, hang_timeout))


def launch_local(command, num_workers, num_servers=1, out=None, grace=10.0, poll=0.2,
                 hang_timeout=0.0):
    """Run `command` (a list) as `num_workers` workers of a job with `num_servers` servers and
    a scheduler on this machine; returns the exit code for the launcher: 0 when every worker
    succeeded, else the first failure's code (1 for a killed process), 124 when no worker
    printed a line for `hang_timeout` seconds (0: no limit), 128 + N after signal N (130 after
    Ctrl-C; SIGTERM and SIGHUP stop the job the same way).

    On a failure, every other process gets SIGTERM, then SIGKILL after `grace` seconds, and
    `out` gets a report naming the failed process with the last lines of its output."""
    if not command:
        raise LaunchError("no command to run: launch_local.py --workers 2 -- python train.py ...")
    if shutil.which(command[0]) is None:
        raise LaunchError("command not found: %s" % command[0])
    check_job_shape(num_workers, num_servers, grace, hang_timeout)
    env = job_env(num_workers, num_servers, free_port())
    job = Job("launch_local", out, grace, hang_timeout)
    previous = install_stop_handlers()
    try:
        for role, count, cmd in (("scheduler", 1, ROLE_COMMAND), ("server", num_servers, ROLE_COMMAND),
                                 ("worker", num_workers, list(command))):
            for index in range(count):
                job.start("%s %d" % (role, index), role, cmd, dict(env, DMLC_ROLE=role))
        job.say("started %s" % ", ".join("%s (pid %d)" % (p.name, p.popen.pid) for p in job.procs))
        return _supervise(job, poll)
    except KeyboardInterrupt as exc:
        # A stop request reaches only this process (the job runs in other process groups): pass
        # it on as SIGINT, so train.py can save its interrupted checkpoint, then make sure
        # everything stops.
        job.say("%s; stopping the job" % ("interrupted" if not isinstance(exc, StopRequested)
                                          else "got %s" % signal.Signals(exc.signum).name))
        job.stop(signal.SIGINT)
        return stop_exit_code(exc)
    finally:
        job.stop(signal.SIGTERM)
        restore_handlers(previous)


def _supervise(job, poll):
    """Wait for the workers; returns the job's exit code."""
    workers = [p for p in job.procs if p.role == "worker"]
    while True:
        code = job.check()
        if code is not None:
            return code
        if all(p.popen.returncode == 0 for p in workers):
            job.wait_for_rest(poll)
            return 0
        time.sleep(poll)
