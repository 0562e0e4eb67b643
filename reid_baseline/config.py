"""Every knob of reid_baseline, documented next to its default.

The defaults are the recipe of ../shared/RECIPE.md (ResNet-50, one softmax loss, Market-1501
Rank-1 93.1 / mAP 80.3). An experiment is a YAML file that overrides some of them; an ablation
is a YAML file that changes exactly one.
"""
import ast
import os

import yaml
from yacs.config import CfgNode as CN

_C = CN()

# ---------------------------------------------------------------------------- data
_C.DATASETS = CN()
_C.DATASETS.ROOT = "data/market1501"  # Market-1501 root, or the folder holding Market-1501-v15.09.15/
_C.DATASETS.VERIFY_COUNTS = True  # check image/identity counts against the official ones

_C.INPUT = CN()
_C.INPUT.HEIGHT = 384  # network input height (recipe: 384 instead of 256)
_C.INPUT.WIDTH = 128  # network input width
_C.INPUT.FLIP_PROB = 0.5  # training horizontal flip probability (0 disables)
_C.INPUT.PAD = 10  # zero-pad every side by this many px, then random-crop back (0 disables)
_C.INPUT.ERASING_PROB = 0.0  # random erasing probability; off in the code that produced 93.1
_C.INPUT.PIXEL_MEAN = [0.485, 0.456, 0.406]  # ImageNet mean (RGB, 0-1 scale)
_C.INPUT.PIXEL_STD = [0.229, 0.224, 0.225]  # ImageNet std

_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 4  # decoding/augmenting processes (0: in the main process)

# ---------------------------------------------------------------------------- model
_C.MODEL = CN()
_C.MODEL.BACKBONE = "resnet50_v1"  # GluonCV name: resnet{18,34,50,101,152}_v1, resnet{50,101,152}_v1b
_C.MODEL.PRETRAINED = "imagenet"  # "imagenet" (GluonCV model store), a .params file, or "" (random)
_C.MODEL.LAST_STRIDE = 1  # stride of the last ResNet stage (1: 24x8 map at 384x128; 2: ImageNet)
_C.MODEL.POOLING = "avg"  # global pooling of the feature map: avg | max | avgmax (sum of both)
_C.MODEL.BN_BETA = False  # BatchNorm on the feature with a shift (the recipe has none)
_C.MODEL.BN_GAMMA = True  # BatchNorm on the feature with a scale (the reference keeps it)
_C.MODEL.FEAT_ACTIVATION = "none"  # activation on the feature: none | relu
_C.MODEL.CLASSIFIER_BIAS = False  # bias in the identity classifier (the recipe has none)

# ---------------------------------------------------------------------------- training
_C.SOLVER = CN()
_C.SOLVER.OPTIMIZER = "adam"  # adam | sgd (sgd uses SOLVER.MOMENTUM)
_C.SOLVER.BASE_LR = 3.5e-4  # one learning rate for every layer
_C.SOLVER.WEIGHT_DECAY = 5e-4  # L2 weight decay (the reference code's)
_C.SOLVER.MOMENTUM = 0.9  # SGD momentum; unused by Adam
_C.SOLVER.BATCH_SIZE = 32  # images per iteration, over all devices
_C.SOLVER.MAX_EPOCHS = 80  # total epochs
_C.SOLVER.WARMUP_EPOCHS = 10  # linear warm-up epochs; the last one reaches BASE_LR (0 disables)
_C.SOLVER.WARMUP_FACTOR = 0.01  # warm-up starts at BASE_LR * WARMUP_FACTOR (3.5e-6)
_C.SOLVER.STEPS = [35, 60]  # epochs at which the learning rate is multiplied by GAMMA
_C.SOLVER.GAMMA = 0.1  # learning-rate decay factor
_C.SOLVER.SEED = 613  # random seed (the reference's)
_C.SOLVER.LOG_PERIOD = 20  # iterations between reads of loss/accuracy from the device
_C.SOLVER.CHECKPOINT_PERIOD = 10  # epochs between checkpoints (the last epoch is always saved)
_C.SOLVER.KEEP_CHECKPOINTS = 2  # newest checkpoints kept on disk (older ones deleted; 0 keeps all)
_C.SOLVER.EVAL_PERIOD = 0  # epochs between query/gallery evaluations (0: only via evaluate.py)
# Collapse guard: stop (like the NaN guard) when the running mean loss exceeds this many times an
# untrained classifier's loss ln(num_classes); 0 disables. The write-up warns the recipe "can
# suddenly collapse"; a healthy run stays below ln(num_classes) after its first iterations.
_C.SOLVER.COLLAPSE_FACTOR = 3.0
_C.SOLVER.HYBRIDIZE = True  # hybridize with static_alloc/static_shape

# ---------------------------------------------------------------------------- test
_C.TEST = CN()
_C.TEST.BATCH_SIZE = 128  # images per feature-extraction batch
_C.TEST.FLIP_FEATURES = True  # average the features of the image and of its horizontal flip
_C.TEST.NORMALIZE_FEATURES = True  # L2-normalise features before the distance
_C.TEST.DISTANCE = "cosine"  # cosine | euclidean
_C.TEST.AP_MODE = "trapezoid"  # trapezoid (official Market-1501 code) | noninterp (torchreid)
_C.TEST.RERANK = False  # k-reciprocal re-ranking (Zhong et al. 2017), on euclidean distances
_C.TEST.RERANK_K1 = 20  # size of the k-reciprocal neighbourhood
_C.TEST.RERANK_K2 = 6  # neighbours averaged in the local query expansion (1: none)
_C.TEST.RERANK_LAMBDA = 0.3  # weight of the original distance against the Jaccard distance

