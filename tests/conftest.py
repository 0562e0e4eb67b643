"""Shared pytest fixtures and helpers."""
import contextlib
import os
import runpy
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Time limit (s) of a test that uses a training fixture: whichever test comes first pays for
# the fixture's training run too (about a minute on 2 busy cores; pytest.ini's default limit is
# for everything else). Such tests are slow ones: `pytest -m "not slow"` leaves them out.
TRAINING_FIXTURES = ("trained_run", "two_worker_run", "tiny_study")
TRAINING_FIXTURE_TIMEOUT = 600


def pytest_collection_modifyitems(items):
    """Tests that use a training fixture are marked slow and, unless they set a limit of their
    own, get the longer one."""
    for item in items:
        if set(TRAINING_FIXTURES) & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(TRAINING_FIXTURE_TIMEOUT))


def run_script(monkeypatch, capsys, script, *args):
    """Run a command line (path relative to the repository) in this process, MXNet already
    imported: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", [script] + [str(a) for a in args])
    try:
        runpy.run_path(os.path.join(ROOT, script), run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="session")
def toy_market(tmp_path_factory):
    """Summary dict of the default toy Market-1501 set, generated once per session (~1 s).

    ``toy_market["root"]`` is the folder holding the three split folders.  Treat it as
    read-only: tests that damage files must generate their own copy.
    """
    from reid_baseline.data.toy.market1501 import make_toy_market1501

    return make_toy_market1501(str(tmp_path_factory.mktemp("toy_market")), seed=0)


@pytest.fixture(scope="session")
def toy_market_root(toy_market):
    """Path of the toy set's Market-1501-v15.09.15/ folder (read-only, session-scoped)."""
    return toy_market["root"]


TINY_OVERRIDES = [
    # The recipe's network and schedule shape, shrunk to run in seconds on a CPU.
    "MODEL.BACKBONE", "resnet18_v1", "MODEL.PRETRAINED", "",
    "INPUT.HEIGHT", "64", "INPUT.WIDTH", "32", "INPUT.PAD", "2",
    "DATASETS.VERIFY_COUNTS", "False", "DATALOADER.NUM_WORKERS", "0",
    "SOLVER.BASE_LR", "0.001", "SOLVER.WARMUP_EPOCHS", "2", "SOLVER.STEPS", "[6]",
    "SOLVER.LOG_PERIOD", "4", "SOLVER.CHECKPOINT_PERIOD", "1", "TEST.BATCH_SIZE", "64",
    "GPUS", "[]",  # the CPU on every machine, without GPUS auto's note on stderr
]


def tiny_config_maker(root):
    """make(output_dir, *overrides): the TINY_OVERRIDES config on the set at `root`."""
    from reid_baseline.config import load_config

    def make(output_dir, *overrides):
        return load_config(None, TINY_OVERRIDES + ["DATASETS.ROOT", root,
                                                   "OUTPUT_DIR", str(output_dir)] + list(overrides))
    return make


@pytest.fixture(scope="session")
def make_tiny_cfg(toy_market_root):
    """make_tiny_cfg(output_dir, *overrides): a small CPU config on the toy set."""
    return tiny_config_maker(toy_market_root)


@pytest.fixture(scope="session")
def small_toy(tmp_path_factory):
    """Summary dict of a smaller toy set than the session's (12 training ids: about 110
    training images, 3 steps an epoch at batch 32; 8 test ids), for tests whose point is the
    run's bookkeeping rather than what the network learns.  Read-only, like ``toy_market``."""
    from reid_baseline.data.toy.market1501 import make_toy_market1501

    return make_toy_market1501(str(tmp_path_factory.mktemp("small_toy")), num_train_ids=12,
                               num_test_ids=8, images_per_id_per_camera=2, num_distractors=8,
                               num_junk=4)


@pytest.fixture(scope="session")
def small_toy_root(small_toy):
    """Path of the small toy set's Market-1501-v15.09.15/ folder (read-only)."""
    return small_toy["root"]


@pytest.fixture(scope="session")
def make_small_cfg(small_toy_root):
    """make_small_cfg(output_dir, *overrides): make_tiny_cfg's config on the small toy set."""
    return tiny_config_maker(small_toy_root)


@pytest.fixture(scope="session")
def saved_model(make_small_cfg, small_toy, tmp_path_factory):
    """(config.yaml, model_final.params) of an untrained tiny model on the small toy set, saved
    as train.py saves them: what evaluate.py writes does not depend on training."""
    import mxnet as mx

    from reid_baseline.config import save_config
    from reid_baseline.modeling.network import build_model

    folder = tmp_path_factory.mktemp("saved_model")
    cfg = make_small_cfg(folder)
    net = build_model(cfg, small_toy["train_ids"])
    net(mx.nd.zeros((2, 3, 64, 32)))  # completes the deferred shapes (batch 2: see test_model)
    net.save_parameters(str(folder / "model_final.params"))
    save_config(cfg, str(folder / "config.yaml"))
    return str(folder / "config.yaml"), str(folder / "model_final.params")


@pytest.fixture(scope="session")
def trained_run(make_tiny_cfg, tmp_path_factory):
    """A short training run on the toy set, evaluated after every epoch: (cfg, history)."""
    from reid_baseline.engine.loop import train

    cfg = make_tiny_cfg(tmp_path_factory.mktemp("run"), "SOLVER.MAX_EPOCHS", "8",
                        "SOLVER.EVAL_PERIOD", "1")
    return cfg, train(cfg)


def package_png(path):
    """A tiny PNG written as the package writes its outputs (recorded in its folder's manifest)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from reid_baseline.fileio import output_path

    fig = Figure(figsize=(1, 1))
    with output_path(str(path), overwrite=True) as tmp:
        FigureCanvasAgg(fig).print_png(tmp)


@contextlib.contextmanager
def lock_held_by_another_process(folder):
    """A child process holding fileio.lock_folder(folder) while the block runs; yields its PID.
    The child is killed when the block ends."""
    code = ("import sys, time; from reid_baseline.fileio import lock_folder; "
            "lock_folder(sys.argv[1]); print('locked', flush=True); time.sleep(120)")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    child = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE,
                             text=True, env=env)
    try:
        assert child.stdout.readline().strip() == "locked"
        yield child.pid
    finally:
        child.kill()
        child.wait()
