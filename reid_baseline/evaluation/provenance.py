"""What an evaluation evaluated: the run a parameter file belongs to, the config keys that must
match the run's, the test set's name in the output file names, and the record every results
JSON carries (test set, params file and SHA-256, config digest, re-ranking, package version).

A parameter file belongs to a run when a config.yaml sits beside it (model_final.params) or in
the run folder above its checkpoint folder (checkpoints/epoch_XXXX/model.params). Evaluating it
with a config whose feature-defining keys (FEATURE_KEYS) differ from the run's gives numbers of
another model: check_run_config refuses it, naming each key, unless forced. evaluate.py and
ReIDModel.load both go through check_run_config.
"""
import collections
import hashlib
import os
import re

import yaml

from ..config import flatten, get_defaults
from ..errors import ConfigError
from ..fileio import file_sha256

RUN_CONFIG_FILE = "config.yaml"  # engine.run_folder.CONFIG_FILE: the run's resolved config

# Config keys that decide the features of an image for a given parameter file. Left out:
# MODEL.PRETRAINED (only the initial weights), MODEL.BN_GROUP_SIZE (training statistics only),
# MODEL.CLASSIFIER_BIAS (the classifier is not loaded for features), SOLVER.AMP (evaluation
# runs in float32).
FEATURE_KEYS = ("MODEL.BACKBONE", "MODEL.LAST_STRIDE", "MODEL.POOLING", "MODEL.BN_BETA",
                "MODEL.BN_GAMMA", "MODEL.FEAT_ACTIVATION", "INPUT.HEIGHT", "INPUT.WIDTH",
                "INPUT.PIXEL_MEAN", "INPUT.PIXEL_STD", "TEST.FLIP_FEATURES",
                "TEST.NORMALIZE_FEATURES")

_CHECKPOINT_DIR_RE = re.compile(r"^epoch_\d{4,}(_interrupted)?$")

# check_run_config's answer: the run's config.yaml (None without one), its flat values, the
# feature keys the given config changes [(key, run's, given)], and the one-line warning when
# they were forced through ("" otherwise).
RunMatch = collections.namedtuple("RunMatch", "config_path run_values changes warning")


def flat_values(node):
    """{"SECTION.KEY": value} of a config (node or mapping) over the defaults, lists for
    tuples: a key the mapping lacks (a setting newer than the run) counts as its default."""
    values = {k: list(v) if isinstance(v, tuple) else v for k, v in flatten(get_defaults()).items()}
    values.update({k: list(v) if isinstance(v, tuple) else v for k, v in flatten(node).items()})
    return values


def config_changes(saved, cfg, keys=FEATURE_KEYS):
    """[(key, saved value, cfg's value)] of the `keys` whose values differ between the config
    mapping `saved` (e.g. a run's config.yaml) and the config `cfg`, in the order of `keys`."""
    old, new = flat_values(saved), flat_values(cfg)
    return [(k, old.get(k), new.get(k)) for k in keys if old.get(k) != new.get(k)]


def format_changes(changes):
    """"KEY: old -> new; ..." of config_changes' list."""
    def shown(value):
        return repr(value) if isinstance(value, str) else str(value)
    return "; ".join("%s: %s -> %s" % (k, shown(a), shown(b)) for k, a, b in changes)


def run_config_path(params_path):
    """The config.yaml of the run `params_path` belongs to (beside it, or in the run folder
    above its checkpoint folder), or None when there is none."""
    folder = os.path.dirname(os.path.abspath(params_path))
    beside = os.path.join(folder, RUN_CONFIG_FILE)
    if os.path.isfile(beside):
        return beside
    parent = os.path.dirname(folder)
    if _CHECKPOINT_DIR_RE.match(os.path.basename(folder)) and \
            os.path.basename(parent) == "checkpoints":
        above = os.path.join(os.path.dirname(parent), RUN_CONFIG_FILE)
        if os.path.isfile(above):
            return above
    return None


