"""One trial: sample a configuration, fit it on the trials' data within the budget, record it.

A trial the budget cannot hold for one epoch is not started (pruned, ``refused``); one that
cannot hold all its epochs is shortened. A NaN loss prunes it; any other exception fails it with
its reason. The trial's model and its validation probabilities are saved for the final stage.

The Optuna trial lives in the main process only: its training (:class:`Job`) runs where the
runner runs tasks (:mod:`pipeline.worker`), which reports each epoch back through
:func:`epoch_reporter` and returns the trial's record.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from pipeline.data import Dataset
from pipeline.data.split import Split
from pipeline.models.classical import FIT_ONCE as CLASSICAL_RECIPE
from pipeline.records import TrialRecord, write_trial
from pipeline.training import TrainSettings, airbench_steps
from pipeline.tune.cost import Budget, CostModel, batch_for_rows
from pipeline.tune.plan import TunePlan
from pipeline.tune.trials import history_path, sampled_width, validation_probs_path

# every trial (a quarter of a short one): batch-norm nets at a high rate need it (see training)
WARMUP_EPOCHS = 1.0

# (1-based epoch, validation accuracy) -> why the trial stops there, or None to go on
Report = Callable[[int, float], "str | None"]


@dataclass(frozen=True)
class Job:
    """One trial's training, as the search decided it: a task for the runner."""

    trains: ClassVar[bool] = True  # counts toward the worker's replacement

    number: int
    model: str
    hp: dict[str, Any]
    settings: TrainSettings
    deadline: float  # time.monotonic() seconds (one clock for every process of the machine)
    search_rows: int | None = None  # the run's trial rows: which split the trial trains on
    width: float = 1.0  # the sampled width multiplier (its hp holds the scaled layers)

    def footprint(self) -> tuple[str, int, float]:
        """(entry, batch, width): what the memory its fit adds depends on."""
        return self.model, self.settings.batch_size, self.width

    def run(self, env, report: Report) -> TrialRecord:
        return train_trial(self, env.ds, env.splits(self.search_rows).search, env.models_dir,
                           report)  # fmt: skip


class Objective:
    """Callable for ``study.optimize``; holds what every trial of this process shares."""

    def __init__(self, data: Split, models: list[str], plan: TunePlan, budget: Budget,
                 cost: CostModel, models_dir: Path, seed: int, runner, store=None):  # fmt: skip
        self.data, self.models, self.plan = data, list(models), plan
        self.max_epochs, self.budget, self.cost = plan.max_epochs, budget, cost
        self.models_dir, self.seed, self.store = Path(models_dir), seed, store
        self.runner = runner  # the worker process, or this one
        self.failures = 0  # in a row

    def epoch_seconds(self, name: str) -> float:
        return self.cost.epoch_seconds(name, len(self.data[1]), len(self.data[3]))

    def cheapest_epoch(self) -> float:
        return min(self.epoch_seconds(m) for m in self.models)

    def __call__(self, trial) -> float:
        import optuna

        job = self.sample(trial)
        try:
            record = self.runner.run(job, epoch_reporter(trial))
        except optuna.TrialPruned as exc:
            write_trial(trial, TrialRecord(reason=str(exc)))
            raise
        except Exception as exc:
            self.failures += 1
            write_trial(trial, TrialRecord(reason=failure_reason(exc)))
            raise
        self.failures = 0
        if self.store is not None:  # artifact ids, not local paths: any machine finds them
            record = upload_kept(self.store, trial, record)
        write_trial(trial, record)
        return float(record.metrics.val_accuracy)

    def sample(self, trial) -> Job:
        """The trial's configuration, written on it; ``TrialPruned`` when the budget cannot
        hold one epoch of it (``refused``)."""
        import optuna

        from pipeline.models import get_entry
        from pipeline.search_space import suggest

        entries = {m: get_entry(m) for m in self.models}
        spec = suggest(trial, self.models, entries, self.max_epochs)
        name, epochs = spec["model"], spec["epochs"]
        per_epoch = self.epoch_seconds(name)
        fits = int(self.budget.search_left() // per_epoch)
        if fits < 1:
            left = max(self.budget.search_left(), 0)
            reason = f"needs ~{per_epoch:.0f} s/epoch, {left:.0f} s left"
            write_trial(trial, TrialRecord(model=name, reason=reason, refused=True))
            raise optuna.TrialPruned(reason)
        clipped = fits if fits < epochs else None
        width, batch = sampled_width(trial), spec.get("batch_size", 0)
        batch = batch and self.cost.memory_batch(name, batch_for_rows(batch, len(self.data[1])),
                                                 width)  # fmt: skip
        if batch and self.cost.too_big(name, batch, width):
            reason = f"needs ~{self.cost.fit_mib(name, batch, width):.0f} MiB at width {width}"
            write_trial(trial, TrialRecord(model=name, reason=reason, refused=True))
            raise optuna.TrialPruned(reason)
        if spec.get("classical"):
            r = CLASSICAL_RECIPE  # one fit: no optimizer, no epochs
            settings = TrainSettings(
                r.optimizer,
                r.learning_rate,
                r.momentum,
                r.batch_size,
                r.epochs,
                r.reduce_lr,
                seed=self.seed + trial.number,
            )
            clipped = None
        else:
            settings = TrainSettings(
                optimizer=spec["optimizer"], learning_rate=spec["learning_rate"],
                momentum=spec["momentum"], epochs=clipped or epochs,
                batch_size=batch,
                reduce_lr=spec["reduce_lr"], augment=spec["augment"],
                label_smoothing=spec["label_smoothing"], seed=self.seed + trial.number,
                warmup_epochs=min(WARMUP_EPOCHS, (clipped or epochs) / 4),
                **airbench_steps(entries[name].recipe, spec["optimizer"]),
            )  # fmt: skip
        write_trial(trial, TrialRecord(model=name, hp=spec["hp"], settings=settings,
                                       epochs_clipped_to=clipped))  # fmt: skip
        return Job(trial.number, name, spec["hp"], settings, self.budget.search_deadline - 5,
                   self.plan.search_rows, width)  # fmt: skip


def epoch_reporter(trial) -> Report:
    """Each epoch's validation accuracy to the trial's pruner (step = the 1-based epoch, as the
    plots show it); the reason to stop when the pruner says so."""

    def report(epoch: int, accuracy: float) -> str | None:
        trial.report(accuracy, epoch)
        if trial.should_prune():
            return f"pruned at epoch {epoch} (val_accuracy {accuracy:.4f})"
        return None

    return report


def failure_reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:300]}"


