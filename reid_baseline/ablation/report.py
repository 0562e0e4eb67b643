"""The report of an ablation study (study.py): each config's metrics over its repeats, each
trick's effect classed as the write-up classes them, beside what the write-up and the reference
code's own ablation reported (docs/RECIPE.md); report.md, report.json and report.png, written
atomically.
"""
import collections
import os

import numpy as np

from ..evaluation.evaluator import save_results
from ..fileio import check_output_file, output_path

# The metrics compared, as results.json names them (evaluation.evaluator).
METRICS = collections.OrderedDict([("rank1", "Rank-1"), ("mAP_trapezoid", "mAP (trapezoid AP)"),
                                   ("mAP_noninterp", "mAP (non-interpolated AP)")])

# The write-up's classes of an effect, in points: small below 0.5, medium from 0.5 to 2 (both
# bounds included), large above 2.
SMALL_BELOW, LARGE_ABOVE = 0.5, 2.0
# Gains are rounded to this many decimals first: float noise must not move a gain across a
# bound (93.1 - 92.6 is 0.5000000000000142 in floats, and is 0.5).
DECIMALS = 6

# What was published about the recipe trick each ablation file removes or changes, keyed by
# the file's stem: (the trick, the write-up's class of its effect or "" if it classes none, the
# reference code's own ablation as (Rank-1 gain, mAP gain, the rows compared) or None).
# All from docs/RECIPE.md; the reference's rows are Market-1501, mostly at 256x128.
PUBLISHED = {
    "no_pad_crop": ("zero-pad 10 + random crop", "large gain",
                    (2.6, 4.0, "88.7/72.2 -> 91.3/76.2 with pad-crop, at 256x128")),
    "input_256x128": ("384x128 input instead of 256x128", "medium gain",
                      (0.4, 1.9, "88.7/72.2 at 256x128 -> 89.1/74.1 at 384x128")),
    "random_erasing": ("no random erasing (the write-up counts erasing as a medium gain)",
                       "medium loss", (2.1, 2.4, "with pad-crop: 89.2/73.8 with erasing, "
                                                 "91.3/76.2 without")),
    "no_train_flip": ("horizontal flip in training", "small gain", None),
    "no_test_flip": ("features averaged with the flipped image's", "small gain", None),
    "last_stride_2": ("last stride 1", "large gain",
                      (2.9, 6.7, "88.7/72.2 -> 91.6/78.9 with stride 1, at 256x128")),
    "relu_feature": ("no activation on the feature", "small gain",
                     (3.0, 3.1, "88.7/72.2 without, 85.7/69.1 with ReLU")),
    "bn_with_beta": ("feature BatchNorm without beta (the write-up classes the BN neck as a "
                     "whole)", "large gain", None),
    "bn_no_scale": ("feature BatchNorm with a scale (gamma)", "",
                    (0.3, 2.0, "88.7/72.2 with scale, 88.4/70.2 without")),
    "classifier_bias": ("bias-free classifier", "small gain", None),
    "max_pooling": ("average pooling instead of max", "",
                    (0.1, 1.4, "all tricks: 92.5/80.1 avg, 92.4/78.7 max")),
    "sgd": ("Adam instead of SGD (lr 0.1)", "medium gain", None),
    "no_warmup": ("10-epoch linear warm-up", "small gain", None),
}

SPREAD_RULE = ("the spread of a config is max - min of a metric over its repeats; a gain is "
               "not resolved when its size is below the larger spread of the two configs "
               "(equal counts as resolved); with 1 repeat no spread is measured")
CLASS_RULE = ("small: |gain| < %g; medium: %g <= |gain| <= %g (both bounds are medium); "
              "large: |gain| > %g" % (SMALL_BELOW, SMALL_BELOW, LARGE_ABOVE, LARGE_ABOVE))