def read_run_config(path):
    """The config mapping in the run's config.yaml `path`; ConfigError when it is not one."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ConfigError("%s cannot be read as a config (%s)"
                          % (path, getattr(exc, "problem", None) or exc)) from exc
    if not isinstance(data, dict):
        raise ConfigError("%s is not a config mapping" % path)
    return data


def check_run_config(cfg, params_path, force=False):
    """Compare `cfg` with the config.yaml of the run `params_path` belongs to (RunMatch). A
    feature-defining key (FEATURE_KEYS) that differs is a ConfigError naming each one as
    `KEY: run -> given`, unless `force`: then RunMatch.warning says it. Without a run config
    nothing is compared."""
    path = run_config_path(params_path)
    if path is None:
        return RunMatch(None, None, [], "")
    saved = read_run_config(path)
    changes = config_changes(saved, cfg)
    if changes and not force:
        raise ConfigError("the config differs from the run's %s in keys that define the "
                          "features: %s; evaluate with the run's config (evaluate.py --run, "
                          "ReIDModel.load(run_dir)) or pass --force (force=True)"
                          % (path, format_changes(changes)))
    warning = ("the config differs from the run's %s in keys that define the features: %s; "
               "the numbers are not the run's" % (path, format_changes(changes))
               if changes else "")
    return RunMatch(path, flat_values(saved), changes, warning)


def query_gallery_of(values):
    """(name, root, subset) of the query/gallery set of flat config values
    (DATASETS.TEST_NAME and TEST_ROOT, "" meaning the training set's NAME and ROOT; the subset
    is CUHK03-NP's box kind, "" for other sets)."""
    name = values["DATASETS.TEST_NAME"] or values["DATASETS.NAME"]
    subset = values["DATASETS.CUHK03_SUBSET"] if name == "cuhk03np" else ""
    return name, values["DATASETS.TEST_ROOT"] or values["DATASETS.ROOT"], subset


def other_set_tag(cfg, run_values):
    """"" when `cfg` tests on the run's own query/gallery set (or no run is known), else the
    name that tells the other set apart in file names: its data set name (with CUHK03-NP's
    subset), or, for a set at another root than the run's or an own-images ("folder") set,
    that root's folder name and a digest of its path (two roots never share a name)."""
    if run_values is None:
        return ""
    name, root, subset = query_gallery_of(flat_values(cfg))
    run_name, run_root, run_subset = query_gallery_of(run_values)
    same_root = os.path.realpath(root) == os.path.realpath(run_root)
    if name == run_name and same_root and subset == run_subset:
        return ""
    if name != run_name and name != "folder":
        return "_".join(filter(None, (name, subset)))
    if same_root:  # the run's CUHK03-NP root, the other subset
        return "_".join((name, subset))
    real = os.path.realpath(root)
    folder = re.sub(r"[^A-Za-z0-9.-]+", "-", os.path.basename(real)).strip(".-") or name
    return "%s-%s" % (folder, hashlib.sha256(real.encode("utf-8", "surrogateescape")).hexdigest()[:8])


def output_suffix(cfg, tag=""):
    """The suffix of an evaluation's file names: "_<tag>" for another test set (other_set_tag),
    then "_rerank" with TEST.RERANK; results<suffix>.json, cmc<suffix>.png, ranklists<suffix>/."""
    return ("_" + tag if tag else "") + ("_rerank" if cfg.TEST.RERANK else "")


def package_version():
    """The installed reid_baseline's version ("unknown" when it runs uninstalled)."""
    from importlib import metadata
    try:
        return metadata.version("reid_baseline")
    except metadata.PackageNotFoundError:
        return "unknown"


def evaluation_record(cfg, params_path, test_set):
    """What a results JSON records about its evaluation: the test set (name, root, query and
    gallery counts), the params file and its SHA-256, the config digest (SHA-256 of the
    resolved config's dump), re-ranking on/off and the package version."""
    name = cfg.DATASETS.TEST_NAME or cfg.DATASETS.NAME
    return {"test_set": {"name": name, "root": os.path.abspath(test_set.root),
                         "num_query": len(test_set.query), "num_gallery": len(test_set.gallery)},
            "params": os.path.abspath(params_path), "params_sha256": file_sha256(params_path),
            "config_sha256": hashlib.sha256(cfg.dump().encode("utf-8")).hexdigest(),
            "rerank": bool(cfg.TEST.RERANK), "package_version": package_version()}
