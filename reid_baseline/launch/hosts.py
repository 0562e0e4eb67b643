"""Run a job on several machines with MXNet's own launcher (tools/launch.py --launcher ssh of the
mxnet wheel), made usable on Python 3.11 and supervised like a local job.

MXNet's launcher is run as it ships, in this process, with four changes made at run time
instead of editing the installed files: dmlc_tracker's `Thread.isAlive()` (removed in Python
3.9) is provided; the scheduler's address is the one asked for (`--scheduler-host`, or the
address of `--interface` on this machine) instead of a guess from the host name; `--env`
variables are exported to every host (MXNet's ssh launcher ignores its own --env); and every
process it starts (the local scheduler, one `ssh -tt HOST` per server and worker) runs under
launcher.Job, so the first one to fail, or a job silent for `--hang-timeout` seconds, stops the
whole job with a message naming the host. `-tt` gives each remote command a terminal, so the
remote processes are hung up when their ssh connection ends.
"""
import fcntl
import importlib.util
import ipaddress
import os
import re
import runpy
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

from ..errors import LaunchError
from .local import Job, check_job_shape, install_stop_handlers, restore_handlers, stop_exit_code

SIOCGIFADDR = 0x8915  # Linux ioctl: an interface's IPv4 address
# MXNet's ssh launcher writes `export NAME=VALUE;` unquoted inside a single-quoted command.
SAFE_VALUE = re.compile(r"^[A-Za-z0-9_./:,@+=%-]*$")
ALWAYS_EXPORTED = {"PYTHONUNBUFFERED": "1"}  # line by line output: the relay and the watchdog


def interface_address(name):
    """The IPv4 address of network interface `name` on this machine (LaunchError if none)."""
    # The standard library has no interface query; this is the one ioctl `ip addr` also uses.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            packed = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
        except OSError:
            raise LaunchError("--interface %s: no such network interface with an IPv4 address on "
                              "this machine (see `ip -4 addr`)" % name) from None
    return socket.inet_ntoa(packed[20:24])


