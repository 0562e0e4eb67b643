"""Ablation studies in one call: train and evaluate a base config and one-knob ablation files
(configs/ablations/*.yml) R times each, then report every trick's effect in the write-up's
terms (report.py) beside what the write-up and the reference code reported.

Every run is an ordinary run folder, <out>/<config stem>/seed<SOLVER.SEED>/, trained by
loop.train and evaluated by evaluator.evaluate_params. So a study survives a stop (finished
runs are skipped, interrupted ones resumed) and can grow (more ablations, more repeats); the
report is rewritten after every run.
"""
import collections
import json
import math
import os

from ..config import ablation_changes, flatten, load_config
from ..engine import loop, run_folder
from ..engine.checkpoint import last_checkpoint
from ..errors import ConfigError, error_line
from ..evaluation import evaluator
from .report import METRICS, check_report_outputs, write_report

Run = collections.namedtuple("Run", "name seed cfg")


# A planned study: `changes` maps each config name (file stem, base first) to the knobs it
# changes ({} for the base); `runs` holds every Run (name, seed, frozen config).
Study = collections.namedtuple("Study", "base repeats out overrides seeds changes runs")


def _stem(path):
    return os.path.splitext(os.path.basename(path))[0]


def plan_study(base, ablations, repeats=1, out="runs/ablations", overrides=()):
    """Every run's config, all built and checked before any training: the `base` YAML (None: the
    recipe) and each ablation file applied to it (load_config's `ablation`), then the KEY VALUE
    `overrides`, `repeats` times each, each in <out>/<config stem>/seed<seed>. Repeat k
    (0-based) of every config trains with SOLVER.SEED + k: the base and each ablation share
    their seeds, so each comparison is paired."""
    if repeats < 1:
        raise ConfigError("--repeats must be >= 1, got %d" % repeats)
    if not ablations:
        raise ConfigError("no ablation configs given (e.g. --configs configs/ablations/*.yml)")
    overrides = list(overrides)
    base_cfg = load_config(base, overrides)
    seeds = [base_cfg.SOLVER.SEED + k for k in range(repeats)]
    base_name = _stem(base) if base else "recipe"
    names = [base_name] + [_stem(p) for p in ablations]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:  # run folders are named by file stem
        raise ConfigError("config file names must differ (run folders are named after them); "
                          "%s given twice (or equals the base's)" % ", ".join(clash))
    changes = collections.OrderedDict([(base_name, {})])
    runs = []
    for name, path in zip(names, [None] + list(ablations), strict=True):
        if path:
            changes[name] = ablation_changes(path)
        for seed in seeds:
            cfg = load_config(base, overrides + ["SOLVER.SEED", str(seed), "OUTPUT_DIR",
                                                 os.path.join(out, name, "seed%d" % seed)],
                              ablation=path)
            runs.append(Run(name, seed, cfg))
    _check_ablations_change_something(runs, base_name)
    return Study(base, repeats, out, overrides, seeds, changes, runs)


def _differences(cfg, other, ignore=("OUTPUT_DIR",)):
    """[(key, value in cfg, value in other)] of the knobs that differ, keys in `ignore` aside."""
    a, b = flatten(cfg), flatten(other)
    return [(k, a[k], b.get(k)) for k in a if k not in ignore and a[k] != b.get(k)]


def _check_ablations_change_something(runs, base_name):
    base = {r.seed: r.cfg for r in runs if r.name == base_name}
    for run in runs:
        if run.name != base_name and not _differences(run.cfg, base[run.seed]):
            raise ConfigError("ablation %s changes nothing once the command-line overrides are "
                              "applied (an override sets its knob back)" % run.name)


def check_run_folders(runs):
    """Refuse (ConfigError) a run folder whose config.yaml trained something else than the
    study's config for it, before any training: the same rule as train.py --resume
    (run_folder.config_differences), so a folder passed here is never refused mid-study."""
    for run in runs:
        saved = os.path.join(run.cfg.OUTPUT_DIR, "config.yaml")
        if not os.path.isfile(saved):
            continue
        changes, refused = run_folder.config_differences(load_config(saved), run.cfg)
        if refused:
            key = refused[0]
            old, new = changes[key]
            raise ConfigError("%s: this run folder was trained with %s = %r, the study asks for "
                              "%r; choose another --out (or remove the folder)"
                              % (saved, key, old, new))


def check_data(study):
    """The study's data sets load as training loads them (checked once, before the first run):
    the same roots are accepted (a folder, or a CSV list for DATASETS.NAME folder) and the
    same DatasetError names what is wrong."""
    from ..data.datasets import build_datasets

    build_datasets(study.runs[0].cfg)


def read_results(path):
    """The results dict of a finished evaluation at `path`, or None if the file is missing,
    cut short or lacks a finite value of a reported metric (then the run is evaluated again)."""
    try:
        with open(path) as f:
            results = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(results, dict):
        return None
    for key in METRICS:
        value = results.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            return None
    return results


def run_one(run):
    """Train (resuming an interrupted run) and evaluate one run, unless its results file is
    already complete. Returns its outcome: status (finished earlier | trained | resumed |
    evaluated | failed), results, error. A failure is returned, not raised (Ctrl-C is raised)."""
    run_dir = run.cfg.OUTPUT_DIR
    path = evaluator.results_path(run.cfg, run_dir)
    results = read_results(path)
    if results:
        return {"status": "finished earlier", "results": results, "error": None}
    final = os.path.join(run_dir, "model_final.params")
    try:
        if os.path.isfile(final):  # trained to the end (written last, atomically), not evaluated
            status = "evaluated"
        else:
            # run_folder.open_run_folder's own test of a started run: a checkpoint or metrics rows.
            resume = bool(last_checkpoint(run_dir) or run_folder.read_metrics(run_dir))
            loop.train(run.cfg, resume=resume)
            status = "resumed" if resume else "trained"
        results = evaluator.evaluate_params(run.cfg, final)
        evaluator.save_results(results, path)
    except Exception as exc:  # noqa: BLE001 - one failed run must not stop the study
        return {"status": "failed", "results": None,
                "error": "%s: %s" % (type(exc).__name__, error_line(exc))}
    return {"status": status, "results": results, "error": None}


def run_study(base, ablations, repeats=1, out="runs/ablations", overrides=(), toy=False):
    """Plan and check the whole study, then run every run (run_one) and rewrite <out>/report.md,
    report.json and report.png after each. With `toy`, the generated set is written to
    DATASETS.ROOT first if that folder is missing, and the report says what that means.
    Returns the report dict (its "failed" lists the failed runs)."""
    study = plan_study(base, ablations, repeats, out, overrides)
    check_run_folders(study.runs)
    check_report_outputs(out)
    root = study.runs[0].cfg.DATASETS.ROOT
    if toy and not os.path.isdir(root):
        from ..data.toy.market1501 import make_toy_market1501
        summary = make_toy_market1501(root)
        print("generated the toy set: %d train / %d query / %d gallery images in %s"
              % (summary["train_images"], summary["query_images"], summary["gallery_images"], root))
    check_data(study)
    os.makedirs(out, exist_ok=True)
    outcomes = {}
    for i, run in enumerate(study.runs, 1):
        where = "[%d/%d] %s, seed %d" % (i, len(study.runs), run.name, run.seed)
        print("%s: %s" % (where, run.cfg.OUTPUT_DIR), flush=True)
        outcomes[run.name, run.seed] = outcome = run_one(run)
        print("%s: %s%s" % (where, outcome["status"],
                            ": " + outcome["error"] if outcome["error"] else ""), flush=True)
        report = write_report(study, outcomes, toy=toy)
    return report