def effect_class(gain, spread=None):
    """The write-up's class of a trick's `gain` (points, base - ablation): a dict with the
    rounded gain, size (small | medium | large), sign (gain | loss | none), resolved (None when
    no `spread` was measured, else |gain| >= spread) and label, e.g. "large gain"."""
    gain = round(float(gain), DECIMALS)
    size = "small" if abs(gain) < SMALL_BELOW else "medium" if abs(gain) <= LARGE_ABOVE else "large"
    sign = "gain" if gain > 0 else "loss" if gain < 0 else "none"
    resolved = None if spread is None else abs(gain) >= round(spread, DECIMALS)
    label = "no change" if sign == "none" else "%s %s" % (size, sign)
    return {"gain": gain, "size": size, "sign": sign, "spread": spread, "resolved": resolved,
            "label": label if resolved is not False else label + ", not resolved"}


def summarize(values):
    """Mean, spread (max - min; None for fewer than 2 values) and count of one metric."""
    values = [float(v) for v in values]
    return {"mean": float(np.mean(values)), "n": len(values), "values": values,
            "spread": float(np.ptp(values)) if len(values) > 1 else None}


def _agrees(ours, published_label):
    """True/False when this study resolved a class that can be compared, else None."""
    if not published_label or ours["resolved"] is False:
        return None
    return ours["label"] == published_label


def _config_summaries(study, outcomes):
    """Per config (base first): the knobs it changes, each run's outcome and the summary of
    each metric over its finished runs (None if none finished)."""
    configs = []
    for name, changes in study.changes.items():
        runs = []
        for run in (r for r in study.runs if r.name == name):
            outcome = outcomes.get((name, run.seed), {"status": "pending", "results": None,
                                                      "error": None})
            results = outcome["results"]
            runs.append({"seed": run.seed, "dir": run.cfg.OUTPUT_DIR, "status": outcome["status"],
                         "error": outcome["error"],
                         "results": {m: results[m] for m in METRICS} if results else None})
        done = [r["results"] for r in runs if r["results"]]
        configs.append({"name": name, "changes": changes, "runs": runs, "summary": {
            m: summarize([r[m] for r in done]) for m in METRICS} if done else None})
    return configs


def _effect(base, config):
    """The trick's gain (base - ablation) per metric, classed, beside what was published."""
    trick, writeup, reference = PUBLISHED.get(config["name"], ("", "", None))
    effect = {"ablation": config["name"], "trick": trick, "writeup": writeup, "reference": None,
              "agrees_writeup": None, "agrees_reference": None}
    if reference:
        effect["reference"] = {"rank1": reference[0], "mAP": reference[1], "rows": reference[2],
                               "label": effect_class(reference[0])["label"]}
    if base["summary"] and config["summary"]:
        for m in METRICS:
            b, a = base["summary"][m], config["summary"][m]
            spreads = (b["spread"], a["spread"])
            effect[m] = effect_class(b["mean"] - a["mean"], None if None in spreads else max(spreads))
        effect["agrees_writeup"] = _agrees(effect["rank1"], writeup)
        effect["agrees_reference"] = _agrees(effect["rank1"], reference and
                                             effect["reference"]["label"])
    return effect


def build_report(study, outcomes, toy=False):
    """The report dict of a study (ablation.Study) and the outcomes so far ({(name, seed):
    run_one's dict}; runs without one are "pending")."""
    configs = _config_summaries(study, outcomes)
    cfg = study.runs[0].cfg  # the base's
    weights = ("weights " + cfg.MODEL.PRETRAINED) if cfg.MODEL.PRETRAINED else "random initialisation"
    return {
        "base": study.base or "the recipe (defaults)", "overrides": study.overrides,
        "repeats": study.repeats, "seeds": study.seeds, "out": study.out, "toy": toy,
        "seed_rule": "repeat k (k = 0, 1, ...) of every config, base and ablations alike, trains "
                     "with SOLVER.SEED + k: %s" % ", ".join(map(str, study.seeds)),
        "setting": "%s on %s, %s, %dx%d input, %d epochs, batch %d" % (
            cfg.MODEL.BACKBONE, cfg.DATASETS.ROOT, weights, cfg.INPUT.HEIGHT, cfg.INPUT.WIDTH,
            cfg.SOLVER.MAX_EPOCHS, cfg.SOLVER.BATCH_SIZE),
        "effect": "gain of the recipe's trick = base - ablation, in points",
        "classes": CLASS_RULE, "spread": SPREAD_RULE, "configs": configs,
        "effects": [_effect(configs[0], config) for config in configs[1:]],
        "failed": ["%s seed %d: %s" % (c["name"], r["seed"], r["error"])
                   for c in configs for r in c["runs"] if r["status"] == "failed"]}