# ---------------------------------------------------------------------------- run
_C.GPUS = []  # device ids, e.g. [0, 1]; empty: CPU
_C.OUTPUT_DIR = "runs/market1501"  # checkpoints, logs, metrics and the resolved config

_CHOICES = {
    "MODEL.POOLING": ("avg", "max", "avgmax"),
    "MODEL.FEAT_ACTIVATION": ("none", "relu"),
    "MODEL.LAST_STRIDE": (1, 2),
    "SOLVER.OPTIMIZER": ("adam", "sgd"),
    "TEST.DISTANCE": ("cosine", "euclidean"),
    "TEST.AP_MODE": ("trapezoid", "noninterp"),
}


class ConfigError(ValueError):
    """A config file or override names an unknown key or gives a wrong value."""


def get_defaults():
    """A fresh, mutable copy of the defaults (the recipe)."""
    return _C.clone()


def _merge(cfg, other, source, prefix=""):
    """Merge `other` into `cfg` key by key so an error names the full key and the source."""
    for key, value in other.items():
        full = prefix + key
        if key not in cfg:
            raise ConfigError("%s: unknown config key %r" % (source, full))
        if isinstance(cfg[key], CN):
            if not isinstance(value, dict):
                raise ConfigError("%s: %s is a section; expected a mapping, got %r" % (source, full, value))
            _merge(cfg[key], value, source, full + ".")
            continue
        cfg[key] = _coerce(cfg[key], value, full, source)


def _coerce(default, value, key, source):
    """Check `value` against the type of the default; ints are accepted where floats are."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, (list, tuple)):
        # Every list knob holds numbers: ints (GPUS, STEPS) or floats (PIXEL_MEAN/STD).
        item = type(default[0]) if default else int
        ok = isinstance(value, (list, tuple)) and all(
            isinstance(v, (int, float) if item is float else int) and not isinstance(v, bool)
            for v in value)
        value = [item(v) for v in value] if ok else value
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError("%s: %s expects a %s (default %r), got %r"
                          % (source, key, type(default).__name__, default, value))
    return value


def _parse_override(text):
    """Parse a command-line value as a Python literal; bare words stay strings."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _merge_file(cfg, path, seen=()):
    """Merge a YAML file, after the file its `_BASE_` key names (relative to it), if any."""
    if not os.path.isfile(path):
        raise ConfigError("config file not found: %s" % path)
    if os.path.abspath(path) in seen:
        raise ConfigError("%s: _BASE_ chain loops back to itself" % path)
    with open(path) as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as exc:
            raise ConfigError("%s: not valid YAML: %s" % (path, exc)) from exc
    if not isinstance(data, dict):
        raise ConfigError("%s: expected a mapping of config sections" % path)
    base = data.pop("_BASE_", None)
    if base:
        _merge_file(cfg, os.path.join(os.path.dirname(path), base), seen + (os.path.abspath(path),))
    _merge(cfg, data, path)


def load_config(path=None, overrides=()):
    """Defaults, then the YAML file at `path` (and its `_BASE_` file), then `KEY VALUE`
    overrides; checked and frozen. Unknown keys and wrong types raise ConfigError."""
    cfg = get_defaults()
    if path:
        _merge_file(cfg, path)
    overrides = list(overrides)
    if len(overrides) % 2:
        raise ConfigError("overrides come in KEY VALUE pairs; got %r" % (overrides,))
    for key, text in zip(overrides[0::2], overrides[1::2]):
        nested = _parse_override(text)
        for part in reversed(key.split(".")):
            nested = {part: nested}
        _merge(cfg, nested, "command line")
    _check_choices(cfg)
    cfg.freeze()
    return cfg


def _check_choices(cfg):
    for key, allowed in _CHOICES.items():
        section, name = key.split(".")
        if cfg[section][name] not in allowed:
            raise ConfigError("%s must be one of %s, got %r" % (key, allowed, cfg[section][name]))
    if cfg.SOLVER.BATCH_SIZE % max(len(cfg.GPUS), 1):
        raise ConfigError("SOLVER.BATCH_SIZE (%d) must be divisible by the number of GPUs (%d)"
                          % (cfg.SOLVER.BATCH_SIZE, len(cfg.GPUS)))
    steps, first = list(cfg.SOLVER.STEPS), max(2, cfg.SOLVER.WARMUP_EPOCHS)
    if steps != sorted(set(steps)) or (steps and steps[0] < first):
        raise ConfigError("SOLVER.STEPS must be strictly increasing epochs >= %d (after the "
                          "warm-up; MXNet's scheduler cannot decay at epoch 1), got %r"
                          % (first, steps))
    for key in ("SOLVER.MAX_EPOCHS", "SOLVER.BATCH_SIZE", "SOLVER.LOG_PERIOD",
                "SOLVER.CHECKPOINT_PERIOD", "TEST.BATCH_SIZE"):
        section, name = key.split(".")
        if cfg[section][name] < 1:
            raise ConfigError("%s must be >= 1, got %r" % (key, cfg[section][name]))


def save_config(cfg, path):
    """Write the resolved config as YAML (it loads back with load_config)."""
    with open(path, "w") as f:
        f.write(cfg.dump())
