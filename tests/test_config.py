"""Config: recipe defaults, YAML + overrides, errors naming the key, ablations change one knob."""
import glob
import os

import pytest

from reid_baseline.config import (
    ConfigError,
    ablation_changes,
    device_count,
    get_defaults,
    load_config,
    save_config,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "configs", "market1501.yml")
ABLATIONS = sorted(glob.glob(os.path.join(ROOT, "configs", "ablations", "*.yml")))


def _flat(cfg, prefix=""):
    out = {}
    for key, value in cfg.items():
        if hasattr(value, "items"):
            out.update(_flat(value, prefix + key + "."))
        else:
            out[prefix + key] = value
    return out


def test_defaults_are_the_recipe():
    cfg = get_defaults()
    expected = {
        "INPUT.HEIGHT": 384, "INPUT.WIDTH": 128, "INPUT.PAD": 10, "INPUT.FLIP_PROB": 0.5,
        "INPUT.ERASING_PROB": 0.0, "MODEL.BACKBONE": "resnet50_v1", "MODEL.PRETRAINED": "imagenet",
        "MODEL.LAST_STRIDE": 1, "MODEL.POOLING": "avg", "MODEL.BN_BETA": False,
        "MODEL.BN_GAMMA": True, "MODEL.FEAT_ACTIVATION": "none", "MODEL.CLASSIFIER_BIAS": False,
        "SOLVER.OPTIMIZER": "adam", "SOLVER.BASE_LR": 3.5e-4, "SOLVER.WEIGHT_DECAY": 5e-4,
        "SOLVER.BATCH_SIZE": 32, "SOLVER.MAX_EPOCHS": 80, "SOLVER.WARMUP_EPOCHS": 10,
        "SOLVER.WARMUP_FACTOR": 0.01, "SOLVER.STEPS": [35, 60], "SOLVER.GAMMA": 0.1,
        "INPUT.PIXEL_MEAN": [0.485, 0.456, 0.406], "INPUT.PIXEL_STD": [0.229, 0.224, 0.225],
        "TEST.FLIP_FEATURES": True, "TEST.NORMALIZE_FEATURES": True, "GPUS": "auto",
    }
    flat = _flat(cfg)
    assert {k: flat[k] for k in expected} == expected


def test_recipe_file_equals_defaults_but_nothing_else():
    assert _flat(load_config(RECIPE)) == _flat(get_defaults())


def test_file_then_overrides(tmp_path):
    path = tmp_path / "exp.yml"
    path.write_text("SOLVER:\n  BASE_LR: 0.001\n  STEPS: [20, 40]\n")
    cfg = load_config(str(path), ["SOLVER.MAX_EPOCHS", "40", "GPUS", "[0,1]", "MODEL.POOLING", "max"])
    assert cfg.SOLVER.BASE_LR == 0.001 and cfg.SOLVER.STEPS == [20, 40]
    assert cfg.SOLVER.MAX_EPOCHS == 40 and cfg.GPUS == [0, 1] and cfg.MODEL.POOLING == "max"
    with pytest.raises(AttributeError):
        cfg.SOLVER.BASE_LR = 1.0  # frozen


@pytest.mark.parametrize("text, words", [
    ("SOLVER:\n  BASE_RL: 0.1\n", ["SOLVER.BASE_RL", "unknown"]),
    ("SOLVERS:\n  BASE_LR: 0.1\n", ["SOLVERS", "unknown"]),
    ("SOLVER:\n  MAX_EPOCHS: ten\n", ["SOLVER.MAX_EPOCHS", "int"]),
    ("MODEL:\n  LAST_STRIDE: 1.5\n", ["MODEL.LAST_STRIDE", "int"]),
    ("MODEL:\n  BN_BETA: 1\n", ["MODEL.BN_BETA", "bool"]),
    ("SOLVER: 3\n", ["SOLVER", "mapping"]),
    ("- a\n- b\n", ["mapping"]),
    ("SOLVER: [\n", ["not valid YAML"]),
])
def test_bad_file_errors_name_the_file_and_key(tmp_path, text, words):
    path = tmp_path / "bad.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    for word in words + [str(path)]:
        assert word in str(err.value)


