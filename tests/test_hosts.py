"""scripts/launch_hosts.py (reid_baseline/launch/hosts.py): MXNet's own tools/launch.py --launcher ssh,
run against hosts that are network namespaces of this machine (reid_baseline/launch/netns_hosts.py): the
launcher and scheduler on host 0, servers and workers on hosts 1 and 2, every process talking
over the hosts' 10.200.0.x addresses. The namespace tests need root and `ip` (CI has both)."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import mxnet as mx
import numpy as np
import pytest

from conftest import TINY_OVERRIDES, run_script
from reid_baseline.errors import LaunchError
from reid_baseline.fileio import LOCK_FILE, OUTPUTS_MANIFEST, written_outputs
from reid_baseline.launch.hosts import (
    exported_env,
    interface_address,
    launch_hosts,
    read_hosts,
    scheduler_address,
)
from reid_baseline.launch.netns_hosts import NetnsHosts, why_no_namespaces

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable
NO_NAMESPACES = why_no_namespaces()
needs_namespaces = pytest.mark.skipif(NO_NAMESPACES is not None, reason=str(NO_NAMESPACES))
# Each host's processes run with one OpenMP thread: the hosts share the machine's cores.
ENV = ["--env", "OMP_NUM_THREADS=1"]


# --- the wrapper's options (no job started) ---------------------------------------------------

def test_exported_variables_take_this_shells_value_or_the_given_one():
    env = exported_env(["OMP_NUM_THREADS", "KMP_AFFINITY=granularity=fine,compact", "A_B:3"],
                       {"OMP_NUM_THREADS": "4"})
    assert env == {"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "4",
                   "KMP_AFFINITY": "granularity=fine,compact", "A_B": "3"}
    with pytest.raises(LaunchError, match="--env MISSING: MISSING is not set in this shell"):
        exported_env(["MISSING"], {})
    with pytest.raises(LaunchError, match="--env X=a b: the value 'a b' holds characters"):
        exported_env(["X=a b"], {})
    with pytest.raises(LaunchError, match="--env 1X: expected NAME or NAME=VALUE"):
        exported_env(["1X"], {})


def test_hosts_file_and_interface_are_checked(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("10.0.0.11\n\nnode2:2222\n10.0.0.13 slots=4\n")
    assert read_hosts(str(hosts)) == ["10.0.0.11", "node2:2222", "10.0.0.13"]
    hosts.write_text("\n")
    with pytest.raises(LaunchError, match="hosts file %s lists no host" % re.escape(str(hosts))):
        read_hosts(str(hosts))
    with pytest.raises(LaunchError, match="hosts file .*nothere cannot be read"):
        read_hosts(str(tmp_path / "nothere"))
    assert interface_address("lo") == "127.0.0.1"
    assert scheduler_address(None, "lo") == "127.0.0.1" and scheduler_address("10.0.0.5", "lo") == "10.0.0.5"
    assert scheduler_address(None, None) is None  # MXNet's own guess
    with pytest.raises(LaunchError, match="--scheduler-host no.such.host.invalid is neither"):
        scheduler_address("no.such.host.invalid")
    with pytest.raises(LaunchError, match="--interface nosuch0: no such network interface"):
        interface_address("nosuch0")
    hosts.write_text("10.0.0.11\n")
    with pytest.raises(LaunchError, match="may not contain a single quote"):
        launch_hosts("echo 'x'", str(hosts), 1)


def test_launch_hosts_script_errors_are_one_line(monkeypatch, capsys, tmp_path):
    code, out, err = run_script(monkeypatch, capsys, "scripts/launch_hosts.py", "-H",
                                tmp_path / "none", "-n", "2", "true")
    assert code == 2 and err.startswith("error: hosts file %s cannot be read" % (tmp_path / "none"))
    assert len(err.splitlines()) == 1


LOCAL_SSH = r"""#!/bin/bash
# ssh [-tt] [-o OPTION] [-p PORT] HOST COMMAND: COMMAND on this machine, with a clean environment.
words=()
while [ $# -gt 0 ]; do
  case "$1" in -o|-p) shift 2 ;; -t|-tt) shift ;; *) words+=("$1"); shift ;; esac
done
exec env -i PATH="$PATH" HOME="$HOME" bash -c "${words[*]:1}"
"""
KV_WORKER = """import os
import mxnet as mx
kv = mx.kv.create("dist_sync")
kv.init(3, mx.nd.zeros((2, 3)))
kv.push(3, mx.nd.ones((2, 3)) * (kv.rank + 1))
out = mx.nd.zeros((2, 3))
kv.pull(3, out=out)
print("rank %d of %d: sum %g, OMP_NUM_THREADS %s, DMLC_PS_ROOT_URI %s" % (
    kv.rank, kv.num_workers, out.asnumpy()[0, 0], os.environ.get("OMP_NUM_THREADS"),
    os.environ["DMLC_PS_ROOT_URI"]))