def read_hosts(path):
    """The hosts of a hosts file (one `HOST[:SSH_PORT]` a line, as MXNet's ssh launcher reads)."""
    try:
        with open(path) as f:
            hosts = [line.split("slots=")[0].strip() for line in f if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise LaunchError("hosts file %s cannot be read (%s)"
                          % (path, getattr(exc, "strerror", exc))) from exc
    if not hosts:
        raise LaunchError("hosts file %s lists no host: write one host (name or address) a line"
                          % path)
    for host in hosts:
        if not re.match(r"^[A-Za-z0-9_.-]+(:\d+)?$", host):
            raise LaunchError("hosts file %s: %r is not HOST or HOST:PORT" % (path, host))
    return hosts


def exported_env(names, environ=None):
    """NAME=VALUE pairs for --env: NAME takes this shell's value, NAME=VALUE (or NAME:VALUE, as
    MXNet's --env-worker) a given one; values must survive MXNet's unquoted `export`."""
    environ = os.environ if environ is None else environ
    env = dict(ALWAYS_EXPORTED)
    for item in names:
        name, sep, value = re.match(r"^([^=:]*)([=:]?)(.*)$", item).groups()
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
            raise LaunchError("--env %s: expected NAME or NAME=VALUE" % item)
        if not sep:
            if name not in environ:
                raise LaunchError("--env %s: %s is not set in this shell (give --env %s=VALUE)"
                                  % (item, name, name))
            value = environ[name]
        if not SAFE_VALUE.match(value):
            raise LaunchError("--env %s: the value %r holds characters MXNet's ssh launcher cannot "
                              "pass (it writes export %s=VALUE unquoted); use letters, digits and "
                              "_./:,@+=%%-" % (item, value, name))
        env[name] = value
    return env


def scheduler_address(scheduler_host=None, interface=None):
    """Where the workers reach the scheduler: --scheduler-host, else --interface's address,
    else None (MXNet's guess from this machine's name)."""
    if scheduler_host:
        try:
            ipaddress.ip_address(scheduler_host)
        except ValueError:
            try:
                socket.getaddrinfo(scheduler_host, None)
            except socket.gaierror:
                raise LaunchError("--scheduler-host %s is neither an address nor a name this "
                                  "machine resolves" % scheduler_host) from None
        return scheduler_host
    return interface_address(interface) if interface else None


def mxnet_launch_py():
    """Path of tools/launch.py in the installed mxnet wheel (found without importing mxnet: an
    import with DMLC_ROLE set would turn this process into a server)."""
    spec = importlib.util.find_spec("mxnet")
    path = os.path.join(os.path.dirname(spec.origin), "tools", "launch.py") if spec else ""
    if not os.path.isfile(path):
        raise LaunchError("MXNet's launcher tools/launch.py is not in the installed mxnet (%s)"
                          % (path or "mxnet not found"))
    return path


class _ThreadWithIsAlive(threading.Thread):
    """dmlc_tracker's Thread: isAlive() is the is_alive() Python 3.9 kept."""

    def isAlive(self):  # noqa: N802 (dmlc_tracker's name)
        return self.is_alive()


class _SupervisedSubprocess(object):
    """Stands in for the `subprocess` module inside dmlc_tracker: each command it runs becomes a
    process of `job`, named after its role and host, and never raises in dmlc's threads (the
    job reports failures)."""

    CalledProcessError = subprocess.CalledProcessError

    def __init__(self, job):
        self.job = job
        self._counts, self._lock = {}, threading.Lock()

    def check_call(self, cmd, shell=False, env=None, executable=None, **kwargs):
        if not isinstance(cmd, str):
            cmd = " ".join(cmd)
        if (env or {}).get("DMLC_ROLE") == "scheduler":
            role, host = "scheduler", env.get("DMLC_PS_ROOT_URI", "?")
            env = dict(env, **ALWAYS_EXPORTED)
        else:
            role = (re.search(r"export DMLC_ROLE=(\w+);", cmd) or [None, "other"])[1]
            host = (re.search(r"export DMLC_NODE_HOST=([^;\s]+);", cmd) or [None, "?"])[1]
            cmd = re.sub(r"^ssh ", "ssh -tt ", cmd)  # a terminal: hung up when the connection ends
        with self._lock:  # names say role and host; a second one of both gets a number
            count = self._counts[role, host] = self._counts.get((role, host), 0) + 1
        name = "%s%s on %s" % (role, " %d" % count if count > 1 else "", host)
        proc = self.job.start(name, role, ["/bin/bash", "-c", cmd], env)
        self.job.say("started %s (pid %d)" % (proc.name, proc.popen.pid))
        proc.popen.wait()
        proc.finish_output()
        return 0


def _patch_dmlc_tracker(job, address, env):
    """Apply the run-time changes to MXNet's launcher (module docstring); returns an undo."""
    import dmlc_tracker.ssh as ssh
    import dmlc_tracker.tracker as tracker
    supervised = _SupervisedSubprocess(job)
    saved = [(tracker, "Thread", tracker.Thread), (ssh, "Thread", ssh.Thread),
             (tracker, "subprocess", tracker.subprocess), (ssh, "subprocess", ssh.subprocess),
             (ssh, "get_env", ssh.get_env), (tracker, "get_host_ip", tracker.get_host_ip)]
    tracker.Thread = ssh.Thread = _ThreadWithIsAlive
    tracker.subprocess = ssh.subprocess = supervised
    original_get_env = ssh.get_env
    ssh.get_env = lambda pass_envs: original_get_env(dict(env, **pass_envs))
    if address:
        tracker.get_host_ip = lambda host_ip=None: address

    def undo():
        for module, name, value in saved:
            setattr(module, name, value)
    return undo


def launch_hosts(command, hostfile, num_workers, num_servers=None, interface=None,
                 scheduler_host=None, env_names=(), grace=10.0, hang_timeout=0.0, out=None,
                 poll=0.5):
    """Run the shell command `command` (a string, run on each host by ssh) as `num_workers`
    workers with `num_servers` servers (default: as many as workers) spread over the hosts of
    `hostfile` in turn, the scheduler on this machine, through MXNet's tools/launch.py. Returns
    the exit code: 0 when every process succeeded, else the first failure's (1 for a killed
    process), 124 when no worker printed a line for `hang_timeout` seconds (0: no limit),
    128 + N after signal N (SIGINT, SIGTERM, SIGHUP)."""
    num_servers = num_workers if num_servers is None else num_servers
    check_job_shape(num_workers, num_servers, grace, hang_timeout)
    if not command.strip():
        raise LaunchError("no command to run: launch_hosts.py -H hosts -n 2 \"cd $PWD && "
                          ".venv/bin/python train.py ...\"")
    if "'" in command:
        raise LaunchError("the command may not contain a single quote: MXNet's ssh launcher "
                          "wraps it in single quotes (use double quotes)")
    hosts = read_hosts(hostfile)
    env = exported_env(env_names)
    address = scheduler_address(scheduler_host, interface)
    if interface:
        env["DMLC_INTERFACE"] = interface  # ps-lite's interface when DMLC_NODE_HOST is empty
    launch_py = mxnet_launch_py()
    job = Job("launch_hosts", out, grace, hang_timeout)
    job.say("%d worker%s, %d server%s on %s; scheduler on this machine at %s"
            % (num_workers, "s"[:num_workers > 1], num_servers, "s"[:num_servers > 1],
               ", ".join(hosts), address or "MXNet's guess of its address"))
    undo = _patch_dmlc_tracker(job, address, env)
    result, done = {}, threading.Event()
    watcher = threading.Thread(target=_watch, args=(job, done, result, poll), daemon=True)
    previous = install_stop_handlers()
    argv = sys.argv
    try:
        watcher.start()
        sys.argv = [launch_py, "--launcher", "ssh", "-H", hostfile, "-n", str(num_workers), "-s",
                    str(num_servers), command]
        runpy.run_path(launch_py, run_name="mxnet_launch")["main"]()
        done.set()
        watcher.join()
        if "code" in result:
            return result["code"]
        job.wait_for_rest()  # the scheduler ended: the servers and workers end with it
        code = job.check()
        return 0 if code is None else code
    except KeyboardInterrupt as exc:
        job.say("%s; stopping the job" % ("interrupted" if not hasattr(exc, "signum")
                                          else "got %s" % signal.Signals(exc.signum).name))
        job.stop(signal.SIGINT)
        return stop_exit_code(exc)
    finally:
        done.set()
        sys.argv = argv
        job.stop(signal.SIGTERM)
        restore_handlers(previous)
        undo()


def _watch(job, done, result, poll):
    """Supervise the job while MXNet's launcher waits for its scheduler: a failure or a hang
    stops every process, the scheduler included, which ends the launcher's wait."""
    while not done.is_set():
        code = job.check()
        if code is not None:
            result["code"] = code
            return
        time.sleep(poll)
