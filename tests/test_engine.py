"""End-to-end training on the generated set: it learns, logs, checkpoints, resumes, stops safely."""
import json
import os
import subprocess
import sys

import mxnet as mx
import pytest

from reid_baseline import errors
from reid_baseline.config import load_config
from reid_baseline.engine import loop
from reid_baseline.engine.checkpoint import last_checkpoint, load_checkpoint
from reid_baseline.engine.devices import DeviceError, build_contexts
from reid_baseline.engine.solver import build_trainer, learning_rate_at
from reid_baseline.modeling.network import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_training_lowers_the_loss_and_raises_rank1(trained_run):
    cfg, history = trained_run
    assert [r["epoch"] for r in history] == list(range(1, 9))
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    chance = 1.0 / 32 * 100  # 32 test identities
    assert history[0]["rank1"] < 40
    assert history[-1]["rank1"] > 60 and history[-1]["rank1"] > 10 * chance
    assert history[-1]["mAP"] > history[0]["mAP"] + 20
    assert [r["lr"] for r in history] == pytest.approx([learning_rate_at(cfg, e) for e in range(8)])


def test_run_directory_holds_config_log_metrics_and_model(trained_run):
    cfg, history = trained_run
    run = cfg.OUTPUT_DIR
    assert load_config(os.path.join(run, "config.yaml")) == cfg
    with open(os.path.join(run, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert rows == json.loads(json.dumps(history))
    assert {"epoch", "lr", "loss", "train_acc", "images_per_sec", "rank1", "mAP"} <= set(rows[0])
    assert "epoch 8:" in open(os.path.join(run, "train.log")).read()
    assert os.path.isfile(os.path.join(run, "model_final.params"))
    assert last_checkpoint(run).endswith("epoch_0008")


@pytest.mark.slow
def test_evaluate_cli_writes_results_json(trained_run, tmp_path):
    cfg, history = trained_run
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "evaluate.py"), "--config",
         os.path.join(cfg.OUTPUT_DIR, "config.yaml"), "--params",
         os.path.join(cfg.OUTPUT_DIR, "model_final.params"), "--output", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(out.read_text())
    assert results["ap_mode"] == "trapezoid"
    for key in ("rank1", "rank5", "rank10", "mAP", "mAP_noninterp"):
        assert results[key] == pytest.approx(history[-1][key], abs=1e-6)
    assert results["mAP"] == results["mAP_trapezoid"] != results["mAP_noninterp"]
    for label in ("rank1", "mAP (trapezoid AP", "mAP (non-interpolated"):
        assert label in proc.stdout
    assert results["rank1"] <= results["rank5"] <= results["rank10"] <= 100


@pytest.mark.slow
def test_evaluation_options_reach_the_metrics(trained_run):
    """Re-ranking, euclidean distance and the non-interpolated AP through evaluate_params."""
    from reid_baseline.evaluation.evaluator import evaluate_params

    cfg, history = trained_run
    params = os.path.join(cfg.OUTPUT_DIR, "model_final.params")
    cfg = cfg.clone()
    cfg.defrost()
    cfg.TEST.RERANK, cfg.TEST.AP_MODE = True, "noninterp"
    reranked = evaluate_params(cfg, params)
    assert reranked["rerank"] is True and reranked["ap_mode"] == "noninterp"
    assert reranked["rank1"] > 60 and reranked["mAP"] == reranked["mAP_noninterp"]
    assert reranked["mAP_noninterp"] != pytest.approx(history[-1]["mAP_noninterp"])
    cfg.TEST.RERANK, cfg.TEST.DISTANCE, cfg.TEST.NORMALIZE_FEATURES = False, "euclidean", False
    assert evaluate_params(cfg, params)["rank1"] > 60


@pytest.mark.slow
def test_resume_continues_at_the_right_epoch_with_the_saved_state(make_small_cfg, small_toy, tmp_path):
    first = loop.train(make_small_cfg(tmp_path, "SOLVER.MAX_EPOCHS", "2"))
    cfg = make_small_cfg(tmp_path, "SOLVER.MAX_EPOCHS", "3")
    # What --resume will load: exactly the epoch-2 checkpoint.
    net = build_model(cfg, small_toy["train_ids"])
    trainer = build_trainer(cfg, net.collect_params())
    state = load_checkpoint(last_checkpoint(str(tmp_path)), net, trainer, [mx.cpu()])
    assert state["epoch"] == 2 and trainer.learning_rate == pytest.approx(learning_rate_at(cfg, 1))
    assert trainer._optimizer.num_update == 2 * (small_toy["train_images"] // 32)

    resumed = loop.train(cfg, resume=True)
    assert [r["epoch"] for r in resumed] == [3]
    assert resumed[0]["lr"] == pytest.approx(learning_rate_at(cfg, 2))
    assert resumed[0]["loss"] < first[0]["loss"]  # it went on from the trained weights
    assert last_checkpoint(str(tmp_path)).endswith("epoch_0003")
    with open(tmp_path / "metrics.jsonl") as f:
        assert [json.loads(line)["epoch"] for line in f] == [1, 2, 3]


def _folder_state(folder):
    """{relative path: (bytes, mtime_ns)} of every file under `folder`, and its folders."""
    files, folders = {}, []
    for parent, dirs, names in os.walk(folder):
        folders += [os.path.relpath(os.path.join(parent, d), folder) for d in dirs]
        for name in names:
            path = os.path.join(parent, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, folder)] = (f.read(), os.stat(path).st_mtime_ns)
    return files, sorted(folders)


@pytest.mark.timeout(600)
@pytest.mark.slow
def test_resuming_a_complete_run_changes_no_byte(make_small_cfg, tmp_path, monkeypatch, capsys):
    from conftest import run_script
    cfg = make_small_cfg(tmp_path / "run", "SOLVER.MAX_EPOCHS", "2")
    loop.train(cfg)
    before = _folder_state(tmp_path / "run")
    assert "model_final.params" in before[0] and "checkpoints" in before[1]
    capsys.readouterr()
    assert loop.train(cfg, resume=True) == []
    line = "OUTPUT_DIR %s holds a complete run (2 epochs trained, SOLVER.MAX_EPOCHS 2" % cfg.OUTPUT_DIR
    assert capsys.readouterr().out.startswith(line)
    code, out, err = run_script(monkeypatch, capsys, "train.py", "--config",
                                tmp_path / "run" / "config.yaml", "--resume")
    assert code == 0 and out.startswith(line) and len(out.splitlines()) == 1, err
    assert _folder_state(tmp_path / "run") == before
    # fewer epochs asked than the run has: complete too, nothing trained again
    fewer = make_small_cfg(tmp_path / "run", "SOLVER.MAX_EPOCHS", "1")
    assert loop.train(fewer, resume=True) == []
    assert "(2 epochs trained, SOLVER.MAX_EPOCHS 1" in capsys.readouterr().out
    assert _folder_state(tmp_path / "run") == before
    # results of an older model (a stop during the last evaluation): the resume evaluates the
    # final params and trains no epoch
    from reid_baseline.evaluation.evaluator import save_results
    save_results({"rank1": 0.0, "params_sha256": "0" * 64}, str(tmp_path / "run" / "results.json"))
    assert loop.train(cfg, resume=True) == []
    import hashlib
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    final = (tmp_path / "run" / "model_final.params").read_bytes()
    assert results["params_sha256"] == hashlib.sha256(final).hexdigest()
    assert results["epoch"] == 2 and results["rank1"] > 0
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2]


