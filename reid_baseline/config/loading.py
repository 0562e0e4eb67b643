"""Loading a config: the defaults, a YAML file (and its `_BASE_` chain), an ablation file's
changes and `KEY VALUE` overrides, merged key by key and checked against the defaults' types,
choices and ranges (defaults.py). Imports neither MXNet nor GluonCV.
"""
import ast
import math
import os

import yaml
from yacs.config import CfgNode as CN

from ..environment import device_count, worker_count
from ..errors import ConfigError
from .defaults import CHOICES, RANGES, get_defaults

# A config file larger than this is refused before it is parsed.
MAX_CONFIG_BYTES = 1 << 20  # 1 MiB
# The most YAML nodes (mappings, lists, values) a config file may hold; YAML aliases (*name)
# are refused outright, so a small file cannot expand into a huge value.
MAX_YAML_NODES = 10_000
# Characters of a value an error message shows; longer values end in "...".
MAX_SHOWN_CHARS = 200


def _shown(value):
    """repr(value), cut to MAX_SHOWN_CHARS characters."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN_CHARS else text[:MAX_SHOWN_CHARS] + "..."


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases and with at most MAX_YAML_NODES nodes."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.YAMLError("line %d: YAML aliases (*name) are not allowed in a config file"
                                 % (mark.line + 1))
        self._nodes = getattr(self, "_nodes", 0) + 1
        if self._nodes > MAX_YAML_NODES:
            raise yaml.YAMLError("more than MAX_YAML_NODES (%d) values" % MAX_YAML_NODES)
        return super().compose_node(parent, index)


def _merge(cfg, other, source, prefix=""):
    """Merge `other` into `cfg` key by key so an error names the full key and the source."""
    for key, value in other.items():
        if not isinstance(key, str):
            raise ConfigError("%s: config keys are words; got the key %s%s"
                              % (source, prefix, _shown(key)))
        full = prefix + key
        if key not in cfg:
            raise ConfigError("%s: unknown config key %s" % (source, _shown(full)))
        if isinstance(cfg[key], CN):
            if not isinstance(value, dict):
                raise ConfigError("%s: %s is a section; expected a mapping, got %s" % (source, full, _shown(value)))
            _merge(cfg[key], value, source, full + ".")
            continue
        cfg[key] = _coerce(cfg[key], value, full, source)


def _coerce(default, value, key, source):
    """Check `value` against the type of the default; ints are accepted where floats are."""
    if key == "GPUS":  # the one knob that is a word or a list
        if value == "auto" or (isinstance(value, (list, tuple)) and all(
                isinstance(v, int) and not isinstance(v, bool) for v in value)):
            return value if value == "auto" else list(value)
        raise ConfigError('%s: GPUS expects "auto" or a list of GPU ids, e.g. [0, 1] ([]: the '
                          'CPU), got %s' % (source, _shown(value)))
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, (list, tuple)):
        # Every list knob holds numbers: ints (STEPS) or floats (PIXEL_MEAN/STD).
        item = type(default[0]) if default else int
        ok = isinstance(value, (list, tuple)) and all(
            isinstance(v, (int, float) if item is float else int) and not isinstance(v, bool)
            for v in value)
        value = [item(v) for v in value] if ok else value
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError("%s: %s expects a %s (default %r), got %s"
                          % (source, key, type(default).__name__, default, _shown(value)))
    return value


def _parse_override(text):
    """Parse a command-line value as a Python literal; bare words stay strings."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _read_yaml(path):
    """The mapping a YAML config file holds; any problem with the file is a ConfigError."""
    if os.path.isdir(path):
        raise ConfigError("%s: is a folder; expected a YAML config file" % path)
    if not os.path.isfile(path):
        raise ConfigError("config file not found: %s" % path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError("%s: larger than MAX_CONFIG_BYTES (%d bytes); not a config file"
                              % (path, MAX_CONFIG_BYTES))
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError("%s: not UTF-8 text; expected a YAML config file" % path) from exc
    except OSError as exc:
        raise ConfigError("%s: cannot be read: %s" % (path, exc.strerror or exc)) from exc
    try:
        data = yaml.load(text, Loader=_ConfigLoader) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)  # PyYAML's own text spans several lines
        where = " (line %d)" % (mark.line + 1) if mark else ""
        raise ConfigError("%s: not valid YAML%s: %s"
                          % (path, where, getattr(exc, "problem", None) or exc)) from exc
    if not isinstance(data, dict):
        raise ConfigError("%s: expected a mapping of config sections" % path)
    return data


def _merge_file(cfg, path, seen=()):
    """Merge a YAML file, after the file its `_BASE_` key names (relative to it), if any."""
    if os.path.abspath(path) in seen:
        raise ConfigError("%s: _BASE_ chain loops back to itself" % path)
    data = _read_yaml(path)
    base = data.pop("_BASE_", None)
    if base is not None and not isinstance(base, str):
        raise ConfigError("%s: _BASE_ expects one file name (a string), got %s"
                          % (path, _shown(base)))
    if base:
        _merge_file(cfg, os.path.join(os.path.dirname(path), base), seen + (os.path.abspath(path),))
    _merge(cfg, data, path)