def train_trial(job: Job, ds: Dataset, data: Split, models_dir: Path, report: Report):
    """Build, fit (each epoch through ``report``) and keep one trial; returns its record.
    Raises ``optuna.TrialPruned`` when pruned or when the loss turns NaN; any other failure
    propagates."""
    import optuna

    from pipeline import callbacks
    from pipeline.device import fresh_session
    from pipeline.models import build_model, get_entry
    from pipeline.training import fit

    if get_entry(job.model).classical:
        return train_classical(job, ds, data, models_dir)
    fresh_session()  # frees the last trial's models and graphs (gc included)
    model = build_model(job.model, ds.image_shape, ds.num_classes, **job.hp)
    try:
        result = fit(model, job.settings, data, ds.num_classes,
                     callbacks=[callbacks.EpochReport(report)], deadline=job.deadline,
                     verbose=0)  # fmt: skip
    except FloatingPointError as exc:
        raise optuna.TrialPruned(str(exc)) from None
    path = keep(job.number, result.model, result.history, data, models_dir)
    return TrialRecord(metrics=result.metrics, history=result.history, model_path=str(path))


def train_classical(job: Job, ds: Dataset, data: Split, models_dir: Path) -> TrialRecord:
    """Fit and keep a classical entry's trial (one fit: nothing for the pruner to judge)."""
    from pipeline.classical import fit_classical
    from pipeline.models import build_model

    estimator = build_model(job.model, ds.image_shape, ds.num_classes, **job.hp)
    result = fit_classical(estimator, data, ds.num_classes, job.settings.seed)
    path = keep(job.number, result.model, result.history, data, models_dir)
    return TrialRecord(metrics=result.metrics, history=result.history, model_path=str(path))


def keep(number: int, model, history, data: Split, models_dir: Path) -> Path:
    """Save a trial's model, its validation probabilities (the final stage scores ensembles
    from them without predicting again) and its history; returns the model's path."""
    from pipeline import classical
    from pipeline.artifacts import save_history, save_model
    from pipeline.predict import predict_proba

    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    if classical.is_classical(model):
        path = models_dir / f"trial-{number}{classical.SUFFIX}"
        classical.save(model, path)
    else:
        path = models_dir / f"trial-{number}.keras"
        save_model(model, path)
    np.save(validation_probs_path(path), predict_proba(model, data[2]))
    save_history(history_path(path), history)
    return path


def upload_kept(store, trial, record: TrialRecord) -> TrialRecord:
    """The record with the kept files uploaded to the artifact store: their ids instead of the
    local path."""
    from pipeline.storage import upload

    path = Path(record.model_path)
    return dataclasses.replace(
        record,
        model_path=None,
        model_artifact=upload(store, trial, path),
        validation_artifact=upload(store, trial, validation_probs_path(path)),
        history_artifact=upload(store, trial, history_path(path)),
    )
