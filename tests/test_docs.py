"""The documentation cannot rot: README.md and docs/*.md are read and checked against the code.

- every command (`python train.py ...`, `python scripts/x.py ...`) names an existing script and
  only flags that script's `--help` lists (one `--help` subprocess per script, cached);
- every `scripts/*.py` and `configs/*.yml` mentioned exists;
- every config key written in dotted upper case (SOLVER.BASE_LR) exists in reid_baseline.config.get_defaults();
- every relative link and image exists in the repository;
- each ablation file in the README's trick table sets the config keys named on its row;
- docs/CONFIG.md is what scripts/config_reference.py writes from config/defaults.py;
- the README's Python example runs on a small trained run and finds the query's identity;
- docs/CONTRIBUTING.md's layout lists every module, and only paths that exist.
"""
import functools
import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))

FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
KEY = re.compile(r"(?<![\w./-])([A-Z][A-Z0-9_]*(?:\.[A-Z][A-Z0-9_]+)+)(\*?)(?![\w.])")
PYTHON = re.compile(r"^(?:.*/)?python(?:3(?:\.\d+)?)?$")
# The repository's own command lines; any other .py path (e.g. MXNet's tools/launch.py) is not ours.
OUR_SCRIPT = re.compile(r"^(?:train\.py|evaluate\.py|scripts/[\w-]+\.py)$")
# Words that end a command on a shell line.
STOP = {"&&", "||", "|", ";", ">", ">>", "2>", "2>&1", "--"}


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def _rel(path):
    return os.path.relpath(path, ROOT)


def code_spans(text):
    """Every fenced block (language, body) and every inline code span of a Markdown text."""
    blocks = [(lang, body) for lang, body in FENCE.findall(text)]
    prose = FENCE.sub("", text)
    return blocks, INLINE.findall(prose)


def commands(text):
    """[(script, [flags])] for every command line of a Markdown text that runs one of the
    repository's scripts: in a shell code block, or in an inline code span."""
    blocks, spans = code_spans(text)
    lines = []
    for lang, body in blocks:
        if lang in ("", "bash", "sh", "shell", "console"):
            lines += body.replace("\\\n", " ").splitlines()
    lines += spans
    found = []
    for line in lines:
        words = line.replace('"', " ").replace("'", " ").split()
        for i, word in enumerate(words):
            starts = (i > 0 and PYTHON.match(words[i - 1])) or (i == 0 and line in spans)
            if not (starts and OUR_SCRIPT.match(word)):
                continue
            flags = []
            for arg in words[i + 1:]:
                if arg in STOP or arg.startswith("#") or PYTHON.match(arg):
                    break
                arg = arg.strip("[]()")
                if arg.startswith("--") and len(arg) > 2:
                    flags.append(arg.split("=")[0])
            found.append((word, flags))
    return found


@functools.lru_cache(maxsize=None)
def accepted_flags(script):
    """The flags `python SCRIPT --help` lists (the options' own lines, not their help text)."""
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, "%s --help failed: %s" % (script, proc.stderr[-500:])
    flags = set()
    for line in proc.stdout.splitlines():
        head = line.strip().split("  ")[0]
        if head.startswith("-"):
            flags.update(re.findall(r"(?<!\S)(--[A-Za-z][\w-]*)", head))
    return frozenset(flags)


def test_commands_parser_finds_scripts_and_flags():
    """The extractor itself, on a hand-written page (so the real checks cannot pass vacuously)."""
    page = ("Run `train.py --config X --resume`.\n```bash\n"
            ".venv/bin/python scripts/demo.py --ablation F && ls --color  # done\n"
            "OMP_NUM_THREADS=2 python evaluate.py \\\n  --params P --output=o.json [--visualize 4]\n"
            ".venv/bin/python scripts/launch_local.py --workers 2 -- .venv/bin/python train.py "
            "--gpus 0\npython .venv/lib/mxnet/tools/launch.py -n 2\n```\n")
    assert commands(page) == [
        ("scripts/demo.py", ["--ablation"]),
        ("evaluate.py", ["--params", "--output", "--visualize"]),
        ("scripts/launch_local.py", ["--workers"]),
        ("train.py", ["--gpus"]),
        ("train.py", ["--config", "--resume"]),
    ]
    assert [m[0] for m in KEY.findall("SOLVER.BASE_LR, `MODEL.PRETRAINED: x` README.md "
                                      "TEST.RERANK_* U.S. MXNET_HOME")] == \
        ["SOLVER.BASE_LR", "MODEL.PRETRAINED", "TEST.RERANK_"]


