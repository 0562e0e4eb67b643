"""The learning-rate schedule per epoch and the optimizer."""
import pytest
from mxnet import gluon

from reid_baseline.config import load_config
from reid_baseline.engine.solver import build_trainer, learning_rate_at


def _reference_lr(epoch):
    """RECIPE.md / the reference code, written out."""
    if epoch < 10:
        return 3.5e-6 + epoch * (3.5e-4 - 3.5e-6) / 9
    if epoch < 35:
        return 3.5e-4
    if epoch < 60:
        return 3.5e-5
    return 3.5e-6


@pytest.mark.parametrize("epoch, expected", [
    (0, 3.5e-6), (5, 3.5e-6 + 5 * (3.5e-4 - 3.5e-6) / 9), (9, 3.5e-4), (10, 3.5e-4),
    (34, 3.5e-4), (35, 3.5e-5), (59, 3.5e-5), (60, 3.5e-6), (79, 3.5e-6)])
def test_recipe_learning_rate_at_epoch(epoch, expected):
    assert learning_rate_at(load_config(), epoch) == pytest.approx(expected, rel=1e-9)


def test_every_epoch_matches_the_reference_in_any_order():
    cfg = load_config()
    for epoch in list(range(80)) + [60, 3, 35]:
        assert learning_rate_at(cfg, epoch) == pytest.approx(_reference_lr(epoch), rel=1e-9)


def test_schedule_knobs():
    cfg = load_config(None, ["SOLVER.WARMUP_EPOCHS", "0", "SOLVER.STEPS", "[20, 40]",
                             "SOLVER.GAMMA", "0.5", "SOLVER.BASE_LR", "0.01"])
    assert [learning_rate_at(cfg, e) for e in (0, 19, 20, 39, 40)] == pytest.approx(
        [0.01, 0.01, 0.005, 0.005, 0.0025])
    cfg = load_config(None, ["SOLVER.WARMUP_EPOCHS", "0", "SOLVER.STEPS", "[]"])
    assert {learning_rate_at(cfg, e) for e in range(80)} == {3.5e-4}
    cfg = load_config(None, ["SOLVER.WARMUP_EPOCHS", "5", "SOLVER.WARMUP_FACTOR", "0.1"])
    assert [learning_rate_at(cfg, e) for e in range(6)] == pytest.approx(
        [3.5e-5, 3.5e-5 + 0.25 * 3.15e-4, 3.5e-5 + 0.5 * 3.15e-4, 3.5e-5 + 0.75 * 3.15e-4,
         3.5e-4, 3.5e-4])


def test_a_step_at_epoch_1_decays_from_epoch_1_on():
    cfg = load_config(None, ["SOLVER.WARMUP_EPOCHS", "0", "SOLVER.BASE_LR", "0.01",
                             "SOLVER.GAMMA", "0.1"])
    cfg.defrost()  # set directly: the schedule itself holds for any steps
    cfg.SOLVER.STEPS = [1, 3]
    assert [learning_rate_at(cfg, e) for e in range(5)] == pytest.approx(
        [0.01, 0.001, 0.001, 0.0001, 0.0001])
    cfg.SOLVER.WARMUP_EPOCHS = 1  # one warm-up epoch: it already reaches BASE_LR
    cfg.SOLVER.STEPS = [1]
    assert [learning_rate_at(cfg, e) for e in range(3)] == pytest.approx([0.01, 0.001, 0.001])


@pytest.mark.parametrize("name, cls", [("adam", "Adam"), ("sgd", "SGD")])
def test_trainer_optimizer(name, cls):
    cfg = load_config(None, ["SOLVER.OPTIMIZER", name])
    dense = gluon.nn.Dense(2, in_units=3)
    dense.initialize()
    trainer = build_trainer(cfg, dense.collect_params())
    optimizer = trainer._optimizer
    assert type(optimizer).__name__ == cls
    assert optimizer.wd == 5e-4 and trainer.learning_rate == pytest.approx(3.5e-6)
    if name == "sgd":
        assert optimizer.momentum == 0.9
    # one learning rate for every layer
    assert all(p.lr_mult == 1 for p in dense.collect_params().values())