@pytest.mark.timeout(600)
@pytest.mark.slow
def test_an_extended_run_writes_the_results_of_its_final_model(make_small_cfg, tmp_path,
                                                                monkeypatch, capsys):
    import hashlib

    from conftest import run_script
    run = tmp_path / "run"
    loop.train(make_small_cfg(run, "SOLVER.MAX_EPOCHS", "2"))  # EVAL_PERIOD 0: no evaluation
    code, out, err = run_script(monkeypatch, capsys, "evaluate.py", "--run", run,
                                "--visualize", "2")
    assert code == 0, err
    old = json.loads((run / "results.json").read_text())
    assert old["params_sha256"] == hashlib.sha256((run / "model_final.params").read_bytes()
                                                  ).hexdigest()
    from reid_baseline.evaluation.evaluator import save_results
    save_results(old, str(run / "results_rerank.json"))  # another evaluation of the old model
    history = loop.train(make_small_cfg(run, "SOLVER.MAX_EPOCHS", "3"), resume=True)
    assert [r["epoch"] for r in history] == [3] and "rank1" in history[0]  # evaluated
    assert "note: %s describes an earlier model_final.params" % (run / "results_rerank.json") \
        in (run / "train.log").read_text()
    new = json.loads((run / "results.json").read_text())
    final = (run / "model_final.params").read_bytes()
    assert new["params_sha256"] == hashlib.sha256(final).hexdigest() != old["params_sha256"]
    assert new["epoch"] == 3 and new["rank1"] == history[0]["rank1"]
    assert new["mAP"] == json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["mAP"]
    newer = os.stat(run / "model_final.params").st_mtime_ns
    pictures = [run / "cmc.png"] + sorted((run / "ranklists").glob("*.png"))
    assert len(pictures) == 3 and all(os.stat(p).st_mtime_ns >= newer for p in pictures)


