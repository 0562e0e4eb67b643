"""The training loop's steps around the epochs (fast-reid's hooks, without a registry): the
metrics row, the checkpoint when due, the evaluation when due, TensorBoard, the curves.

The loop calls each hook's methods in order. Only the process that writes the run (rank 0)
has hooks: the other training processes of a job write nothing and do not evaluate.
"""
import glob
import logging
import os

from ..errors import NonFiniteParameters
from ..evaluation.evaluator import (
    check_evaluation_outputs,
    evaluate_retrieval,
    results_path,
    save_results,
    write_rank_pictures,
)
from ..evaluation.provenance import evaluation_record, output_suffix
from ..fileio import read_json_object
from .checkpoint import save_checkpoint, save_parameters
from .run_folder import keep_metrics_until, write_metrics_row, write_run_curves
from .telemetry import EPOCH_SCALARS, LOG_SCALARS, open_tensorboard

logger = logging.getLogger("reid_baseline")

FINAL_PARAMS = "model_final.params"


class Hook(object):
    """A step of the training loop; each method does nothing unless a subclass says otherwise."""

    def before_train(self, completed):
        """Before the first epoch; `completed` epochs were finished before (resume)."""

    def after_log(self, progress):
        """After each log read (every SOLVER.LOG_PERIOD iterations), with its progress: the
        epoch, iteration, loss, accuracy, lr, speed and time left."""

    def after_epoch(self, metrics):
        """After each epoch, with its metrics (a hook may add to them)."""

    def on_interrupt(self, completed):
        """On Ctrl-C, after `completed` finished epochs."""

    def after_train(self):
        """After the last epoch."""

    def close(self):
        """Always, last."""


class MetricsRow(Hook):
    """The epoch's row of metrics.jsonl, written before the checkpoint: a stop while the
    checkpoint is written never loses it. Resuming drops the rows of epochs trained again."""

    def __init__(self, run_dir):
        self.run_dir = run_dir

    def before_train(self, completed):
        keep_metrics_until(self.run_dir, completed)

    def after_epoch(self, metrics):
        write_metrics_row(self.run_dir, metrics)


class Checkpoint(Hook):
    """Checkpoints every SOLVER.CHECKPOINT_PERIOD epochs and at the last, on Ctrl-C (the
    mid-epoch weights; --resume restarts the unfinished epoch from them), the final model."""

    def __init__(self, cfg, run_dir, net, trainer, guard):
        self.cfg, self.run_dir, self.net, self.trainer, self.guard = cfg, run_dir, net, trainer, guard

    def _save(self, epoch, interrupted=False):
        try:
            return save_checkpoint(self.run_dir, self.net, self.trainer, epoch,
                                   interrupted=interrupted, keep=self.cfg.SOLVER.KEEP_CHECKPOINTS)
        except NonFiniteParameters as exc:
            self.guard.stop("the weights became non-finite after %d epochs (%s)" % (epoch, exc))

    def after_epoch(self, metrics):
        # Saved before evaluating: an evaluation error never costs the epoch's checkpoint.
        epoch = metrics["epoch"]
        if epoch % self.cfg.SOLVER.CHECKPOINT_PERIOD == 0 or epoch == self.cfg.SOLVER.MAX_EPOCHS:
            self._save(epoch)

    def on_interrupt(self, completed):
        folder = self._save(completed, interrupted=True)
        logger.info("interrupted after %d finished epochs: saved %s; continue with --resume",
                    completed, folder)

    def after_train(self):
        final = os.path.join(self.run_dir, FINAL_PARAMS)
        try:
            save_parameters(self.net, final)
        except NonFiniteParameters as exc:
            self.guard.stop(str(exc))
        logger.info("saved %s", final)


