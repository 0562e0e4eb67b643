"""What every benchmark script shares: the description of the machine a figure was measured
on (CPU model, cores, load, memory, date, library versions) and a best-of-N timer.

A figure without its machine and load means little: the scripts in scripts/benchmark_*.py
put `describe_machine()` beside every result they print or write.
"""
import datetime
import os
import platform
import time

from reid_baseline.environment import installed_version

# Installed versions reported with each figure (read from package metadata, not imported).
LIBRARIES = ("numpy", "scipy", "mxnet", "opencv-python")


def cpu_model(cpuinfo="/proc/cpuinfo"):
    """The CPU's model name from /proc/cpuinfo (platform.processor() where there is none)."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def describe_machine():
    """A dict describing this machine now: cpu (model), cores, load_average (1, 5, 15 min),
    mem_gb, date (UTC, ISO 8601), omp_num_threads, python, platform and the LIBRARIES'
    installed versions."""
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30, 1)
    except (ValueError, OSError):
        mem_gb = None
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return dict(cpu=cpu_model(), cores=os.cpu_count(), load_average=load, mem_gb=mem_gb,
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                omp_num_threads=os.environ.get("OMP_NUM_THREADS"),
                python=platform.python_version(), platform=platform.platform(),
                versions={name: installed_version(name) for name in LIBRARIES})


def machine_line(machine=None):
    """One line for a report: CPU model, cores, load average, date."""
    m = machine or describe_machine()
    load = "/".join("%.2f" % x for x in m["load_average"]) if m["load_average"] else "unknown"
    return "%s, %d cores, load average %s, %s" % (m["cpu"], m["cores"], load, m["date"])


def best_time(fn, repeats=3):
    """(seconds, result) of the fastest of `repeats` calls of fn() (the previous call's
    result is freed before the next one starts)."""
    best, out = float("inf"), None
    for _ in range(max(1, repeats)):
        out = None
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out