def test_resume_without_any_run_is_an_error(make_tiny_cfg, tmp_path):
    with pytest.raises(errors.RunDirError, match="no run in"):
        loop.train(make_tiny_cfg(tmp_path, "SOLVER.MAX_EPOCHS", "1"), resume=True)


def test_a_new_run_never_mixes_with_an_old_one(trained_run):
    cfg, _ = trained_run
    with pytest.raises(errors.RunDirError, match="already holds a run: continue it with --resume"):
        loop.train(cfg)


@pytest.mark.slow
def test_interrupt_mid_epoch_keeps_the_clean_checkpoint_and_resume_finishes(
        make_small_cfg, small_toy, tmp_path, monkeypatch):
    real_build = loop.build_train_loader

    class InterruptedLoader:
        """The real loader, with Ctrl-C three batches into the second epoch."""

        def __init__(self, loader):
            self.loader, self.batches = loader, 0

        def __len__(self):
            return len(self.loader)

        def set_epoch(self, epoch):
            self.loader.set_epoch(epoch)

        def __iter__(self):
            for batch in self.loader:
                self.batches += 1
                if self.batches == len(self.loader) + 3:
                    raise KeyboardInterrupt
                yield batch

    cfg = make_small_cfg(tmp_path, "SOLVER.MAX_EPOCHS", "2")  # a checkpoint every epoch
    monkeypatch.setattr(loop, "build_train_loader", lambda *a: InterruptedLoader(real_build(*a)))
    with pytest.raises(KeyboardInterrupt):
        loop.train(cfg)
    folder = last_checkpoint(str(tmp_path))
    assert folder.endswith("epoch_0001_interrupted")
    net = build_model(cfg, small_toy["train_ids"])
    trainer = build_trainer(cfg, net.collect_params())
    state = load_checkpoint(folder, net, trainer, [mx.cpu()])
    assert state["epoch"] == 1 and state["interrupted"] is True
    assert trainer._optimizer.num_update == small_toy["train_images"] // 32 + 2  # before Ctrl-C
    clean = tmp_path / "checkpoints" / "epoch_0001" / "state.json"
    assert json.loads(clean.read_text())["interrupted"] is False

    monkeypatch.setattr(loop, "build_train_loader", real_build)
    assert [r["epoch"] for r in loop.train(cfg, resume=True)] == [2]


@pytest.mark.slow
def test_nan_loss_stops_without_writing_a_model(make_tiny_cfg, tmp_path, monkeypatch):
    softmax_ce = loop.gluon.loss.SoftmaxCrossEntropyLoss()  # made before the patch below

    class NaNLoss(loop.gluon.HybridBlock):
        def hybrid_forward(self, F, pred, label):
            return softmax_ce(pred, label) * float("nan")

    monkeypatch.setattr(loop.gluon.loss, "SoftmaxCrossEntropyLoss", NaNLoss)
    with pytest.raises(errors.TrainingDiverged, match="nan at epoch 1, iteration 4"):
        loop.train(make_tiny_cfg(tmp_path, "SOLVER.MAX_EPOCHS", "2"))
    assert last_checkpoint(str(tmp_path)) is None
    assert not os.path.exists(tmp_path / "model_final.params")


