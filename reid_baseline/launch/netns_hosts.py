"""Hosts that are real network peers on one machine, for trying and testing multi-machine jobs
(the test suite and scripts/benchmark_dist.py --hosts use it): one Linux
network namespace per host, each with its own address (10.200.0.10, .11, ...) on a veth pair
to a bridge that has no address of its own, so the hosts reach each other only over that
network (no shared loopback, no route out), and an `ssh` stand-in that runs a command in the
named host's namespace with a clean environment (only what the command exports passes, as
through ssh). The stand-in runs the remote command in the ssh client's process group, as
`ssh -tt` hangs up the remote command when the connection ends."""
import os
import shutil
import signal
import subprocess

SSH_STAND_IN = r"""#!/bin/bash
# ssh [-t|-tt] [-o OPTION] [-p PORT] HOST [-p PORT] COMMAND: COMMAND in HOST's network namespace.
words=()
while [ $# -gt 0 ]; do
  case "$1" in -o|-p) shift 2 ;; -t|-tt) shift ;; *) words+=("$1"); shift ;; esac
done
host=${words[0]}
ns=$(awk -v h="$host" '$1 == h {print $2}' "$NETNS_HOSTS_FILE")
if [ -z "$ns" ]; then echo "ssh: Could not resolve hostname $host" >&2; exit 255; fi
ip netns exec "$ns" env -i PATH="$PATH" HOME="$HOME" LANG=C.UTF-8 bash -c "${words[*]:1}"
"""


def why_no_namespaces():
    """None when network namespaces can be made here, else the reason."""
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2) to create network namespaces"
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs as root)"
    name = "reid-probe-%d" % os.getpid()
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        return "`ip netns add` failed: %s" % made.stderr.strip()
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


def _ip(*args):
    subprocess.run(["ip"] + list(args), check=True, capture_output=True, text=True)


class NetnsHosts(object):
    """`count` namespaced hosts; `addresses[i]` is host i's address, `run_on(i, argv)` the
    argv that runs a command there, `env` the environment that puts the ssh stand-in first on
    PATH. Always call close() (it kills every process in the namespaces and deletes them)."""

    def __init__(self, count, folder, subnet="10.200.0"):
        tag = "%d" % (os.getpid() % 100000)
        self.bridge = "rbb%s" % tag
        self.namespaces = ["reid-%s-h%d" % (tag, i) for i in range(count)]
        self.veths = ["rbv%s-%d" % (tag, i) for i in range(count)]
        self.addresses = ["%s.%d" % (subnet, 10 + i) for i in range(count)]
        self._made = []
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            self._made.append(("link", self.bridge))
            _ip("link", "set", self.bridge, "up")
            for ns, veth, address in zip(self.namespaces, self.veths, self.addresses, strict=True):
                _ip("netns", "add", ns)
                self._made.append(("netns", ns))
                _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
                _ip("link", "set", veth, "master", self.bridge, "up")
                _ip("-n", ns, "addr", "add", address + "/24", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
                _ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise
        bin_dir = os.path.join(folder, "bin")
        os.makedirs(bin_dir, exist_ok=True)
        ssh = os.path.join(bin_dir, "ssh")
        with open(ssh, "w") as f:
            f.write(SSH_STAND_IN)
        os.chmod(ssh, 0o755)
        self.map_file = os.path.join(folder, "netns_hosts")
        with open(self.map_file, "w") as f:
            f.writelines("%s %s\n" % pair
                         for pair in zip(self.addresses, self.namespaces, strict=True))
        self.env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ["PATH"],
                        NETNS_HOSTS_FILE=self.map_file)

    def run_on(self, index, argv):
        """argv run in host `index`'s namespace."""
        return ["ip", "netns", "exec", self.namespaces[index]] + list(argv)

    def pids(self, index):
        """Pids of the processes in host `index`'s namespace."""
        out = subprocess.run(["ip", "netns", "pids", self.namespaces[index]], capture_output=True,
                             text=True).stdout
        return [int(p) for p in out.split()]

    def kill_host(self, index, sig=signal.SIGKILL):
        """Kill every process of host `index` (the host's processes die, its link stays up)."""
        for pid in self.pids(index):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def sockets(self, index):
        """`ss -tn` (TCP connections) seen in host `index`'s namespace."""
        return subprocess.run(self.run_on(index, ["ss", "-tnH"]), capture_output=True,
                              text=True).stdout

    def close(self):
        """Kill every process in the namespaces, delete them and the bridge."""
        for kind, name in reversed(self._made):
            if kind == "netns":
                for _ in range(3):
                    out = subprocess.run(["ip", "netns", "pids", name], capture_output=True,
                                         text=True).stdout.split()
                    for pid in out:
                        try:
                            os.kill(int(pid), signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                subprocess.run(["ip", "netns", "del", name], capture_output=True)
            else:
                subprocess.run(["ip", "link", "del", name], capture_output=True)
        self._made = []