def _nest(key, value):
    """{"A": {"B": value}} for the key "A.B"."""
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def flatten(mapping, prefix=""):
    """{"SECTION.KEY": value} for a (nested) config mapping."""
    flat = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat.update(flatten(value, prefix + key + "."))
        else:
            flat[prefix + key] = value
    return flat


def ablation_changes(path):
    """The knobs the ablation file at `path` changes, as {"SECTION.KEY": value}: only the keys
    the file itself sets (not its `_BASE_` chain, not its OUTPUT_DIR), checked like any config.
    A file that changes nothing is a ConfigError."""
    data = _read_yaml(path)
    data.pop("_BASE_", None)
    data.pop("OUTPUT_DIR", None)
    cfg = get_defaults()
    _merge(cfg, data, path)  # names unknown keys and wrong types; coerces ints to floats
    flat = flatten(cfg)
    changes = {key: flat[key] for key in flatten(data)}
    if not changes:
        raise ConfigError("%s: changes no config knob (_BASE_ and OUTPUT_DIR do not count)" % path)
    _check_values(changes, path + ": ")
    return changes


def load_config(path=None, overrides=(), ablation=None):
    """Defaults, then the YAML file at `path` (and its `_BASE_` file), then the knobs the
    `ablation` file changes (see ablation_changes) with OUTPUT_DIR moved to
    <OUTPUT_DIR>_ablations/<ablation file name>, then `KEY VALUE` overrides; checked and
    frozen. Unknown keys, wrong types and values out of range raise ConfigError."""
    cfg = get_defaults()
    if path:
        _merge_file(cfg, path)
    if ablation:
        changes = ablation_changes(ablation)
        # Each ablation gets its own run folder beside (not inside: the demo may replace the
        # base run) the base run, so runs never mix.
        stem = os.path.splitext(os.path.basename(ablation))[0]
        changes["OUTPUT_DIR"] = os.path.join(cfg.OUTPUT_DIR.rstrip("/\\") + "_ablations", stem)
        for key, value in changes.items():
            _merge(cfg, _nest(key, value), ablation)
    overrides = list(overrides)
    if len(overrides) % 2:
        raise ConfigError("overrides come in KEY VALUE pairs; got %s" % _shown(overrides))
    for key, text in zip(overrides[0::2], overrides[1::2], strict=True):
        _merge(cfg, _nest(key, _parse_override(text)), "command line")
    _check(cfg)
    cfg.freeze()
    return cfg


def _check_values(flat, prefix=""):
    """Check each {"SECTION.KEY": value} on its own: finite numbers, choices and ranges."""
    for key, value in flat.items():
        numbers = value if isinstance(value, list) else [value]
        if any(isinstance(x, float) and not math.isfinite(x) for x in numbers):
            raise ConfigError("%s%s must be %s, got %s" % (prefix, key, "finite numbers" if
                              isinstance(value, list) else "a finite number", _shown(value)))
        if key in CHOICES and value not in CHOICES[key]:
            raise ConfigError("%s%s must be one of %s, got %s"
                              % (prefix, key, CHOICES[key], _shown(value)))
        if key in RANGES and not RANGES[key][0](value):
            raise ConfigError("%s%s must be %s, got %s"
                              % (prefix, key, RANGES[key][1], _shown(value)))


def _check(cfg):
    """Check every knob, then the knobs that depend on each other."""
    _check_values(flatten(cfg))
    workers = worker_count(cfg)
    devices = workers * device_count(cfg)
    split = ("%d workers x %d devices" % (workers, device_count(cfg)) if workers > 1
             else "%d devices" % devices)
    if cfg.SOLVER.BATCH_SIZE % devices:
        raise ConfigError("SOLVER.BATCH_SIZE (%d) must be divisible by the number of GPUs (%d)"
                          % (cfg.SOLVER.BATCH_SIZE, devices) if workers == 1 else
                          "SOLVER.BATCH_SIZE (%d, the global batch) must be divisible by the "
                          "%s (%d)" % (cfg.SOLVER.BATCH_SIZE, split, devices))
    per_device = cfg.SOLVER.BATCH_SIZE // devices
    if cfg.MODEL.BN_GROUP_SIZE and per_device % cfg.MODEL.BN_GROUP_SIZE:
        raise ConfigError("MODEL.BN_GROUP_SIZE (%d) must divide the per-device batch "
                          "(SOLVER.BATCH_SIZE %d / %s = %d)"
                          % (cfg.MODEL.BN_GROUP_SIZE, cfg.SOLVER.BATCH_SIZE, split, per_device))
    # lr(epoch) is multiplied by GAMMA from each step's epoch on: a step inside the warm-up
    # would cut the rising rate short.
    steps, first = list(cfg.SOLVER.STEPS), max(1, cfg.SOLVER.WARMUP_EPOCHS)
    if steps != sorted(set(steps)) or (steps and steps[0] < first):
        raise ConfigError("SOLVER.STEPS must be strictly increasing epochs >= %d (after the "
                          "warm-up), got %r" % (first, steps))


def save_config(cfg, path):
    """Write the resolved config as YAML (it loads back with load_config)."""
    with open(path, "w") as f:
        f.write(cfg.dump())