def test_value_outside_the_choices_names_the_key_and_choices():
    with pytest.raises(ConfigError, match=r"MODEL.POOLING must be one of \('avg', 'max', 'avgmax'\)"):
        load_config(None, ["MODEL.POOLING", "mean"])


@pytest.mark.parametrize("warmup, steps, first", [
    ("0", "[1, 2]", None), ("1", "[1]", None), ("10", "[10, 11]", None),  # right after warm-up
    ("0", "[0]", 1), ("2", "[1, 5]", 2), ("10", "[9]", 10),  # at epoch 0, or inside the warm-up
])
def test_steps_are_epochs_after_the_warm_up(warmup, steps, first):
    overrides = ["SOLVER.WARMUP_EPOCHS", warmup, "SOLVER.STEPS", steps]
    if first is None:
        assert load_config(None, overrides).SOLVER.STEPS == eval(steps)
        return
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert str(err.value) == ("SOLVER.STEPS must be strictly increasing epochs >= %d (after the "
                              "warm-up), got %s" % (first, steps.replace(",", ", ").replace("  ", " ")))


def test_bad_overrides():
    with pytest.raises(ConfigError, match="TEST.AP_MOD"):
        load_config(None, ["TEST.AP_MOD", "trapezoid"])
    with pytest.raises(ConfigError, match="pairs"):
        load_config(None, ["SOLVER.BASE_LR"])
    with pytest.raises(ConfigError, match="SOLVER.BASE_LR expects a float"):
        load_config(None, ["SOLVER.BASE_LR", "fast"])
    with pytest.raises(ConfigError, match="divisible"):
        load_config(None, ["GPUS", "[0,1,2]"])
    with pytest.raises(ConfigError, match='GPUS expects "auto" or a list of GPU ids'):
        load_config(None, ["GPUS", "['0']"])
    with pytest.raises(ConfigError, match="SOLVER.STEPS expects a list"):
        load_config(None, ["SOLVER.STEPS", "[35.5]"])
    with pytest.raises(ConfigError, match="SOLVER.STEPS must be strictly increasing"):
        load_config(None, ["SOLVER.STEPS", "[60, 35]"])
    with pytest.raises(ConfigError, match="SOLVER.STEPS must be strictly increasing epochs >= 10"):
        load_config(None, ["SOLVER.STEPS", "[5, 20]"])  # a decay inside the warm-up
    with pytest.raises(ConfigError, match="SOLVER.CHECKPOINT_PERIOD must be >= 1"):
        load_config(None, ["SOLVER.CHECKPOINT_PERIOD", "0"])
    with pytest.raises(ConfigError, match="not found"):
        load_config("no/such/file.yml")


@pytest.mark.parametrize("gpus", ["[0]", "auto", "[]"])
def test_saved_config_loads_back(tmp_path, gpus):
    cfg = load_config(RECIPE, ["SOLVER.BASE_LR", "0.01", "GPUS", gpus])
    save_config(cfg, str(tmp_path / "config.yaml"))
    assert _flat(load_config(str(tmp_path / "config.yaml"))) == _flat(cfg)


@pytest.mark.parametrize("text, gpus", [("GPUS: auto\n", "auto"), ("GPUS: []\n", []),
                                        ("GPUS: [0, 1]\n", [0, 1]), ("OUTPUT_DIR: x\n", "auto")])
def test_gpus_is_auto_or_a_list_of_ids(tmp_path, text, gpus):
    path = tmp_path / "exp.yml"
    path.write_text(text)
    assert load_config(str(path)).GPUS == gpus


@pytest.mark.parametrize("text", ["GPUS: gpu\n", "GPUS: 0\n", "GPUS: [auto]\n",
                                  "GPUS: [true]\n", "GPUS: [0.5]\n"])
def test_gpus_that_is_neither_auto_nor_ids_names_the_key_and_what_it_expects(tmp_path, text):
    path = tmp_path / "exp.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    assert str(err.value).startswith('%s: GPUS expects "auto" or a list of GPU ids, e.g. [0, 1] '
                                     '([]: the CPU), got ' % path)