def _number(x):
    return "-" if x is None else "%.1f" % x


def _signed(x):
    return "%+.1f" % x


def _metric_cell(summary):
    """"75.7" for one run, "75.7 (spread 1.2, 3 runs)" for several."""
    if summary["spread"] is None:
        return _number(summary["mean"])
    return "%.1f (spread %.1f, %d runs)" % (summary["mean"], summary["spread"], summary["n"])


def _mark(agrees):
    return {True: " ✓", False: " ✗", None: ""}[agrees]


def _knobs(changes):
    return ", ".join("`%s: %s`" % (k, str(v).lower() if isinstance(v, bool) else v)
                     for k, v in changes.items()) or "(the base)"


def render_markdown(report):
    """report.md: the setting and rules, the results table, the effects table, failures."""
    lines = ["# Ablation study: %s" % report["base"], ""]
    if report["toy"]:
        lines += ["**Toy study** on the generated set (scripts/run_ablations.py --toy): it shows "
                  "the machinery, not the tricks. Effects on generated data do not predict "
                  "Market-1501's. The ablation files keep their recipe-scale values, which mean "
                  "something else on this small base (input_256x128 sets INPUT.HEIGHT 256: a "
                  "taller input on this base, not a smaller one).", ""]
    lines += ["- Setting: %s; overrides for every run: %s." % (
                  report["setting"], " ".join(report["overrides"]) or "none"),
              "- Seeds: %s (paired comparisons). Runs: `%s/<config>/seed<seed>/`."
              % (report["seed_rule"], report["out"]),
              "- Effect: %s. An ablation removes or changes one trick of the recipe, so a trick "
              "whose removal costs 2.5 points is a large gain." % report["effect"],
              "- Classes (the write-up's): %s. Gains are rounded to 1e-6 first." % report["classes"],
              "- Spread: %s." % report["spread"],
              "- Published: the write-up's class of the trick and the reference code's own "
              "ablation (docs/RECIPE.md; Market-1501, Rank-1 / mAP gain). ✓ / ✗: this study's Rank-1 "
              "class (size and sign) is / is not the same; no mark: nothing to compare or not "
              "resolved.", "", "## Results", "",
              "| config | knob it changes | runs | %s |" % " | ".join(METRICS.values()),
              "|---|---|---|" + "---:|" * len(METRICS)]
    for config in report["configs"]:
        finished = sum(r["results"] is not None for r in config["runs"])
        cells = ([_metric_cell(config["summary"][m]) for m in METRICS] if config["summary"]
                 else ["-"] * len(METRICS))
        lines.append("| %s | %s | %d of %d | %s |" % (config["name"], _knobs(config["changes"]),
                                                      finished, len(config["runs"]),
                                                      " | ".join(cells)))
    lines += ["", "## Effects of the recipe's tricks (base - ablation, points)", "",
              "| ablation | the recipe's trick | %s | write-up | reference code |"
              % " | ".join(METRICS.values()), "|---|---|" + "---|" * (len(METRICS) + 2)]
    for effect in report["effects"]:
        cells = (["%s %s" % (_signed(effect[m]["gain"]), effect[m]["label"]) for m in METRICS]
                 if "rank1" in effect else ["-"] * len(METRICS))
        ref = effect["reference"]
        ref_cell = ("%s / %s, Rank-1 %s%s (%s)" % (
            _signed(ref["rank1"]), _signed(ref["mAP"]), ref["label"],
            _mark(effect["agrees_reference"]), ref["rows"]) if ref else "-")
        lines.append("| %s | %s | %s | %s | %s |" % (
            effect["ablation"], effect["trick"] or "-", " | ".join(cells),
            (effect["writeup"] + _mark(effect["agrees_writeup"])) if effect["writeup"] else "-",
            ref_cell))
    if report["failed"]:
        lines += ["", "## Failed runs (run the study again to retry them)", ""]
        lines += ["- %s" % line for line in report["failed"]]
    return "\n".join(lines) + "\n"