@pytest.mark.timeout(1800)
@pytest.mark.slow
def test_commands_name_existing_scripts_and_accepted_flags():
    problems = []
    for doc in DOCS:
        text = _read(doc)
        for script, flags in commands(text):
            if not os.path.isfile(os.path.join(ROOT, script)):
                problems.append("%s: %s does not exist" % (_rel(doc), script))
                continue
            unknown = sorted(set(flags) - accepted_flags(script))
            if unknown:
                problems.append("%s: %s does not accept %s" % (_rel(doc), script, ", ".join(unknown)))
        named = re.findall(r"(?<![\w/.-])(?:scripts/[\w-]+\.py|configs/[\w/-]+\.yml)", text)
        for path in sorted(set(named)):
            if not os.path.isfile(os.path.join(ROOT, path)):
                problems.append("%s: names %s, which does not exist" % (_rel(doc), path))
    assert not problems, "\n".join(problems)


def _default_keys():
    from reid_baseline.config import get_defaults

    def flat(cfg, prefix=""):
        for name, value in cfg.items():
            if isinstance(value, dict):
                yield from flat(value, prefix + name + ".")
            else:
                yield prefix + name
    return set(flat(get_defaults()))


@pytest.mark.timeout(60)
def test_config_keys_exist():
    keys = _default_keys()
    problems = []
    for doc in DOCS:
        text = _read(doc)
        for match in KEY.finditer(text):
            key, star = match.groups()
            if text[max(0, match.start() - 20):match.start()].endswith("unknown config key '"):
                continue  # an example of the error a wrong key gives
            ok = any(k.startswith(key) for k in keys) if star else key in keys
            if not ok:
                problems.append("%s: %s%s is not a config key" % (_rel(doc), key, star))
    assert not problems, "\n".join(sorted(set(problems)))


@pytest.mark.timeout(60)
def test_relative_links_exist():
    problems = []
    for doc in DOCS:
        text = _read(doc)
        targets = LINK.findall(text) + re.findall(r"<img[^>]+src=\"([^\"]+)\"", text)
        for target in targets:
            if re.match(r"^(?:[a-z]+:|#)", target):
                continue
            path = os.path.normpath(os.path.join(os.path.dirname(doc), target.split("#")[0]))
            if not os.path.exists(path):
                problems.append("%s: link to %s, which does not exist" % (_rel(doc), target))
    assert not problems, "\n".join(problems)


@pytest.mark.timeout(60)
def test_readme_pictures_are_small_pngs_in_the_repository():
    text = _read(os.path.join(ROOT, "README.md"))
    images = [t for t in LINK.findall(text) if t.endswith(".png")]
    assert images, "the README shows no picture"
    for target in images:
        path = os.path.join(ROOT, target)
        assert target.startswith("docs/images/"), target
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", target
        assert os.path.getsize(path) < 300 * 1024, "%s is over 300 KB" % target


@pytest.mark.timeout(60)
def test_readme_trick_table_matches_the_ablation_files():
    from reid_baseline.config import ablation_changes

    rows = [line for line in _read(os.path.join(ROOT, "README.md")).splitlines()
            if line.startswith("|") and "configs/ablations/" in line]
    assert len(rows) >= 10, "the README's trick -> key -> ablation table is missing"
    for row in rows:
        files = re.findall(r"configs/ablations/[\w-]+\.yml", row)
        keys = {k for k, _ in KEY.findall(row)}
        for name in files:
            changed = set(ablation_changes(os.path.join(ROOT, name)))
            assert keys & changed, "%s: the row names %s, the file changes %s" % (
                name, sorted(keys), sorted(changed))


