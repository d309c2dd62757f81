"""The final stage's one fit: a configuration trained on given rows to a deadline, scored once
on rows it never trained on, then predicting the test set. Every training of the final stage
goes through :class:`FitJob` (the final fit on the training split, each of the k folds), so all
share one checkpoint and resume rule, one deadline rule, one mirror rule and one set of files.
It runs as a task of the runner (:mod:`pipeline.worker`), where TensorFlow lives; so does
:class:`PredictTask` (saved models' probabilities, where nothing is trained).

A network trains with a warmup and a cosine schedule that ends at its epochs or its deadline
(re-planned each epoch from measured epoch times), starting from the trial's weights where
``init`` loads; its last epoch is kept. A classical entry is fit once. Each fit saves its state
every epoch under ``tune/final-checkpoint/<name>/`` and, once done, its record and probabilities
there: a rerun resumes an interrupted fit at its last epoch and does not train a finished one.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from pipeline.records import FinalFitRecord, TrialRecord, load_json, save_json
from pipeline.tune import log
from pipeline.tune.cost import FORWARD_SHARE, epoch_seconds, predict_seconds

CHECKPOINT = "final-checkpoint"  # under tune/: the final stage's plan and each fit's state
# Each epoch of a fit is followed by a validation pass that only prints progress (the honest
# score is taken once, after the last epoch, on every scored row): a few thousand rows show the
# trend. On the demo the whole 10,000-image holdout cost ~8% of every epoch.
PROGRESS_ROWS = 2000
# Images whose forward pass times the trial's saved model before the fit plans (after a first
# call of FORWARD_TRACE images that traces it). A third of a training image's time, the
# estimate otherwise, kept back 25.4 s for predicting in the 3600 s run where 8.3 s were used,
# and at --quick left a fit of the search's unused 48 s 17 s to train.
FORWARD_PROBE = 1024
FORWARD_TRACE = 64
PLAIN = ((0, 0, False),)  # the test-time views: (dy, dx, mirrored); the identity alone


@dataclass(frozen=True)
class FitJob:
    """One fit of the final stage (a runner's task)."""

    trains: ClassVar[bool] = True  # counts toward the worker's replacement

    name: str  # its files: models/<name>.keras, <name>_history.csv, final-checkpoint/<name>/
    trial_number: int
    trial: TrialRecord  # the configuration (model, hp, settings) and its measured speed
    search_rows: int | None  # which of the run's splits (pipeline.data.split.run_splits)
    deadline: float  # time.monotonic() seconds: training and predicting end by then
    fold: tuple[int, int] | None = None  # (k, i): every labelled row but fold i; None: the split
    mirror: bool = False  # a network trains with mirrored images
    views: tuple = PLAIN  # the test-time views it is scored and predicts with
    epochs: int | None = None  # a fold's epochs; None: as many as the deadline holds
    max_epochs: int | None = None  # --final-max-epochs
    least: int = 2  # epochs (a classical fit: the fit) the deadline must hold, else no fit
    init: str | None = None  # the trial's saved model: a network starts from its weights
    warmup: float = 1.0  # epochs of learning-rate warmup
    seed: int = 42
    progress: bool = True  # a line per epoch
    progress_rows: int | None = None  # scored rows behind each epoch's line (PROGRESS_ROWS)
    width: float = 1.0  # the trial's sampled width multiplier (tune.trials.sampled_width)

    def footprint(self) -> tuple[str, int, float]:
        """(entry, batch, width): what the memory its fit adds depends on."""
        return self.trial.model, self.trial.settings.batch_size, self.width

    def folder(self, tune_dir: Path) -> Path:
        return Path(tune_dir) / CHECKPOINT / self.name

    def run(self, env, report=None) -> FitOutput | None:
        done = read_done(self.folder(env.tune_dir))
        if done is not None:
            log(f"final: {self.name} finished before ({done.record.model_path})")
            return done
        data = fit_rows(env, self.search_rows, self.fold)
        from pipeline.models import get_entry

        if get_entry(self.trial.model).classical:
            out = fit_classical(self, env, data)
        else:
            out = fit_network(self, env, data)
        if out is not None:
            save_done(self.folder(env.tune_dir), out)
        return out


@dataclass(frozen=True)
class FitOutput:
    record: FinalFitRecord
    scored: np.ndarray  # the scored rows' probabilities, the views averaged
    test: np.ndarray  # the test images' probabilities, the views averaged


def fold_rows(y: np.ndarray, k: int, seed: int) -> list:
    """The k stratified folds of labels ``y``: (training rows, left-out rows) each."""
    from sklearn.model_selection import StratifiedKFold

    return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))