def plot_effects(report, path):
    """report.png: each ablation's Rank-1 and mAP (trapezoid) gain as bars (error bars: the
    spread, if measured) over the small / medium / large bands. Matplotlib's object API, so no
    global pyplot state; written atomically."""
    from matplotlib.figure import Figure

    effects = [e for e in report["effects"] if "rank1" in e]
    fig = Figure(figsize=(8, 1.6 + 0.5 * max(len(effects), 1)))
    ax = fig.add_subplot()
    reach = [abs(e[m]["gain"]) + (e[m]["spread"] or 0) for e in effects for m in METRICS]
    limit = 1.15 * max([LARGE_ABOVE + 0.5] + reach)
    # Symmetric log scale beyond the large bound, so the small and medium bands stay readable
    # next to gains of 10 points and more.
    ax.set_xscale("symlog", linthresh=LARGE_ABOVE, linscale=2)
    for low, high, colour, name, where in (
            (0, SMALL_BELOW, "#f4f4f4", "small", 0),
            (SMALL_BELOW, LARGE_ABOVE, "#e1ebf5", "medium", (SMALL_BELOW + LARGE_ABOVE) / 2),
            (LARGE_ABOVE, limit, "#c9dbee", "large", (LARGE_ABOVE * limit) ** 0.5)):
        for sign in (-1, 1):
            ax.axvspan(sign * low, sign * high, color=colour, lw=0, zorder=0)
            if where or sign > 0:  # "small" once, across 0
                ax.text(sign * where, 1.01, name, transform=ax.get_xaxis_transform(),
                        ha="center", va="bottom", fontsize=8, color="#555555")
    rows, height = np.arange(len(effects)), 0.38
    for i, (metric, colour) in enumerate((("rank1", "#1f77b4"), ("mAP_trapezoid", "#ff7f0e"))):
        spreads = [e[metric]["spread"] for e in effects]
        ax.barh(rows + (i - 0.5) * height, [e[metric]["gain"] for e in effects], height=height,
                color=colour, label=METRICS[metric], zorder=2, xerr=None if None in spreads
                else spreads, error_kw={"elinewidth": 1, "capsize": 2})
    ax.axvline(0, color="black", lw=0.8, zorder=3)
    ax.set_yticks(rows)
    ax.set_yticklabels([e["ablation"] for e in effects])
    ax.set_ylim(max(len(effects), 1) - 0.5, -0.5)  # first ablation on top
    ax.set_xlim(-limit, limit)
    ticks = [t for t in (0.5, LARGE_ABOVE, 10, 30, 100) if t < limit]
    ax.set_xticks([-t for t in ticks[::-1]] + [0] + ticks)
    ax.set_xticklabels(["%g" % t for t in [-t for t in ticks[::-1]] + [0] + ticks])
    ax.set_xlabel("gain of the recipe's trick = base - ablation (points): > 0 the trick helps")
    ax.set_title("%s%s" % ("toy study (generated data): " if report["toy"] else "",
                           report["base"]), fontsize=9, pad=16)
    if effects:
        ax.legend(loc="best", fontsize=8, framealpha=0.9)
    fig.tight_layout()
    with output_path(path, what="ablation report") as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def _write_text(text, path):
    with output_path(path, what="ablation report") as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


REPORT_FILES = ("report.json", "report.md", "report.png")


def check_report_outputs(out):
    """Before a study starts: no report file in `out` is a user's (or one the package wrote and
    a user edited since); such a file is an OutputError naming it."""
    for name in REPORT_FILES if os.path.isdir(out) else ():
        check_output_file(os.path.join(out, name), what="ablation report",
                          advice="choose another --out (or move the file away)")


def write_report(study, outcomes, toy=False):
    """Write <out>/report.json, report.md and report.png for the outcomes so far; returns the
    report dict."""
    report = build_report(study, outcomes, toy)
    save_results(report, os.path.join(study.out, "report.json"))  # its atomic JSON writer
    _write_text(render_markdown(report), os.path.join(study.out, "report.md"))
    plot_effects(report, os.path.join(study.out, "report.png"))
    return report