def test_auto_counts_as_one_device_in_the_batch_checks():
    assert device_count(load_config(None, ["GPUS", "auto"])) == 1
    assert device_count(load_config(None, ["GPUS", "[]"])) == 1
    assert device_count(load_config(None, ["GPUS", "[2, 0, 1, 3]"])) == 4
    # 33 images on one device is fine; over two it is not.
    assert load_config(None, ["SOLVER.BATCH_SIZE", "33"]).SOLVER.BATCH_SIZE == 33
    with pytest.raises(ConfigError, match=r"SOLVER.BATCH_SIZE \(33\) must be divisible by the "
                                          r"number of GPUs \(2\)"):
        load_config(None, ["SOLVER.BATCH_SIZE", "33", "GPUS", "[0, 1]"])
    # BN groups of 32 fit auto's one device batch of 32, not two of 16.
    assert load_config(None, ["MODEL.BN_GROUP_SIZE", "32"]).MODEL.BN_GROUP_SIZE == 32
    with pytest.raises(ConfigError, match=r"SOLVER.BATCH_SIZE 32 / 2 devices = 16"):
        load_config(None, ["MODEL.BN_GROUP_SIZE", "32", "GPUS", "[0, 1]"])


def test_base_chain_loop_is_an_error(tmp_path):
    (tmp_path / "a.yml").write_text("_BASE_: b.yml\n")
    (tmp_path / "b.yml").write_text("_BASE_: a.yml\n")
    with pytest.raises(ConfigError, match="loops"):
        load_config(str(tmp_path / "a.yml"))


def test_there_is_an_ablation_for_each_trick():
    names = {os.path.basename(p)[:-4] for p in ABLATIONS}
    assert {"no_pad_crop", "input_256x128", "last_stride_2", "relu_feature", "bn_with_beta",
            "classifier_bias", "sgd", "no_warmup", "max_pooling", "random_erasing"} <= names


@pytest.mark.parametrize("path", ABLATIONS, ids=os.path.basename)
def test_each_ablation_changes_exactly_one_knob_and_builds(path):
    import mxnet as mx

    from reid_baseline.data.transforms import build_train_transform
    from reid_baseline.engine.solver import build_trainer
    from reid_baseline.modeling.network import build_model

    recipe, cfg = _flat(load_config(RECIPE)), _flat(load_config(path))
    changed = {k for k in recipe if recipe[k] != cfg[k]} - {"OUTPUT_DIR"}
    # The optimizer ablation is the one pair: an optimizer needs its own learning rate.
    assert len(changed) == 1 or changed == {"SOLVER.OPTIMIZER", "SOLVER.BASE_LR"}, changed
    assert cfg["OUTPUT_DIR"] != recipe["OUTPUT_DIR"]  # runs of different ablations never mix
    cfg = load_config(path, ["MODEL.PRETRAINED", "", "MODEL.BACKBONE", "resnet18_v1"])
    net = build_model(cfg, num_classes=5)
    build_trainer(cfg, net.collect_params())
    build_train_transform(cfg)
    logits, feat = net(mx.nd.zeros((2, 3, 64, 32)))
    assert logits.shape == (2, 5) and feat.shape == (2, 512)


def test_config_that_is_not_utf8_text_names_the_file(tmp_path):
    path = tmp_path / "binary.yml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not UTF-8 text") as err:
        load_config(str(path))
    assert str(path) in str(err.value)


def test_config_path_that_is_a_folder_names_it(tmp_path):
    with pytest.raises(ConfigError, match="is a folder") as err:
        load_config(str(tmp_path))
    assert str(tmp_path) in str(err.value)


def test_unreadable_config_names_the_file(tmp_path, monkeypatch):
    """Runs as root too (root reads a chmod 0 file): the read itself is refused."""
    import builtins

    path = tmp_path / "secret.yml"
    path.write_text("SOLVER:\n  BASE_LR: 0.1\n")
    real_open = builtins.open

    def refusing_open(file, *args, **kwargs):
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refusing_open)
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    assert str(err.value) == "%s: cannot be read: Permission denied" % path
    monkeypatch.undo()
    fifo = tmp_path / "fifo.yml"  # a named pipe in the file's place: an error, never a hang
    os.mkfifo(str(fifo))
    with pytest.raises(ConfigError) as err:
        load_config(str(fifo))
    assert str(fifo) in str(err.value) and "\n" not in str(err.value)