"""


@pytest.mark.timeout(240)
@pytest.mark.slow
def test_mxnets_ssh_launcher_runs_a_job_with_no_patch_installed(monkeypatch, tmp_path):
    """Loopback "hosts" through an ssh stand-in (no root needed): MXNet's tools/launch.py runs
    on Python 3.11, the scheduler address and --env reach the workers through a clean
    environment, and nothing of the run-time changes stays in dmlc_tracker afterwards."""
    import io
    import threading

    import dmlc_tracker.ssh
    import dmlc_tracker.tracker
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "ssh").write_text(LOCAL_SSH)
    (tmp_path / "bin" / "ssh").chmod(0o755)
    (tmp_path / "worker.py").write_text(KV_WORKER)
    (tmp_path / "hosts").write_text("127.0.0.1\n")
    monkeypatch.setenv("PATH", "%s%s%s" % (tmp_path / "bin", os.pathsep, os.environ["PATH"]))
    out = io.StringIO()
    code = launch_hosts("cd %s && %s worker.py" % (tmp_path, PYTHON), str(tmp_path / "hosts"), 2,
                        1, scheduler_host="127.0.0.1", env_names=["OMP_NUM_THREADS=1"], out=out,
                        grace=5)
    text = out.getvalue()
    assert code == 0, text
    for rank in (0, 1):
        assert ("rank %d of 2: sum 3, OMP_NUM_THREADS 1, DMLC_PS_ROOT_URI 127.0.0.1" % rank) in text
    assert "launch_hosts: started scheduler on 127.0.0.1" in text
    assert "launch_hosts: started worker 2 on 127.0.0.1" in text  # the second worker of that host
    assert dmlc_tracker.tracker.Thread is threading.Thread and dmlc_tracker.ssh.Thread is threading.Thread
    assert not hasattr(threading.Thread, "isAlive")  # the fix is dmlc_tracker's own, for the run


# --- jobs across namespaced hosts ---------------------------------------------------------------

@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    """Three namespaced hosts: 0 launches (scheduler), 1 and 2 are in the hosts file."""
    if NO_NAMESPACES:
        pytest.skip(NO_NAMESPACES)
    folder = str(tmp_path_factory.mktemp("netns"))
    made = NetnsHosts(3, folder)
    try:
        made.hostfile = os.path.join(folder, "hosts")
        with open(made.hostfile, "w") as f:
            f.write("%s\n%s\n" % (made.addresses[1], made.addresses[2]))
        yield made
    finally:
        made.close()


def _shell(words):
    """A shell command line of `words` (double quotes: MXNet's ssh launcher uses single ones)."""
    return " ".join('"%s"' % w if not w or re.search(r"[^\w./:=,-]", w) else w for w in words)


def _train_command(overrides, resume=False):
    return "cd %s && %s" % (ROOT, _shell([PYTHON, "train.py"] + (["--resume"] if resume else [])
                                         + overrides))


def _launch(hosts, command, servers, *options):
    """The multi-machine command of docs/DISTRIBUTED.md, run on host 0."""
    argv = [PYTHON, os.path.join(ROOT, "scripts", "launch_hosts.py"), "-H", hosts.hostfile,
            "-n", "2", "-s", str(servers), "--interface", "eth0"] + ENV + list(options) + [command]
    return subprocess.Popen(hosts.run_on(0, argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=ROOT, env=hosts.env, start_new_session=True)


def _finish(proc, hosts, timeout):
    """The job's output; afterwards nothing of it runs on any host (the test fails if the
    launcher left something, after killing it)."""
    try:
        if proc.stdout.closed:  # finished by an earlier call
            return ""
        out, _ = proc.communicate(timeout=timeout)
        return out
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        time.sleep(1)
        leftovers = {i: hosts.pids(i) for i in range(3) if hosts.pids(i)}
        for i in leftovers:
            hosts.kill_host(i)
        assert not leftovers, "processes left on the hosts: %s" % leftovers


def _read_until(proc, pattern, count=1):
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if len(re.findall(pattern, "".join(lines))) >= count:
            return "".join(lines)
    return "".join(lines)


@pytest.fixture(scope="module")
def tiny_train_set(tmp_path_factory):
    """36 training images: one batch of 32 per epoch."""
    from reid_baseline.data.toy.market1501 import make_toy_market1501
    return make_toy_market1501(str(tmp_path_factory.mktemp("toy36")), num_train_ids=4, num_test_ids=4,
                               cameras_per_id=(3, 3), num_distractors=4, num_junk=2, seed=1)["root"]


@needs_namespaces
@pytest.mark.timeout(600)
@pytest.mark.slow
def test_a_two_host_step_equals_one_process_on_the_whole_batch(hosts, tiny_train_set, tmp_path):
    """One SGD step of 2 workers x 16 images (one per host, 2 servers) against train.py in one
    process on the 32 images with BatchNorm over groups of 16 (what each worker normalises)."""
    overrides = TINY_OVERRIDES + [
        "DATASETS.ROOT", tiny_train_set, "SOLVER.MAX_EPOCHS", "1", "SOLVER.WARMUP_EPOCHS", "0",
        "SOLVER.STEPS", "[]", "SOLVER.OPTIMIZER", "sgd", "SOLVER.MOMENTUM", "0.0",
        "SOLVER.WEIGHT_DECAY", "0.0", "SOLVER.BASE_LR", "0.01"]
    proc = _launch(hosts, _train_command(overrides + [
        "OUTPUT_DIR", str(tmp_path / "dist"), "SOLVER.KVSTORE", "dist_sync", "MODEL.BN_GROUP_SIZE",
        "0"]), 2)
    out = _finish(proc, hosts, 480)
    assert proc.returncode == 0, out[-3000:]
    for name in ("server on 10.200.0.11", "server on 10.200.0.12", "worker on 10.200.0.11",
                 "worker on 10.200.0.12", "scheduler on 10.200.0.10"):
        assert "launch_hosts: started %s" % name in out
    assert "distributed training: worker 0 of 2" in out  # rank 0's log (rank 1: worker_1.log)
    one = subprocess.run([PYTHON, "train.py"] + overrides + [
        "OUTPUT_DIR", str(tmp_path / "one"), "MODEL.BN_GROUP_SIZE", "16"], capture_output=True,
        text=True, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    got = mx.nd.load(str(tmp_path / "dist" / "model_final.params"))
    expected = mx.nd.load(str(tmp_path / "one" / "model_final.params"))
    assert set(got) == set(expected)
    for name in got:
        np.testing.assert_allclose(got[name].asnumpy(), expected[name].asnumpy(), rtol=0, atol=1e-5,
                                   err_msg=name)


@needs_namespaces
@pytest.mark.timeout(900)
@pytest.mark.slow
def test_a_two_host_job_learns_writes_once_and_resumes_after_a_stop(hosts, toy_market_root, tmp_path):
    """1 server, a worker on each host: stopped (SIGTERM to the launcher) after its first
    epoch, resumed to 3 epochs, evaluated: learns; rank 0 alone writes the shared run folder;
    the hosts talk over their own addresses."""
    from reid_baseline.config import load_config
    from reid_baseline.data.datasets import build_datasets
    from reid_baseline.evaluation.evaluator import record_ids
    from reid_baseline.evaluation.protocol import chance_rank1
    run_dir = str(tmp_path / "run")
    overrides = TINY_OVERRIDES + ["DATASETS.ROOT", toy_market_root, "OUTPUT_DIR", run_dir,
                                  "SOLVER.KVSTORE", "dist_sync", "SOLVER.MAX_EPOCHS", "3",
                                  "SOLVER.EVAL_PERIOD", "3"]
    proc = _launch(hosts, _train_command(overrides), 1)
    try:
        out = _read_until(proc, r"distributed training: worker 0 of 2")
        # Mid-job: every connection of hosts 1 and 2 is between 10.200.0.x addresses, and each
        # reaches the scheduler on host 0.
        for i in (1, 2):
            peers = re.findall(r"ESTAB\s+\d+\s+\d+\s+(\S+):\d+\s+(\S+):\d+", hosts.sockets(i))
            assert peers and all(a.startswith("10.200.0.") and b.startswith("10.200.0.")
                                 for a, b in peers), peers
            assert (hosts.addresses[i], hosts.addresses[0]) in peers
        metrics = os.path.join(run_dir, "metrics.jsonl")
        last = os.path.join(run_dir, "checkpoints", "last")  # written after the epoch's row
        deadline = time.time() + 400
        while time.time() < deadline and not (os.path.exists(last) and os.path.exists(metrics)):
            time.sleep(1)
        proc.send_signal(signal.SIGTERM)
    finally:
        out += _finish(proc, hosts, 120)
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    assert "launch_hosts: got SIGTERM; stopping the job" in out
    with open(metrics) as f:
        epochs = [json.loads(line)["epoch"] for line in f]
    assert epochs and epochs[0] == 1 and max(epochs) < 3

    proc = _launch(hosts, _train_command(overrides, resume=True), 1)
    out = _finish(proc, hosts, 600)
    assert proc.returncode == 0, out[-3000:]
    assert re.search(r"resumed from %s" % re.escape(os.path.join(run_dir, "checkpoints")), out)
    with open(metrics) as f:
        records = [json.loads(line) for line in f]
    assert [r["epoch"] for r in records] == [1, 2, 3] and "rank1" in records[2]
    dataset = build_datasets(load_config(None, overrides))
    (q_pids, q_cams), (g_pids, g_cams) = record_ids(dataset.query), record_ids(dataset.gallery)
    assert records[2]["rank1"] > 10 * 100 * chance_rank1(q_pids, g_pids, q_cams, g_cams)
    # One writer: rank 0's files and worker 1's log, nothing else in the shared folder.
    # The folder's lock and its manifest of the package's files are the bookkeeping; the
    # resumed run's final model was evaluated (results.json, cmc.png).
    assert sorted(os.listdir(run_dir)) == [LOCK_FILE, OUTPUTS_MANIFEST, "checkpoints", "cmc.png",
                                           "config.yaml", "curves.png", "metrics.jsonl",
                                           "model_final.params", "results.json", "train.log",
                                           "worker_1.log"]
    assert {"cmc.png", "config.yaml", "curves.png", "metrics.jsonl", "model_final.params",
            "results.json"} <= set(written_outputs(run_dir))
    assert "worker 1 of 2" in open(os.path.join(run_dir, "worker_1.log")).read()


@needs_namespaces
@pytest.mark.timeout(600)
@pytest.mark.slow
def test_a_host_whose_processes_die_stops_the_whole_job_and_is_named(hosts, small_toy_root, tmp_path):
    overrides = TINY_OVERRIDES + ["DATASETS.ROOT", small_toy_root, "OUTPUT_DIR", str(tmp_path),
                                  "SOLVER.KVSTORE", "dist_sync", "SOLVER.MAX_EPOCHS", "20"]
    proc = _launch(hosts, _train_command(overrides), 1, "--grace", "5")
    try:
        out = _read_until(proc, r"distributed training: worker 0 of 2")
        hosts.kill_host(2)  # 10.200.0.12: its worker dies (the server runs on 10.200.0.11)
    finally:
        out += _finish(proc, hosts, 120)  # bounded: the test fails if the job outlives this
    assert proc.returncode != 0
    assert re.search(r"launch_hosts: worker on 10\.200\.0\.12 \(pid \d+\) (exited with code \d+|"
                     r"was killed by signal \w+); stopped the \d+ other processes of the job "
                     r"\(.*worker on 10\.200\.0\.11", out), out[-3000:]


@needs_namespaces
@pytest.mark.timeout(300)
@pytest.mark.slow
def test_the_hang_watchdog_stops_a_silent_job_across_hosts(hosts, tmp_path):
    """Workers that join the job, then wait without a word (as one blocked on a peer)."""
    script = tmp_path / "silent_worker.py"
    script.write_text("import time\nimport mxnet as mx\nkv = mx.kv.create('dist_sync')\n"
                      "print('joined as rank', kv.rank)\ntime.sleep(600)\n")
    proc = _launch(hosts, "cd %s && %s %s" % (tmp_path, PYTHON, script), 1, "--hang-timeout", "15",
                   "--grace", "3")
    try:
        out = _read_until(proc, r"joined as rank", 2)
    finally:
        out += _finish(proc, hosts, 120)
    assert proc.returncode == 124, out
    assert re.search(r"launch_hosts: no output from any worker for \d+ s \(--hang-timeout 15\): the "
                     r"job looks hung; stopping it \(last lines: worker on 10\.200\.0\.1[12] \d+ s "
                     r"ago, worker on 10\.200\.0\.1[12] \d+ s ago\)", out), out


@needs_namespaces
@pytest.mark.timeout(600)
@pytest.mark.slow
def test_a_host_whose_link_drops_is_stopped_by_the_hang_watchdog(hosts, small_toy_root, tmp_path):
    """Host 2's link goes down mid-job: nothing crashes, every worker waits; the watchdog ends
    the job, and every process, those on the cut-off host included, is stopped."""
    overrides = TINY_OVERRIDES + ["DATASETS.ROOT", small_toy_root, "OUTPUT_DIR", str(tmp_path),
                                  "SOLVER.KVSTORE", "dist_sync", "SOLVER.MAX_EPOCHS", "20"]
    proc = _launch(hosts, _train_command(overrides), 1, "--hang-timeout", "60", "--grace", "5")
    try:
        out = _read_until(proc, r"distributed training: worker 0 of 2")
        subprocess.run(["ip", "link", "set", hosts.veths[2], "down"], check=True)
        cut = time.time()
        out += _finish(proc, hosts, 300)
    finally:
        subprocess.run(["ip", "link", "set", hosts.veths[2], "up"])
        _finish(proc, hosts, 30)
    assert proc.returncode == 124, out[-3000:]
    assert time.time() - cut >= 55
    assert re.search(r"launch_hosts: no output from any worker for \d+ s \(--hang-timeout 60\): the "
                     r"job looks hung; stopping it \(last lines: .*worker on 10\.200\.0\.12", out), out[-3000:]
