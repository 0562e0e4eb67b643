#!/usr/bin/env python
"""Run a distributed MXNet job on several machines with MXNet's own launcher (ssh, hosts file).

Example (2 workers, one per host, 2 servers; the scheduler on this machine at 10.0.0.10):
  printf '10.0.0.11\\n10.0.0.12\\n' > hosts
  python scripts/launch_hosts.py -H hosts -n 2 -s 2 --scheduler-host 10.0.0.10 \\
      --env OMP_NUM_THREADS "cd $PWD && .venv/bin/python train.py --config configs/market1501.yml \\
      SOLVER.KVSTORE dist_device_sync OUTPUT_DIR /shared/runs/market1501_2x2"
Runs the wheel's tools/launch.py --launcher ssh (no patch to install: its Python 3.11 fix is made
at run time). If a process fails, or no worker prints a line for --hang-timeout seconds, the
whole job is stopped and the launcher exits non-zero naming the host.
"""
import argparse
import sys

from reid_baseline.cli import run
from reid_baseline.launch.hosts import launch_hosts
from reid_baseline.launch.local import add_job_options, job_command


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     usage="%(prog)s -H HOSTS -n W [-s S] [options] COMMAND ...")
    parser.add_argument("-H", "--hostfile", required=True,
                        help="hosts file: one host (name or address, optionally :SSH_PORT) a line")
    parser.add_argument("-n", "--num-workers", type=int, required=True, help="worker processes")
    parser.add_argument("-s", "--num-servers", type=int, default=None,
                        help="server processes (default: as many as workers)")
    parser.add_argument("--interface", default=None,
                        help="network interface of the job (exported as DMLC_INTERFACE); its "
                        "address on this machine is the scheduler's unless --scheduler-host")
    parser.add_argument("--scheduler-host", default=None,
                        help="address of this machine that every host reaches (DMLC_PS_ROOT_URI)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME[=VALUE]",
                        help="export NAME (this shell's value, or VALUE) to every host; repeatable")
    add_job_options(parser, "the shell command each host runs, e.g. \"cd $PWD && "
                    ".venv/bin/python train.py ...\"")
    args = parser.parse_args()
    command = job_command(args)
    sys.exit(launch_hosts(" ".join(command), args.hostfile, args.num_workers, args.num_servers,
                          interface=args.interface, scheduler_host=args.scheduler_host,
                          env_names=args.env, grace=args.grace, hang_timeout=args.hang_timeout))


if __name__ == "__main__":
    run(main)