class Evaluation(Hook):
    """Query/gallery retrieval every SOLVER.EVAL_PERIOD epochs; its results join the epoch's
    metrics and replace its metrics row.

    A resumed run (an extended one) also evaluates its final epoch, whatever EVAL_PERIOD says,
    and writes the run's results file and CMC plot (and redraws as many rank lists as the
    run's rank-list folder held) for the new model_final.params: the results in a run folder
    never describe an older model than its final params. Those outputs are checked before the
    first epoch."""

    def __init__(self, cfg, run_dir, net, dataset, ctx):
        self.cfg, self.run_dir, self.net, self.dataset, self.ctx = cfg, run_dir, net, dataset, ctx
        self.resumed, self.final, self.pictures, self.evaluate_at_end = False, None, 0, False

    def before_train(self, completed):
        self.resumed = completed > 0
        # Resumed with every epoch done (a stop during the last evaluation, or results of an
        # older model): no epoch runs, so after_train evaluates the final params.
        self.evaluate_at_end = completed >= self.cfg.SOLVER.MAX_EPOCHS
        if self.resumed:
            folder = os.path.join(self.run_dir, "ranklists" + output_suffix(self.cfg))
            self.pictures = len(glob.glob(os.path.join(glob.escape(folder), "worst_*.png")) +
                                glob.glob(os.path.join(glob.escape(folder), "random_*.png")))
            check_evaluation_outputs(self.cfg, results_path(self.cfg, self.run_dir),
                                     self.pictures)

    def after_epoch(self, metrics):
        period, epoch = self.cfg.SOLVER.EVAL_PERIOD, metrics["epoch"]
        final = self.resumed and epoch == self.cfg.SOLVER.MAX_EPOCHS
        if (period and epoch % period == 0) or final:
            results, ranking = evaluate_retrieval(self.cfg, self.net, self.dataset, self.ctx,
                                                  with_ranking=True)
            metrics.update(results)
            write_metrics_row(self.run_dir, metrics, replace_last=True)
            if final:
                self.final = (dict(results, epoch=epoch), ranking)

    def after_train(self):
        if self.final is None and self.evaluate_at_end:
            results, ranking = evaluate_retrieval(self.cfg, self.net, self.dataset, self.ctx,
                                                  with_ranking=True)
            self.final = (dict(results, epoch=self.cfg.SOLVER.MAX_EPOCHS), ranking)
        if self.final is None:
            return
        results, ranking = self.final
        test_set = getattr(self.dataset, "test_set", self.dataset)  # a CrossDataset's
        results.update(evaluation_record(self.cfg, os.path.join(self.run_dir, FINAL_PARAMS),
                                         test_set))
        path = results_path(self.cfg, self.run_dir)
        save_results(results, path)
        write_rank_pictures(self.cfg, self.run_dir, ranking, self.pictures)
        logger.info("saved %s: the final epoch's results", path)
        # Other evaluations of the run (re-ranked, other sets) are not redone: say which ones
        # now describe an earlier model.
        for other in sorted(glob.glob(os.path.join(glob.escape(self.run_dir), "results*.json"))):
            sha = (read_json_object(other) or {}).get("params_sha256")
            if other != path and sha and sha != results["params_sha256"]:
                logger.info("note: %s describes an earlier %s; evaluate the run again for it "
                            "(evaluate.py --run %s with that evaluation's options)",
                            other, FINAL_PARAMS, self.run_dir)


class TensorBoard(Hook):
    """SOLVER.TENSORBOARD: the log reads' progress and the epochs' metrics as TensorBoard
    scalars (train/* per log read at the global iteration, epoch/* and eval/* per epoch)."""

    def __init__(self, logdir):
        self.writer = open_tensorboard(logdir)

    def after_log(self, progress):
        step = (progress["epoch"] - 1) * progress["iterations"] + progress["iteration"]
        for tag, key in LOG_SCALARS:
            self.writer.add_scalar(tag, progress[key], step)

    def after_epoch(self, metrics):
        for tag, key in EPOCH_SCALARS:
            if isinstance(metrics.get(key), (int, float)):
                self.writer.add_scalar(tag, metrics[key], metrics["epoch"])
        self.writer.flush()

    def on_interrupt(self, completed):
        self.writer.flush()

    def close(self):
        self.writer.close()


class Curves(Hook):
    """curves.png from metrics.jsonl at the end of the run."""

    def __init__(self, run_dir):
        self.run_dir = run_dir

    def after_train(self):
        logger.info("saved %s", write_run_curves(self.run_dir))


def build_hooks(cfg, run_dir, net, trainer, dataset, ctx, guard, is_writer=True):
    """The loop's steps, in order; none unless this process writes the run (`is_writer`)."""
    if not is_writer:
        return []
    hooks = [MetricsRow(run_dir), Checkpoint(cfg, run_dir, net, trainer, guard),
             Evaluation(cfg, run_dir, net, dataset, ctx), Curves(run_dir)]
    if cfg.SOLVER.TENSORBOARD:
        hooks.append(TensorBoard(os.path.join(run_dir, "tensorboard")))
    return hooks


def call_hooks(hooks, method, *args):
    """Call `method` of every hook in order."""
    for hook in hooks:
        getattr(hook, method)(*args)