def fit_rows(env, search_rows: int | None, fold: tuple[int, int] | None):
    """(x_train, y_train, x_scored, y_scored): the holdout split, or every labelled row but
    fold ``i`` of ``k`` and that fold."""
    split = env.splits(search_rows).holdout
    if fold is None:
        return split
    x, y = np.concatenate([split[0], split[2]]), np.concatenate([split[1], split[3]])
    tr, va = fold_rows(y, fold[0], env.opts.seed)[fold[1]]
    return x[tr], y[tr], x[va], y[va]


def shown_rows(job: FitJob, data) -> int:
    """Scored rows behind each epoch's progress line."""
    return min(len(data[3]), job.progress_rows or PROGRESS_ROWS)


def fit_network(job: FitJob, env, data) -> FitOutput | None:
    """Plan the epochs (a fold's, or as many as the deadline holds at the trial's pace), train,
    score and predict; None when fewer than ``job.least`` epochs fit."""
    from pipeline.training import read_checkpoint

    ips = float(job.trial.metrics.train_images_per_second if job.trial.metrics else 0)
    if ips <= 0 or job.trial.settings is None:
        return None
    n_progress = shown_rows(job, data)
    per_image = [forward_seconds(job, data[2], FORWARD_SHARE / ips)]
    n_predicted = len(job.views) * (len(data[3]) + len(env.ds.x_test))
    epoch_s = epoch_seconds(1 / ips, len(data[1]), n_progress)
    resumed = read_checkpoint(job.folder(env.tune_dir))
    done = resumed["epoch"] if resumed else 0
    left = job.deadline - time.monotonic() - predict_seconds(per_image[-1], n_predicted)
    epochs = job.epochs or int(left // epoch_s) + done
    epochs = min(epochs, job.max_epochs or 10_000)
    if epochs - done < job.least and not resumed:
        why = (f"--final-max-epochs {job.max_epochs}"
               if job.max_epochs and job.max_epochs < job.least
               else f"~{epoch_s:.0f} s/epoch, {left:.0f} s left")  # fmt: skip
        log(f"final: no {job.name} fit: it needs {job.least} epochs at least ({why})")
        return None
    if resumed:
        log(f"final: resuming {job.trial.model} from epoch {done} ({job.folder(env.tune_dir)})")

    def deadline() -> float:  # re-read every epoch: each validation pass re-times predicting
        if job.epochs:  # a fold: its stage planned the predictions
            return job.deadline
        return job.deadline - predict_seconds(per_image[-1], n_predicted)

    model, fitted = train_network(job, env, data, (epochs, epoch_s), deadline, per_image)
    t0 = time.monotonic()
    out = score_and_predict(job, env, model, fitted, data)
    kept = round(predict_seconds(per_image[-1], n_predicted), 1)
    record = dataclasses.replace(out.record, predict_kept_s=kept,
                                 predict_used_s=round(time.monotonic() - t0, 1))  # fmt: skip
    return dataclasses.replace(out, record=record)


def forward_seconds(job: FitJob, x: np.ndarray, fallback: float) -> float:
    """Seconds per image of the trial's saved model's forward pass, timed on up to
    FORWARD_PROBE of ``x``; ``fallback`` without a model that loads or enough images."""
    from pipeline.errors import PipelineError
    from pipeline.predict import load_model, predict_proba

    n = min(len(x), FORWARD_PROBE)
    if job.init is None or job.epochs is not None or n < 4 * FORWARD_TRACE:
        return fallback
    try:
        model = load_model(Path(job.init))
    except (OSError, ValueError, PipelineError):
        return fallback
    predict_proba(model, x[:FORWARD_TRACE])
    t0 = time.perf_counter()
    predict_proba(model, x[:n])
    return (time.perf_counter() - t0) / n


def train_network(job: FitJob, env, data, planned: tuple[int, float], deadline, per_image):
    """Build the configuration, start from the trial's weights, fit with a cosine to the
    epochs or the deadline; (model, (FitResult, settings, started))."""
    from pipeline import callbacks
    from pipeline.device import fresh_session
    from pipeline.models import build_model
    from pipeline.training import fit, read_checkpoint, with_flip

    epochs, epoch_s = planned
    trial, folder = job.trial, job.folder(env.tune_dir)
    n_progress = shown_rows(job, data)
    resumed_plan = (read_checkpoint(folder) or {}).get("planned_epochs")
    fresh_session()
    model = build_model(trial.model, env.ds.image_shape, env.ds.num_classes, **trial.hp)
    started = job.init is not None and start_from(model, Path(job.init))
    settings = trial.settings.replace(
        epochs=job.epochs or resumed_plan or job.max_epochs or 10_000, schedule="cosine",
        reduce_lr=False, warmup_epochs=job.warmup, seed=job.seed,
        augment=with_flip(trial.settings.augment, job.mirror),
    )  # fmt: skip
    if job.progress:
        start = f", starting from the trial's weights ({Path(job.init).name})" if started else ""
        log(f"final: training trial {job.trial_number}'s configuration ({trial.model}, augment "
            f"{settings.augment}) on all {len(data[1])} training images for ~{epochs} epochs "
            f"(~{epochs * epoch_s:.0f} s; re-planned each epoch from its measured time), scored "
            f"at its last epoch on {len(data[3])} holdout images (progress on {n_progress})"
            f"{start}")  # fmt: skip
    shown = [callbacks.ValidationPassTimer(n_progress, per_image)]
    if job.progress:
        shown.append(callbacks.EpochLog(log, "final: "))
    result = fit(model, settings, (data[0], data[1], data[2][:n_progress], data[3][:n_progress]),
                 env.ds.num_classes, deadline=deadline, verbose=0, keep_best=False,
                 checkpoint=folder, callbacks=shown)  # fmt: skip
    return result.model, (result, settings, started)


def score_and_predict(job: FitJob, env, model, fitted, data) -> FitOutput:
    """Save the model and its history, score its views on every scored row, predict the test
    set in the same views; the output with its record."""
    from pipeline import artifacts
    from pipeline.predict import view_probas

    result, settings, started = fitted
    path = env.models_dir / f"{job.name}.keras"
    artifacts.save_model(result.model, path)
    artifacts.save_history(env.tune_dir / f"{job.name}_history.csv", result.history)
    plain, averaged = scored_views(model, data[2], job.views)
    accuracy = [float((p.argmax(1) == data[3]).mean()) for p in (plain, averaged)]
    np.save(path.with_suffix(".holdout.npy"), averaged)
    if job.progress:
        log(f"final: holdout accuracy at the last epoch {accuracy[0]:.4f}, with the test-time "
            f"views in use ({len(job.views)}) {accuracy[1]:.4f}")  # fmt: skip
    test = np.mean(view_probas(model, env.ds.x_test, job.views), axis=0).astype(np.float32)
    m = result.metrics
    record = FinalFitRecord(
        trial=job.trial_number, model=job.trial.model, epochs_run=m.epochs_run,
        best_epoch=m.best_epoch, seconds=m.seconds, train_rows=len(data[1]),
        holdout_rows=len(data[3]), holdout_accuracy_plain=accuracy[0],
        holdout_accuracy_tta=accuracy[1], holdout_accuracy=accuracy[1],
        tta=any(v[:2] != (0, 0) for v in job.views), model_path=str(path), settings=settings,
        flip=any(v[2] for v in job.views), progress_rows=shown_rows(job, data),
        started_from=str(job.init) if started else None,
        images_per_second=m.train_images_per_second,
        last_learning_rate=(result.history.get("learning_rate") or [None])[-1],
    )  # fmt: skip
    return FitOutput(record, averaged, test)


def scored_views(model, x: np.ndarray, views) -> tuple[np.ndarray, np.ndarray]:
    """(plain probabilities, the views' average) of ``model`` on ``x``, from one set of passes."""
    from pipeline.predict import view_probas

    passes = view_probas(model, x, views)
    return passes[0].astype(np.float32), np.mean(passes, axis=0).astype(np.float32)


def fit_classical(job: FitJob, env, data) -> FitOutput | None:
    """A classical entry fit once on the training rows (when its trial's fit time, scaled to
    these rows, fits the time left, where ``job.least`` asks for it), scored and predicting."""
    from pipeline import classical
    from pipeline.models import build_model
    from pipeline.predict import view_probas

    m, model_name = job.trial.metrics, job.trial.model
    n_trial = len(env.splits(job.search_rows).search[1])
    need = classical.fit_seconds(model_name, (m.seconds, n_trial), len(data[1]),
                                 len(data[3]) + len(env.ds.x_test))  # fmt: skip
    left = job.deadline - time.monotonic()
    if job.least and need > 0.8 * left:
        log(f"final: no {job.name} fit of {model_name}: ~{need:.0f} s on {len(data[1])} rows, "
            f"{left:.0f} s left")  # fmt: skip
        return None
    estimator = build_model(model_name, env.ds.image_shape, env.ds.num_classes, **job.trial.hp)
    result = classical.fit_classical(estimator, data, env.ds.num_classes, job.seed)
    path = env.models_dir / f"{job.name}{classical.SUFFIX}"
    classical.save(result.model, path)
    plain, averaged = scored_views(result.model, data[2], job.views)
    accuracy = [float((p.argmax(1) == data[3]).mean()) for p in (plain, averaged)]
    if job.progress:
        log(f"final: {model_name} fit once on {len(data[1])} rows in "
            f"{result.metrics.seconds:.0f} s: holdout accuracy {accuracy[0]:.4f}, with the "
            f"test-time views ({len(job.views)}) {accuracy[1]:.4f}")  # fmt: skip
    test = np.mean(view_probas(result.model, env.ds.x_test, job.views), axis=0)
    record = FinalFitRecord(
        trial=job.trial_number, model=model_name, epochs_run=1, best_epoch=1,
        seconds=result.metrics.seconds, train_rows=len(data[1]), holdout_rows=len(data[3]),
        holdout_accuracy_plain=accuracy[0], holdout_accuracy_tta=accuracy[1],
        holdout_accuracy=accuracy[1], tta=any(v[:2] != (0, 0) for v in job.views),
        model_path=str(path), settings=job.trial.settings, flip=any(v[2] for v in job.views),
    )  # fmt: skip
    return FitOutput(record, averaged, test.astype(np.float32))


def start_from(model, saved: Path) -> bool:
    """Give ``model`` the weights of the saved model ``saved`` (the same entry and
    hyperparameters, so the same layers); False, and ``model`` left as built, when they do not
    load or match."""
    from pipeline.errors import PipelineError
    from pipeline.predict import load_model

    try:
        model.set_weights(load_model(saved).get_weights())
    except (OSError, ValueError, PipelineError) as exc:
        log(f"final: training from scratch: the trial's weights do not load ({exc})")
        return False
    return True


def save_done(folder: Path, out: FitOutput) -> None:
    """A finished fit's probabilities, then its record (a record is there only with them)."""
    from pipeline.fsutil import atomic_path

    done = folder / "done"
    done.mkdir(parents=True, exist_ok=True)
    for name, probs in (("scored", out.scored), ("test", out.test)):
        with atomic_path(done / f"{name}.npy") as tmp, open(tmp, "wb") as f:
            np.save(f, probs)
    save_json(done / "record.json", out.record)


def read_done(folder: Path) -> FitOutput | None:
    """The output of a fit that finished (and whose model is still there), or None."""
    done = folder / "done"
    try:
        record = load_json(FinalFitRecord, done / "record.json")
        out = FitOutput(record, np.load(done / "scored.npy"), np.load(done / "test.npy"))
    except (OSError, ValueError, TypeError):
        return None
    return out if Path(record.model_path).is_file() else None


@dataclass(frozen=True)
class PredictTask:
    """Saved models' probabilities on the holdout and the test set, each model in its own
    views, averaged over the models (a runner's task)."""

    model_paths: tuple[str, ...]
    views: tuple  # per model
    search_rows: int | None

    def run(self, env, report=None) -> tuple[np.ndarray, np.ndarray]:
        from pipeline.predict import load_model, view_probas

        x_holdout = env.splits(self.search_rows).holdout[2]
        held, test = [], []
        for path, which in zip(self.model_paths, self.views, strict=True):
            model = load_model(Path(path))
            held.append(np.mean(view_probas(model, x_holdout, which), axis=0))
            test.append(np.mean(view_probas(model, env.ds.x_test, which), axis=0))
        return np.mean(held, axis=0), np.mean(test, axis=0).astype(np.float32)
