"""Installing: without MXNet a command says how to get it; constraints.txt resolves for Python
3.10 and 3.11; installing into an environment that has MXNet leaves that MXNet alone.

The tests that need the package index skip, saying so, when it cannot be reached."""
import json
import os
import subprocess
import sys
import venv

import pytest

from conftest import ROOT
from reid_baseline import MXNET_MISSING

CONSTRAINTS = os.path.join(ROOT, "constraints.txt")


def clean_env():
    """The environment for a child Python: nothing of this test run's import path."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.pop("PYTHONHOME", None)
    return env


def run(args, timeout, cwd=None):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, env=clean_env(), cwd=cwd)


def venv_python(path, with_pip):
    venv.EnvBuilder(with_pip=with_pip, clear=True).create(str(path))
    return path / "bin" / "python"


@pytest.fixture(scope="module")
def package_index(tmp_path_factory):
    """Skip unless pip can fetch from the package index (a small pure-Python wheel)."""
    done = run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                "--no-cache-dir", "-d", tmp_path_factory.mktemp("probe"), "yacs==0.1.8"],
               timeout=120)
    if done.returncode:
        pytest.skip("no package index reachable: %s" % (done.stderr.strip().splitlines()
                                                        or ["pip failed"])[-1])


def test_without_mxnet_commands_print_the_install_line(tmp_path):
    # A Python with nothing installed but this package's source on its path: the check comes
    # before any import.
    python = venv_python(tmp_path / "venv", with_pip=False)
    site = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
               timeout=60).stdout.strip()
    with open(os.path.join(site, "reid_baseline_source.pth"), "w") as f:
        f.write(ROOT + "\n")
    for script in ("train.py", "evaluate.py", "scripts/doctor.py", "scripts/demo.py"):
        done = run([python, os.path.join(ROOT, script), "--help"], timeout=60, cwd=str(tmp_path))
        assert (done.returncode, done.stdout, done.stderr) == (2, "", "error: %s\n" % MXNET_MISSING)
    done = run([python, "-c", "import reid_baseline"], timeout=60, cwd=str(tmp_path))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == "ImportError: " + MXNET_MISSING
    assert "pip install -c constraints.txt -e '.[cpu]'" in MXNET_MISSING


def constraints_for(python_version, path):
    """constraints.txt with its environment markers decided for `python_version`: `pip download
    --python-version` picks wheels for that version but decides markers for the running one."""
    markers = pytest.importorskip("packaging.markers")
    kept = []
    with open(CONSTRAINTS) as f:
        for line in f:
            requirement, _, marker = line.split("#")[0].partition(";")
            if requirement.strip() and (not marker.strip() or markers.Marker(marker.strip()).evaluate(
                    {"python_version": python_version,
                     "python_full_version": python_version + ".0"})):
                kept.append(requirement.strip())
    path.write_text("\n".join(kept) + "\n")
    return {r.split("==")[0].lower().replace("_", "-"): r.split("==")[1] for r in kept}


@pytest.mark.timeout(900)
@pytest.mark.parametrize("python_version", ["3.10", "3.11"])
@pytest.mark.slow
def test_constraints_resolve_for_python(python_version, tmp_path, package_index):
    pins = constraints_for(python_version, tmp_path / "constraints.txt")
    # pip's resolver, as for an install on that Python (wheels only), reading the packages'
    # metadata from the index without downloading the wheels; --report lists what it chose.
    report = tmp_path / "report.json"
    done = run([sys.executable, "-m", "pip", "install", "-q", "--dry-run", "--ignore-installed",
                "--report", report, "--python-version", python_version, "--only-binary=:all:",
                "--target", tmp_path / "target", "-c", tmp_path / "constraints.txt",
                ROOT + "[cpu,test]"], timeout=850)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(report) as f:
        chosen = {item["metadata"]["name"].lower().replace("_", "-"):
                  (item["metadata"]["version"], item["download_info"]["url"])
                  for item in json.load(f)["install"]}
    # Every package is one the constraints name, at the pinned version.
    for name, (version, _) in chosen.items():
        if name != "reid-baseline":
            assert pins.get(name) == version, (name, version)
    assert {"mxnet", "numpy", "gluoncv", "opencv-python", "pillow", "pytest"} <= set(chosen)
    assert "opencv-python-headless" not in chosen
    tag = "cp%s" % python_version.replace(".", "")
    assert "numpy-1.23.5-%s" % tag in chosen["numpy"][1], chosen["numpy"]


def record_hash(python):
    """(version, sha256 of the RECORD, location) of the mxnet distribution of a venv."""
    code = ("import hashlib, importlib.metadata as m, json; d = m.distribution('mxnet'); "
            "print(json.dumps([d.version, hashlib.sha256(d.read_text('RECORD').encode())"
            ".hexdigest(), str(d.locate_file(''))]))")
    done = run([python, "-c", code], timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.slow
@pytest.mark.timeout(3000)
def test_installing_into_an_environment_with_mxnet_leaves_it_alone(tmp_path, package_index):
    # A plain mxnet installed first stands in for a GPU build (NVIDIA's container, mxnet-cu117).
    python = venv_python(tmp_path / "venv", with_pip=True)
    pip = [python, "-m", "pip", "install", "-c", CONSTRAINTS]
    done = run(pip + ["mxnet==1.9.1"], timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    before = record_hash(python)
    # The documented install for an environment that has MXNet.
    done = run(pip + ["-e", ROOT], timeout=2400)
    assert done.returncode == 0, done.stderr[-3000:]
    installed = [ln for ln in done.stdout.splitlines() if ln.startswith("Successfully installed")]
    assert installed and "reid_baseline" in installed[0].replace("-", "_")
    assert " mxnet" not in installed[0]
    assert record_hash(python) == before
    # One OpenCV distribution owns cv2, and the package imports with that MXNet.
    check = ("import importlib.metadata as m, json, reid_baseline.modeling.network, cv2, mxnet; "
             "print(json.dumps(sorted(set(m.packages_distributions()['cv2']))))")
    done = run([python, "-c", check], timeout=300, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout) == ["opencv-python"]


@pytest.mark.timeout(120)
@pytest.mark.slow
def test_a_script_beside_a_clone_named_like_the_package_is_in_troubleshooting(tmp_path):
    """The namespace-package clash: the message the user sees is the one the page names, and
    the page's fix (another name for the clone's folder) makes the script work."""
    if run([sys.executable, "-c", "import reid_baseline"], 60, cwd=tmp_path).returncode:
        pytest.skip("the package is not installed in this Python (only on PYTHONPATH)")
    with open(os.path.join(ROOT, "docs", "TROUBLESHOOTING.md"), encoding="utf-8") as f:
        page = f.read()
    parent = tmp_path / "work"
    (parent / "reid_baseline" / "reid_baseline").mkdir(parents=True)  # the clone's layout
    (parent / "reid_baseline" / "reid_baseline" / "__init__.py").write_text("")
    script = parent / "use_model.py"
    script.write_text("from reid_baseline import ReIDModel\nprint('found', ReIDModel.__name__)\n")
    done = run([sys.executable, script], 60, cwd=parent)
    assert done.returncode == 1
    message = done.stderr.strip().splitlines()[-1]
    assert message == "ImportError: cannot import name 'ReIDModel' from 'reid_baseline' " \
        "(unknown location)"
    assert "**`%s`**" % message in page
    (parent / "reid_baseline").rename(parent / "reid-baseline")
    done = run([sys.executable, script], 60, cwd=parent)
    assert (done.returncode, done.stdout) == (0, "found ReIDModel\n"), done.stderr