def test_invalid_yaml_is_reported_in_one_line(tmp_path):
    path = tmp_path / "bad.yml"
    path.write_text("SOLVER: [\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    assert "\n" not in str(err.value) and "line 2" in str(err.value)


@pytest.mark.parametrize("key, value, message", [
    ("INPUT.HEIGHT", "0", "INPUT.HEIGHT must be >= 16, got 0"),
    ("INPUT.WIDTH", "8", "INPUT.WIDTH must be >= 16, got 8"),
    ("INPUT.FLIP_PROB", "1.5", "INPUT.FLIP_PROB must be in [0, 1], got 1.5"),
    ("INPUT.ERASING_PROB", "-0.1", "INPUT.ERASING_PROB must be in [0, 1], got -0.1"),
    ("INPUT.PAD", "-3", "INPUT.PAD must be >= 0, got -3"),
    ("INPUT.PIXEL_MEAN", "[0.5, 0.5]", "INPUT.PIXEL_MEAN must be 3 numbers (R, G, B) in [0, 1]"),
    ("INPUT.PIXEL_MEAN", "[124, 116, 104]", "INPUT.PIXEL_MEAN must be 3 numbers (R, G, B) in"),
    ("INPUT.PIXEL_STD", "[0.2, 0, 0.2]", "INPUT.PIXEL_STD must be 3 numbers (R, G, B) > 0"),
    ("DATALOADER.NUM_WORKERS", "-1", "DATALOADER.NUM_WORKERS must be >= 0, got -1"),
    ("SOLVER.BASE_LR", "-1", "SOLVER.BASE_LR must be > 0, got -1.0"),
    ("SOLVER.BASE_LR", "0", "SOLVER.BASE_LR must be > 0, got 0.0"),
    ("SOLVER.BASE_LR", "1e999", "SOLVER.BASE_LR must be a finite number, got inf"),
    ("SOLVER.WEIGHT_DECAY", "-1e-4", "SOLVER.WEIGHT_DECAY must be >= 0, got -0.0001"),
    ("SOLVER.MOMENTUM", "1", "SOLVER.MOMENTUM must be in [0, 1), got 1.0"),
    ("SOLVER.BATCH_SIZE", "0", "SOLVER.BATCH_SIZE must be >= 1, got 0"),
    ("SOLVER.MAX_EPOCHS", "0", "SOLVER.MAX_EPOCHS must be >= 1, got 0"),
    ("SOLVER.WARMUP_EPOCHS", "-1", "SOLVER.WARMUP_EPOCHS must be >= 0, got -1"),
    ("SOLVER.WARMUP_FACTOR", "0", "SOLVER.WARMUP_FACTOR must be in (0, 1], got 0.0"),
    ("SOLVER.GAMMA", "2", "SOLVER.GAMMA must be in (0, 1], got 2.0"),
    ("SOLVER.SEED", "-1", "SOLVER.SEED must be in [0, 2**32)"),
    ("SOLVER.LOG_PERIOD", "0", "SOLVER.LOG_PERIOD must be >= 1, got 0"),
    ("SOLVER.CHECKPOINT_PERIOD", "0", "SOLVER.CHECKPOINT_PERIOD must be >= 1, got 0"),
    ("SOLVER.KEEP_CHECKPOINTS", "-1", "SOLVER.KEEP_CHECKPOINTS must be >= 0, got -1"),
    ("SOLVER.EVAL_PERIOD", "-1", "SOLVER.EVAL_PERIOD must be >= 0, got -1"),
    ("SOLVER.COLLAPSE_FACTOR", "0.5", "SOLVER.COLLAPSE_FACTOR must be 0 (off) or > 1, got 0.5"),
    ("TEST.BATCH_SIZE", "0", "TEST.BATCH_SIZE must be >= 1, got 0"),
    ("TEST.RERANK_K1", "0", "TEST.RERANK_K1 must be >= 1, got 0"),
    ("TEST.RERANK_K2", "0", "TEST.RERANK_K2 must be >= 1, got 0"),
    ("TEST.RERANK_LAMBDA", "1.5", "TEST.RERANK_LAMBDA must be in [0, 1], got 1.5"),
    ("GPUS", "[-1]", 'GPUS must be "auto" or distinct GPU ids >= 0, got [-1]'),
    ("GPUS", "[0, 0]", 'GPUS must be "auto" or distinct GPU ids >= 0, got [0, 0]'),
])
def test_value_out_of_range_names_the_key_and_the_range(key, value, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [key, value])
    assert str(err.value).startswith(message)


@pytest.mark.parametrize("text", ["SOLVER:\n  GAMMA: .nan\n",
                                  "INPUT:\n  PIXEL_STD: [0.2, .inf, 0.2]\n"])
def test_nan_and_inf_in_a_file_are_rejected(tmp_path, text):
    path = tmp_path / "nan.yml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="must be (a finite number|finite numbers)"):
        load_config(str(path))


def test_range_edges_that_are_allowed():
    cfg = load_config(None, ["INPUT.PAD", "0", "INPUT.FLIP_PROB", "0", "SOLVER.WARMUP_EPOCHS", "0",
                             "SOLVER.COLLAPSE_FACTOR", "0", "SOLVER.KEEP_CHECKPOINTS", "0",
                             "DATALOADER.NUM_WORKERS", "0", "SOLVER.GAMMA", "1", "GPUS", "[1, 0]",
                             "INPUT.HEIGHT", "64", "INPUT.WIDTH", "32"])
    assert cfg.INPUT.PAD == 0 and cfg.SOLVER.COLLAPSE_FACTOR == 0 and cfg.GPUS == [1, 0]


def _yaml_values(path):
    """{KEY.SUB: value} that the YAML file itself sets (not its _BASE_)."""
    import yaml

    with open(path) as f:
        data = yaml.safe_load(f) or {}
    data.pop("_BASE_", None)
    return _flat(data)


def test_defaults_and_every_shipped_config_pass_the_checks():
    assert _flat(load_config()) == _flat(get_defaults())
    toy = os.path.join(ROOT, "configs", "demo_toy.yml")
    paths = sorted(glob.glob(os.path.join(ROOT, "configs", "*.yml"))) + ABLATIONS
    assert len(paths) >= len(ABLATIONS) + 5 and len(ABLATIONS) >= 10
    for path in paths:
        cfg = _flat(load_config(path))
        for key, value in _yaml_values(path).items():  # every value the file sets is taken
            got = cfg[key]
            assert (list(got) if isinstance(got, (list, tuple)) else got) == value, (path, key)
        on_toy, toy_cfg = _flat(load_config(toy, ablation=path)), _flat(load_config(toy))
        changed = {k for k in toy_cfg if toy_cfg[k] != on_toy[k]} - {"OUTPUT_DIR"}
        assert changed <= set(_yaml_values(path)), path  # an ablation sets only its own knobs


@pytest.mark.parametrize("path", ABLATIONS, ids=os.path.basename)
def test_every_ablation_file_changes_some_knob_but_not_output_dir(path):
    changes = ablation_changes(path)
    assert changes and "OUTPUT_DIR" not in changes
    assert all(_flat(load_config(path))[key] == value for key, value in changes.items())


def test_ablation_on_the_toy_config_changes_only_its_knob():
    toy = os.path.join(ROOT, "configs", "demo_toy.yml")
    ablation = os.path.join(ROOT, "configs", "ablations", "no_pad_crop.yml")
    cfg, base = _flat(load_config(toy, ablation=ablation)), _flat(load_config(toy))
    assert cfg["INPUT.PAD"] == 0
    assert cfg["OUTPUT_DIR"] == os.path.join("runs/demo_toy_ablations", "no_pad_crop")
    assert {k for k in base if base[k] != cfg[k]} == {"INPUT.PAD", "OUTPUT_DIR"}
    # The toy config's own values survive (the ablation's _BASE_, the recipe, is not applied).
    assert cfg["INPUT.HEIGHT"] == 128 and cfg["DATASETS.ROOT"] == "data/toy_market1501"


def test_ablation_then_overrides_and_an_explicit_output_dir():
    sgd = os.path.join(ROOT, "configs", "ablations", "sgd.yml")
    cfg = load_config(None, ["SOLVER.BASE_LR", "0.05", "OUTPUT_DIR", "elsewhere"], ablation=sgd)
    assert cfg.SOLVER.OPTIMIZER == "sgd" and cfg.SOLVER.BASE_LR == 0.05
    assert cfg.OUTPUT_DIR == "elsewhere"


@pytest.mark.parametrize("text, message", [
    ("_BASE_: ../market1501.yml\nOUTPUT_DIR: runs/x\n", "changes no config knob"),
    ("INPUT:\n  PADD: 0\n", "unknown config key 'INPUT.PADD'"),
    ("INPUT:\n  PAD: -1\n", "INPUT.PAD must be >= 0, got -1"),
    ("MODEL:\n  POOLING: mean\n", "MODEL.POOLING must be one of"),
])
def test_bad_ablation_file_names_the_file_and_key(tmp_path, text, message):
    path = tmp_path / "ablation.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        ablation_changes(str(path))
    assert str(err.value).startswith(str(path) + ": ") and message in str(err.value)


def test_the_reference_run_config_is_the_recipe_but_for_three_knobs():
    """configs/reference_run.yml: the run that printed 93.1 / 80.3 (RECIPE.md)."""
    reference = load_config(os.path.join(ROOT, "configs", "reference_run.yml"))
    recipe = load_config(RECIPE)
    assert reference.MODEL.BN_GROUP_SIZE == 8 and reference.MODEL.PRETRAINED == "imagenet-mxnet"
    assert reference.SOLVER.STEPS == [30, 55] and reference.SOLVER.MAX_EPOCHS == 80
    assert reference.SOLVER.WARMUP_EPOCHS == 10 and reference.SOLVER.BATCH_SIZE == 32
    differ = {k for k, v in _flat(reference).items() if _flat(recipe)[k] != v}
    assert differ == {"MODEL.BN_GROUP_SIZE", "MODEL.PRETRAINED", "SOLVER.STEPS", "OUTPUT_DIR"}
    four_gpus = load_config(os.path.join(ROOT, "configs", "reference_run.yml"), ["GPUS", "[0,1,2,3]"])
    assert four_gpus.SOLVER.BATCH_SIZE // len(four_gpus.GPUS) == four_gpus.MODEL.BN_GROUP_SIZE



def test_config_file_over_the_size_limit_is_refused_before_parsing(tmp_path):
    from reid_baseline.config.loading import MAX_CONFIG_BYTES
    path = tmp_path / "big.yml"
    path.write_text("# " + "x" * MAX_CONFIG_BYTES + "\n")
    with pytest.raises(ConfigError, match="big.yml: larger than MAX_CONFIG_BYTES"):
        load_config(str(path))


@pytest.mark.timeout(10)
def test_yaml_alias_bomb_is_refused_fast(tmp_path):
    lines, prev = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'], "a"
    for name in "bcdefgh":
        lines.append("%s: &%s [%s]" % (name, name, ",".join(["*" + prev] * 9)))
        prev = name
    lines.append("INPUT:\n  PIXEL_MEAN: [%s]" % ",".join(["*" + prev] * 9))
    path = tmp_path / "bomb.yml"
    path.write_text("\n".join(lines) + "\n")
    assert path.stat().st_size < 1000
    with pytest.raises(ConfigError, match="bomb.yml: .*aliases") as err:
        load_config(str(path))
    assert len(str(err.value)) < 300


@pytest.mark.parametrize("text, words", [
    ("_BASE_: [file.yml]\n", "_BASE_ expects one file name"),
    ("_BASE_: 5\n", "_BASE_ expects one file name"),
    ("5: 1\n", "config keys are words; got the key 5"),
    ("MODEL:\n  true: 1\n", "config keys are words; got the key MODEL.True"),
])
def test_base_and_keys_of_the_wrong_type_are_one_error_naming_the_file(tmp_path, text, words):
    path = tmp_path / "c.yml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="c.yml: " + words):
        load_config(str(path))


def test_long_values_are_cut_in_error_messages(tmp_path):
    path = tmp_path / "c.yml"
    path.write_text("SOLVER:\n  BASE_LR: %s\n" % ("x" * 5000))
    with pytest.raises(ConfigError, match=r"SOLVER.BASE_LR .*\.\.\.$") as err:
        load_config(str(path))
    assert len(str(err.value)) - len(str(path)) < 300