def test_asking_for_a_gpu_without_cuda_says_how_to_install_it():
    if mx.runtime.Features().is_enabled("CUDA"):
        pytest.skip("this MXNet has CUDA")
    with pytest.raises(DeviceError, match="mxnet-cu112"):
        build_contexts([0])
    assert build_contexts([]) == [mx.cpu()]


@pytest.mark.slow
def test_batches_split_over_several_devices_keep_replicas_identical(make_small_cfg, small_toy, tmp_path):
    """The multi-GPU path (split_and_load, kvstore 'device'), run on two CPU contexts."""
    import numpy as np
    from mxnet import gluon

    from reid_baseline.data.datasets.market1501 import load_market1501
    from reid_baseline.data.loader import build_test_loader, build_train_loader
    from reid_baseline.evaluation.features import extract_features

    cfg = make_small_cfg(tmp_path, "SOLVER.MAX_EPOCHS", "1")
    ctx = [mx.cpu(0), mx.cpu(1)]
    dataset = load_market1501(small_toy["root"], verify_counts=False)
    net = build_model(cfg, dataset.num_train_pids, ctx)
    net.hybridize(static_alloc=True, static_shape=True)
    trainer = build_trainer(cfg, net.collect_params())
    stats = loop._train_epoch(net, trainer, build_train_loader(cfg, dataset.train),
                                gluon.loss.SoftmaxCrossEntropyLoss(), ctx, 0, cfg,
                                loop.DivergenceGuard(cfg, dataset.num_train_pids, str(tmp_path)))
    assert np.isfinite(stats["loss"]) and trainer._optimizer.num_update == small_toy["train_images"] // 32
    for param in net.collect_params().values():  # weights and BatchNorm statistics
        first, second = (d.asnumpy() for d in param.list_data())
        np.testing.assert_array_equal(first, second)
    loader = build_test_loader(cfg, dataset.query)
    two = extract_features(net.embedding, loader, ctx)
    one = extract_features(net.embedding, loader, ctx[:1])
    assert two.shape == (small_toy["query_images"], 512)
    np.testing.assert_allclose(two, one, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(two, axis=1), 1, rtol=1e-5)


def test_bad_params_files_for_evaluation(trained_run, tmp_path):
    from reid_baseline.modeling.network import ModelError, load_trained_model

    cfg, _ = trained_run
    with pytest.raises(ModelError, match="no such file"):
        load_trained_model(cfg, str(tmp_path / "missing.params"))
    junk = tmp_path / "junk.params"
    junk.write_bytes(b"not a params file")
    with pytest.raises(ModelError, match="junk.params is not an MXNet parameter file"):
        load_trained_model(cfg, str(junk))
    other = tmp_path / "other.params"
    mx.nd.save(str(other), {"classifier.weight": mx.nd.zeros((32, 512))})
    with pytest.raises(ModelError, match="does not fit the model"):
        load_trained_model(cfg, str(other))


def _cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, os.path.join(ROOT, "train.py")] + list(args),
                          capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.mark.slow
def test_train_cli_runs_resumes_and_reports_user_errors_in_one_line(make_small_cfg, tmp_path):
    from reid_baseline.config import save_config

    config = str(tmp_path / "tiny.yml")
    save_config(make_small_cfg(tmp_path / "run", "SOLVER.MAX_EPOCHS", "1"), config)
    assert _cli("--config", config).returncode == 0
    resumed = _cli("--config", config, "--resume", "SOLVER.MAX_EPOCHS", "2")
    assert resumed.returncode == 0, resumed.stderr
    with open(tmp_path / "run" / "metrics.jsonl") as f:
        assert [json.loads(line)["epoch"] for line in f] == [1, 2]
    other = ["OUTPUT_DIR", str(tmp_path / "other")]
    for args, message in ((["--config", config], "already holds a run"),
                          (["--config", config, "SOLVER.BASE_RT", "0.1"], "unknown config key 'SOLVER.BASE_RT'"),
                          (["--config", config, "--gpus", "0"] + other, "mxnet-cu112"),
                          (["--config", config, "DATASETS.ROOT", str(tmp_path / "none")] + other, "none")):
        proc = _cli(*args)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
