"""One trial: sample a configuration, fit it on the trial data within the budget, record it.

A trial the budget cannot hold for one epoch is not started (pruned, ``refused``); one that
cannot hold all its epochs is shortened. A NaN loss prunes it; any other exception fails it with
its reason. The trial's model and its holdout probabilities are saved for the final stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data import Dataset
from pipeline.data.split import Split
from pipeline.device import fresh_session
from pipeline.records import TrialRecord, read_trial, write_trial
from pipeline.training import TrainSettings
from pipeline.tune.budget import Budget, CostModel

# every trial (a quarter of a short one): batch-norm nets at a high rate need it (see training)
WARMUP_EPOCHS = 1.0


class Objective:
    """Callable for ``study.optimize``; holds what every trial of this process shares."""

    def __init__(
        self,
        ds: Dataset,
        data: Split,
        models: list[str],
        max_epochs: int,
        budget: Budget,
        cost: CostModel,
        models_dir: Path,
        seed: int,
        store=None,
        worker=None,
    ):
        self.ds, self.data, self.models = ds, data, list(models)
        self.max_epochs, self.budget, self.cost = max_epochs, budget, cost
        self.models_dir, self.seed, self.store = Path(models_dir), seed, store
        self.worker = worker  # trials in a child process, or None: in this one
        self.failures = 0  # in a row

    def epoch_seconds(self, name: str) -> float:
        return self.cost.epoch_seconds(name, len(self.data[1]), len(self.data[3]))

    def cheapest_epoch(self) -> float:
        return min(self.epoch_seconds(m) for m in self.models)

    def __call__(self, trial) -> float:
        import optuna

        from pipeline.models import get_entry
        from pipeline.search_space import suggest

        entries = {m: get_entry(m) for m in self.models}
        spec = suggest(trial, self.models, entries, self.max_epochs)
        name = spec["model"]
        per_epoch = self.epoch_seconds(name)
        epochs = spec["epochs"]
        fits = int(self.budget.search_left() // per_epoch)
        if fits < 1:
            reason = (
                f"needs ~{per_epoch:.0f} s/epoch, {max(self.budget.search_left(), 0):.0f} s left"
            )
            write_trial(trial, TrialRecord(model=name, reason=reason, refused=True))
            raise optuna.TrialPruned(reason)
        clipped = fits if fits < epochs else None
        settings = TrainSettings(
            optimizer=spec["optimizer"],
            learning_rate=spec["learning_rate"],
            momentum=spec["momentum"],
            batch_size=spec["batch_size"],
            epochs=clipped or epochs,
            reduce_lr=spec["reduce_lr"],
            augment=spec["augment"],
            label_smoothing=spec["label_smoothing"],
            seed=self.seed + trial.number,
            warmup_epochs=min(WARMUP_EPOCHS, (clipped or epochs) / 4),
        )
        record = TrialRecord(model=name, hp=spec["hp"], settings=settings,
                             epochs_clipped_to=clipped)  # fmt: skip
        write_trial(trial, record)
        job = Job(trial._trial_id, trial.number, name, spec["hp"], settings,
                  self.budget.search_deadline - 5)  # fmt: skip
        try:
            if self.worker is not None:  # in a child process (see pipeline.tune.worker)
                value = self.worker.run(job)
            else:
                value = train_trial(trial, job, self.ds, self.data, self.models_dir, self.store)
        except optuna.TrialPruned:
            raise
        except Exception:
            self.failures += 1
            raise
        self.failures = 0
        return value


@dataclass(frozen=True)
class Job:
    """One trial's training, as the search decided it (sent to a worker process as is)."""

    trial_id: int
    number: int
    model: str
    hp: dict[str, Any]
    settings: TrainSettings
    deadline: float  # time.monotonic() seconds (one clock for every process of the machine)


def train_trial(trial, job: Job, ds: Dataset, data: Split, models_dir: Path, store=None) -> float:
    """Build, fit (reporting each epoch to ``trial``'s pruner), keep and record one trial;
    returns its validation accuracy. Raises ``optuna.TrialPruned`` when pruned or when the loss
    turns NaN; any other failure propagates with its reason written on the trial."""
    import optuna

    from pipeline import callbacks
    from pipeline.models import build_model
    from pipeline.training import fit

    fresh_session()  # frees the last trial's models and graphs (gc included)
    try:
        model = build_model(job.model, ds.image_shape, ds.num_classes, **job.hp)
        result = fit(
            model,
            job.settings,
            data,
            ds.num_classes,
            callbacks=[callbacks.OptunaPruning(trial)],
            deadline=job.deadline,
            verbose=0,
        )
    except optuna.TrialPruned as exc:
        write_trial(trial, TrialRecord(reason=str(exc)))
        raise
    except FloatingPointError as exc:
        write_trial(trial, TrialRecord(reason=str(exc)))
        raise optuna.TrialPruned(str(exc)) from None
    except Exception as exc:
        write_trial(trial, TrialRecord(reason=f"{type(exc).__name__}: {str(exc)[:300]}"))
        raise
    write_trial(trial, TrialRecord(metrics=result.metrics, history=result.history))
    write_trial(trial, keep(trial, result.model, result.history, data, models_dir, store))
    return float(result.metrics.val_accuracy)


def keep(trial, model, history, data: Split, models_dir: Path, store=None) -> TrialRecord:
    """Save a trial's model and its validation probabilities (the final stage scores ensembles
    from them without predicting again); with an artifact store, upload them and the history,
    and record artifact ids rather than local paths."""
    from pipeline.artifacts import save_history, save_model
    from pipeline.predict import predict_proba
    from pipeline.tune import store as st

    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    path = models_dir / f"trial-{trial.number}.keras"
    save_model(model, path)
    probs = holdout_probs_path(path)
    np.save(probs, predict_proba(model, data[2]))
    if store is None:
        return TrialRecord(model_path=str(path))
    hist = models_dir / f"trial-{trial.number}.history.csv"
    save_history(hist, history)
    return TrialRecord(
        model_artifact=st.upload(store, trial, path),
        holdout_artifact=st.upload(store, trial, probs),
        history_artifact=st.upload(store, trial, hist),
    )


def holdout_probs_path(model_path: str | Path) -> Path:
    """Where a kept trial model's holdout probabilities are (beside the model)."""
    p = Path(model_path)
    return p.with_name(p.name.removesuffix(".keras") + ".holdout.npy")


def trial_files(trial, models_dir: Path, store=None) -> tuple[Path | None, Path | None]:
    """(model file, validation probabilities file) of a completed trial on this machine:
    downloaded from the artifact store when the record names artifacts, else the local files;
    (None, None) when neither is there."""
    from pipeline.tune import store as st

    r = read_trial(trial)
    local = Path(models_dir) / f"trial-{trial.number}.keras"
    if r.model_artifact and store is not None:
        model = st.fetch(store, r.model_artifact, local)
        probs = holdout_probs_path(local)
        if r.holdout_artifact:
            st.fetch(store, r.holdout_artifact, probs)
        return model, probs
    for path in (Path(r.model_path) if r.model_path else None, local):
        if path is not None and path.exists():
            return path, holdout_probs_path(path)
    return None, None