@pytest.mark.timeout(120)
def test_config_page_is_generated_from_the_defaults():
    spec = importlib.util.spec_from_file_location(
        "config_reference", os.path.join(ROOT, "scripts", "config_reference.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    page = module.render()
    for key in _default_keys():
        assert "| `%s` |" % key in page, key
    assert _read(os.path.join(ROOT, "docs", "CONFIG.md")) == page, (
        "docs/CONFIG.md is out of date: run scripts/config_reference.py --out docs/CONFIG.md")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_readme_python_example_runs(trained_run, toy_market_root, tmp_path):
    blocks = [body for lang, body in code_spans(_read(os.path.join(ROOT, "README.md")))[0]
              if lang == "python"]
    assert len(blocks) == 1, "expected one Python example in the README"
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="2")

    def run(args):
        proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, "%s\n%s" % (" ".join(args), proc.stderr[-2000:])
        return proc.stdout

    # The example uses the demo's run folder and toy set: the session's short run (a run folder
    # of the same layout, ResNet-18 at 64x32) and the default toy set, where the README says.
    cfg, _ = trained_run
    os.makedirs(tmp_path / "runs" / "demo_toy")
    for name in ("config.yaml", "model_final.params"):
        shutil.copy(os.path.join(cfg.OUTPUT_DIR, name), tmp_path / "runs" / "demo_toy" / name)
    os.makedirs(tmp_path / "data" / "toy_market1501")
    os.symlink(toy_market_root, tmp_path / "data" / "toy_market1501" / "Market-1501-v15.09.15")
    (tmp_path / "example.py").write_text(blocks[0])
    out = run([sys.executable, "example.py"])
    # It prints "QUERY -> BEST MATCH"; Market-1501 names start with the person id (0035_c1s2_...).
    query, arrow, match = out.strip().splitlines()[-1].split(" ")
    assert arrow == "->" and "/query/" in query and "/bounding_box_test/" in match, out
    assert os.path.isfile(tmp_path / match), match
    assert os.path.basename(match).split("_")[0] == os.path.basename(query).split("_")[0], (
        "the README's example finds %s for %s: another person" % (match, query))


def layout_paths(text):
    """The paths the Layout block of a CONTRIBUTING page lists: each line's first column (up to
    two spaces), split on commas; folders end with /; lines starting with # are group titles."""
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    blocks = [body for _, body in code_spans(section)[0]]
    assert len(blocks) == 1, "the Layout section holds %d code blocks, expected 1" % len(blocks)
    paths = []
    for line in blocks[0].splitlines():
        if line.strip() and not line.startswith("#"):
            paths += [p.strip() for p in re.split(r"\s{2,}", line.strip(), maxsplit=1)[0].split(",")]
    return paths


def unlisted_modules(modules, listed):
    """The modules (paths under reid_baseline/) that `listed` does not name by their own path:
    a listed folder names no module, so each module has its own line and purpose."""
    return [rel for rel in modules if rel not in listed]


def test_layout_parser_and_rule_on_a_hand_written_page():
    page = ("# C\n\n## Layout\n\n```\n# group\nreid_baseline/a.py     one\nreid_baseline/sub/  two, "
            "three  four\nreid_baseline/            everything\ntrain.py, evaluate.py  x\n```\n"
            "\n## Rules\n\n```\nreid_baseline/b.py  not the layout\n```\n")
    listed = layout_paths(page)
    assert listed == ["reid_baseline/a.py", "reid_baseline/sub/", "reid_baseline/",
                      "train.py", "evaluate.py"]
    modules = ["reid_baseline/__init__.py", "reid_baseline/a.py", "reid_baseline/b.py",
               "reid_baseline/sub/__init__.py", "reid_baseline/sub/c.py"]
    assert unlisted_modules(modules, listed) == [
        "reid_baseline/__init__.py", "reid_baseline/b.py", "reid_baseline/sub/__init__.py",
        "reid_baseline/sub/c.py"]


@pytest.mark.timeout(60)
def test_contributing_layout_lists_every_module_and_only_existing_paths():
    listed = layout_paths(_read(os.path.join(ROOT, "docs", "CONTRIBUTING.md")))
    modules = sorted(_rel(p).replace(os.sep, "/") for p in
                     glob.glob(os.path.join(ROOT, "reid_baseline", "**", "*.py"), recursive=True))
    missing = unlisted_modules(modules, listed)
    assert not missing, "docs/CONTRIBUTING.md's layout does not list: %s" % ", ".join(missing)
    absent = [p for p in listed if not os.path.exists(os.path.join(ROOT, p))
              or p.endswith("/") != os.path.isdir(os.path.join(ROOT, p))]
    assert not absent, "docs/CONTRIBUTING.md's layout lists what does not exist: %s" % (
        ", ".join(absent))


@pytest.mark.timeout(60)
def test_the_tensorboard_page_names_the_viewer_and_the_writers_folder(make_tiny_cfg, tmp_path,
                                                                      monkeypatch):
    from reid_baseline.engine import hooks
    text = _read(os.path.join(ROOT, "docs", "GETTING_STARTED.md"))
    assert "SOLVER.TENSORBOARD True" in text
    # The viewer is installed beside (a package of its own) and pointed at the writer's folder.
    assert re.search(r"bin/pip install -q tensorboard\n", text)
    [logdir] = re.findall(r"bin/tensorboard --logdir (\S+)", text)
    output_dir, folder = os.path.split(logdir)
    # The folder the training writes to, as the engine builds it.
    opened = []
    monkeypatch.setattr(hooks, "open_tensorboard", opened.append)
    cfg = make_tiny_cfg(tmp_path / output_dir, "SOLVER.TENSORBOARD", "True")
    hooks.build_hooks(cfg, cfg.OUTPUT_DIR, None, None, None, None, None, True)
    assert opened == [os.path.join(cfg.OUTPUT_DIR, folder)]
    assert output_dir == _config_value("market1501.yml", "OUTPUT_DIR")


def _config_value(name, key):
    from reid_baseline.config import load_config
    cfg = load_config(os.path.join(ROOT, "configs", name))
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


@pytest.mark.timeout(120)
def test_the_quick_starts_numbers(toy_market, toy_market_root):
    import mxnet as mx
    import numpy as np

    from reid_baseline.config import load_config
    from reid_baseline.data.datasets import load_dataset
    from reid_baseline.evaluation.protocol import chance_rank1
    from reid_baseline.modeling.network import build_model
    text = _read(os.path.join(ROOT, "README.md"))
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    printed = dict(re.findall(r"^(rank1|mAP \(trapezoid[^)]*\))\s+([\d.]+)$", section, re.M))
    rank1, mean_ap = float(printed["rank1"]), float(printed["mAP (trapezoid AP, Market-1501)"])
    low, high, map_low, map_high = map(float, re.search(
        r"Rank-1 ([\d.]+) to ([\d.]+) and mAP ([\d.]+) to ([\d.]+)", section.replace("\n", " "))
        .groups())
    # The printed run is one end of the measured range, rounded.
    assert low <= round(rank1, 1) <= high and map_low <= round(mean_ap, 1) <= map_high
    assert round(rank1, 1) in (low, high) and round(mean_ap, 1) in (map_low, map_high)
    # The chance line, computed here on the generated set the demo uses.
    data = load_dataset("market1501", toy_market_root, verify_counts=False)
    q, g = data.query, data.gallery
    chance = 100 * chance_rank1(np.array([r.pid for r in q]), np.array([r.pid for r in g]),
                                np.array([r.camid for r in q]), np.array([r.camid for r in g]))
    assert "Rank-1 %.1f%%;" % chance in section
    assert "chance line the demo prints last (%.1f%%)" % chance in section
    assert low > 10 * chance  # "far above"
    # Disk: the generated set (the demo's generator, defaults), the final model and a checkpoint.
    disk = re.search(r"about (\d+) MB of disk in `runs/demo_toy` \(the final model, (\d+) MB, "
                     r"and the last checkpoint, (\d+) MB with Adam's state; about (\d+) MB at "
                     r"the peak, while a new checkpoint is written before the older one goes\) "
                     r"plus (\d+) MB for the generated set", section.replace("\n", " "))
    total, model_mb, checkpoint_mb, peak_mb, set_mb = map(int, disk.groups())
    # the peak: the new checkpoint is complete before the older one is removed
    assert abs(2 * checkpoint_mb - peak_mb) <= 0.05 * peak_mb
    used = sum(os.stat(os.path.join(d, f)).st_blocks * 512
               for d, _, files in os.walk(os.path.dirname(toy_market_root)) for f in files)
    assert abs(used / 1e6 - set_mb) <= max(1, 0.3 * set_mb), used
    assert abs(model_mb + checkpoint_mb - total) <= 0.05 * total
    cfg = load_config(os.path.join(ROOT, "configs", "demo_toy.yml"))
    net = build_model(cfg, len(set(r.pid for r in data.train)))
    net(mx.nd.zeros((1, 3, cfg.INPUT.HEIGHT, cfg.INPUT.WIDTH)))
    weights = sum(p.data().size * 4 for p in net.collect_params().values())
    assert abs(weights / 1e6 - model_mb) <= 3, weights
    # Adam keeps two moments per weight: a checkpoint holds about three copies of them.
    assert 2 * model_mb < checkpoint_mb <= 3 * model_mb
