"""Training the chosen configuration again: the final fit (the whole training split, scored on
the whole holdout, for as many epochs as the budget leaves) or ``--refit`` (all labelled rows,
for the trial's best epoch count)."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.data import Dataset
from pipeline.data.split import Split
from pipeline.records import FinalFitRecord, FlipDecision, TrialRecord
from pipeline.tune import log
from pipeline.tune.budget import FORWARD_SHARE, Budget, epoch_seconds, predict_seconds
from pipeline.tune.stretch import stretch_seconds

# Each final epoch is followed by a validation pass that only prints progress (the honest score
# is taken once, after the last epoch, on the whole holdout): a few thousand holdout images
# show the trend. On the demo the whole 10,000-image holdout cost ~8% of every epoch.
PROGRESS_ROWS = 2000


@dataclass(frozen=True)
class FinalFitJob:
    """What the final fit trains, and where its files go."""

    trial_number: int
    trial: TrialRecord  # the configuration (model, hp, settings) and its measured speed
    flip: FlipDecision  # the mirror joins the augmentation and the test-time views
    tune_dir: Path
    seed: int = 42
    max_epochs: int | None = None  # None: as many as the budget holds
    tta: bool = False  # one-pixel shifts at test time
    init: Path | None = None  # the trial's saved model: the fit starts from its weights
    stretch: str = "off"  # the last stretch after the holdout scored it (tune/stretch.py)
    ema: float = 0.0  # epochs of the weights' moving average kept at the end (0: off)
    least: int = 2  # epochs the fit must hold, else it does not run
    member: int = 0  # which of the final fit's members (tune/members.py); 0: the first
    members: int = 1  # how many: with one, its files keep the plain names

    @property
    def checkpoint(self) -> Path:
        root = self.tune_dir / "final-checkpoint"
        return root / f"member-{self.member}" if self.member else root

    @property
    def name(self) -> str:
        """The stem of its files: ``models/final.keras``, ``final_history.csv``, ... for the
        only or first member, ``final-m1...`` for the second."""
        return f"final-m{self.member}" if self.member else "final"


@dataclass
class FinalFitPace:
    """The final fit's clock: seconds per epoch, and the time kept back for predicting the
    holdout and the test set afterwards, re-measured from each epoch's validation pass."""

    epoch_s: float
    predict_images: int
    per_image: list[float]  # seconds per scored image, one entry per measurement

    def predict_s(self) -> float:
        return predict_seconds(self.per_image[-1], self.predict_images)


def final_fit(job: FinalFitJob, ds: Dataset, split: Split, budget: Budget, store=None,
              study=None):  # fmt: skip
    """(model, record), or None when fewer than two epochs fit in what is left of the budget.

    The configuration is trained with a one-epoch warmup and a cosine schedule that ends when
    the budget does (re-planned each epoch from measured epoch times), starting from the
    trial's weights when ``job.init`` loads (the trial trained the same network on a slice of
    these rows: its epochs are not thrown away). The last epoch is kept and scored on the whole
    holdout (each epoch's progress line uses PROGRESS_ROWS of it): nothing was chosen on it, so
    its accuracy is the honest estimate of what is submitted."""
    from pipeline.batchnorm import REFRESH_BATCH_SIZE, REFRESH_BATCHES
    from pipeline.predict import views
    from pipeline.training import read_checkpoint

    ips = float(job.trial.metrics.train_images_per_second if job.trial.metrics else 0)
    if ips <= 0 or job.trial.settings is None:
        return None
    y_tr, y_va = split[1], split[3]
    n_progress = min(len(y_va), PROGRESS_ROWS)
    which = views(job.tta, job.flip.invariant)
    predicted = len(which) * (len(y_va) + len(ds.x_test))  # images, every view counted
    if job.ema:  # and the batch-norm refresh after averaging, in training mode: counted twice
        predicted += 2 * min(len(y_tr), REFRESH_BATCHES * REFRESH_BATCH_SIZE)
    forward = forward_seconds(job.init, split[2], FORWARD_SHARE / ips)
    pace = FinalFitPace(epoch_seconds(1 / ips, len(y_tr), n_progress), predicted, [forward])
    resumed = read_checkpoint(job.checkpoint)
    done = resumed["epoch"] if resumed else 0
    left = budget.left() - pace.predict_s()
    n_rows = len(y_tr) + len(y_va) + (len(ds.x_test) if job.stretch == "labelled+test" else 0)
    stretch_s = stretch_seconds(job.stretch, left, pace.epoch_s, len(y_tr), n_rows)
    left -= stretch_s
    epochs = min(int(left // pace.epoch_s) + done, job.max_epochs or 10_000)
    if epochs - done < job.least and not resumed:
        why = (f"--final-max-epochs {job.max_epochs}"
               if job.max_epochs and job.max_epochs < job.least
               else f"~{pace.epoch_s:.0f} s/epoch, {left:.0f} s left")  # fmt: skip
        log(f"final: no final fit: it needs {job.least} epochs at least ({why})")
        return None
    if resumed:
        log(f"final: resuming {job.trial.model} from epoch {done} ({job.checkpoint})")
    model, result = train_final(job, ds, split, budget, pace, epochs, resumed, stretch_s)
    t0 = time.monotonic()
    record = score_final(job, result, split, which, n_progress, store, study)
    # the time kept back for predicting, and (with the test set, see final.by_final_fit) used
    record = dataclasses.replace(record, predict_kept_s=round(pace.predict_s(), 1),
                                 predict_used_s=round(time.monotonic() - t0, 1),
                                 stretch_kept_s=round(stretch_s, 1))  # fmt: skip
    return model, record


# Images whose forward pass times the trial's saved model before the final fit plans (after a
# first call of FORWARD_TRACE images that traces it). A third of a training image's time, the
# estimate otherwise, kept back 25.4 s for predicting in the 3600 s run where 8.3 s were used,
# and at --quick left a fit of the search's unused 48 s 17 s to train.
FORWARD_PROBE = 1024
FORWARD_TRACE = 64


def forward_seconds(saved: Path | None, x: np.ndarray, fallback: float) -> float:
    """Seconds per image of the saved model's forward pass, timed on up to FORWARD_PROBE of
    ``x``; ``fallback`` without a model that loads or enough images to time."""
    from pipeline.errors import PipelineError
    from pipeline.predict import load_model, predict_proba

    n = min(len(x), FORWARD_PROBE)
    if saved is None or n < 4 * FORWARD_TRACE:
        return fallback
    try:
        model = load_model(Path(saved))
    except (OSError, ValueError, PipelineError):
        return fallback
    predict_proba(model, x[:FORWARD_TRACE])
    t0 = time.perf_counter()
    predict_proba(model, x[:n])
    return (time.perf_counter() - t0) / n


def train_final(job: FinalFitJob, ds: Dataset, split: Split, budget: Budget,
                pace: FinalFitPace, epochs: int, resumed: dict | None,
                stretch_s: float = 0.0):  # fmt: skip
    """Build the configuration, start from the trial's weights, fit to the deadline (less
    ``stretch_s``, kept for the last stretch)."""
    from pipeline import callbacks
    from pipeline.device import fresh_session
    from pipeline.models import build_model
    from pipeline.training import fit, with_flip

    x_tr, y_tr, x_va, y_va = split
    n_progress = min(len(y_va), PROGRESS_ROWS)
    trial = job.trial
    # re-planned to the deadline every epoch; a resumed fit finishes the plan it had
    planned = (resumed or {}).get("planned_epochs")
    settings = trial.settings.replace(
        epochs=planned or job.max_epochs or 10_000, schedule="cosine", warmup_epochs=1.0,
        augment=with_flip(trial.settings.augment, job.flip.invariant), seed=job.seed,
        ema_epochs=job.ema,
    )  # fmt: skip
    settings = benchmark_recipe(settings)
    fresh_session()
    model = build_model(trial.model, ds.image_shape, ds.num_classes, **trial.hp)
    started = job.init is not None and start_from(model, Path(job.init))
    averaged = (f"; kept: the weights' moving average over ~{job.ema:g} epochs (batch-norm "
                "statistics, where the net has them, re-estimated for it)"
                if job.ema else "")  # fmt: skip
    log(
        f"final: training trial {job.trial_number}'s configuration ({trial.model}, augment "
        f"{settings.augment}) on all {len(y_tr)} training images for ~{epochs} epochs "
        f"(~{epochs * pace.epoch_s:.0f} s; re-planned each epoch from its measured time), "
        f"scored at its last epoch on {len(y_va)} holdout images (progress on {n_progress})"
        + (f", starting from the trial's weights ({Path(job.init).name})" if started else "")
        + averaged
        + (
            f"; member {job.member + 1} of {job.members}, seed {job.seed}"
            if job.members > 1
            else ""
        )
    )
    result = fit(
        model, settings, (x_tr, y_tr, x_va[:n_progress], y_va[:n_progress]), ds.num_classes,
        deadline=lambda: budget.deadline - pace.predict_s() - stretch_s, verbose=0,
        keep_best=False,
        checkpoint=job.checkpoint,
        callbacks=[callbacks.EpochLog(log, "final: "),
                   callbacks.ValidationPassTimer(n_progress, pace.per_image)],
    )  # fmt: skip
    return result.model, (result, settings, started)


def benchmark_recipe(settings):
    """The final fit's recipe as a benchmark may change it: PIPELINE_FINAL_AUGMENT adds
    augmentation parts (e.g. ``erase``), PIPELINE_FINAL_LABEL_SMOOTHING sets the label smoothing.
    Unset (what ``tune`` does): the trial's recipe. The settings saved with the fit say which."""
    import os

    from pipeline.training import augment_parts

    extra = augment_parts(os.environ.get("PIPELINE_FINAL_AUGMENT", ""))
    parts = augment_parts(settings.augment)
    parts += [p for p in extra if p not in parts]
    smoothing = os.environ.get("PIPELINE_FINAL_LABEL_SMOOTHING")
    return settings.replace(
        augment="+".join(parts) or "off",
        label_smoothing=settings.label_smoothing if smoothing is None else float(smoothing),
    )


def score_final(job: FinalFitJob, fitted, split: Split, which, n_progress: int, store=None,
                study=None) -> FinalFitRecord:  # fmt: skip
    """Save the final model and history, score the last epoch on the whole holdout (plain and
    with the test-time views in use), upload to the store, and record it."""
    from pipeline import artifacts
    from pipeline.predict import view_probas

    result, settings, started = fitted
    y_va = split[3]
    path = job.tune_dir / "models" / f"{job.name}.keras"
    history = job.tune_dir / f"{job.name}_history.csv"
    artifacts.save_model(result.model, path)
    artifacts.save_history(history, result.history)
    passes = view_probas(result.model, split[2], which)
    plain, averaged = passes[0].astype(np.float32), np.mean(passes, axis=0).astype(np.float32)
    acc_plain = float((plain.argmax(1) == y_va).mean())
    acc_tta = float((averaged.argmax(1) == y_va).mean())
    np.save(holdout_probs_path(path), averaged)
    log(
        f"final: holdout accuracy at the last epoch {acc_plain:.4f}, with the test-time views "
        f"in use ({len(which)}) {acc_tta:.4f}"
    )
    uploaded = {}
    if store is not None and study is not None:  # the study's artifacts: any machine finds them
        from pipeline.tune.store import upload

        uploaded = dict(model_artifact=upload(store, study, path),
                        history_artifact=upload(store, study, history))  # fmt: skip
    m = result.metrics
    return FinalFitRecord(
        trial=job.trial_number, model=job.trial.model, epochs_run=m.epochs_run,
        best_epoch=m.best_epoch, seconds=m.seconds, train_rows=len(split[1]),
        holdout_rows=len(y_va), holdout_accuracy_plain=acc_plain, holdout_accuracy_tta=acc_tta,
        holdout_accuracy=acc_tta, tta=job.tta, model_path=str(path), settings=settings,
        flip=job.flip.invariant, progress_rows=n_progress,
        started_from=str(job.init) if started else None,
        images_per_second=m.train_images_per_second,
        last_learning_rate=(result.history.get("learning_rate") or [None])[-1], **uploaded,
    )  # fmt: skip


def holdout_probs_path(model_path: str | Path) -> Path:
    """Where a final model's holdout probabilities (test-time views averaged) are saved:
    ``models/final.keras`` -> ``models/final.holdout.npy``."""
    return Path(model_path).with_suffix(".holdout.npy")


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


def refit_best(ds: Dataset, split: Split, trial_number: int, trial: TrialRecord, budget: Budget):
    """The best configuration retrained on all labelled rows (the split's training part and its
    holdout) for its best epoch count, or None when the budget cannot hold it."""
    from pipeline.device import fresh_session
    from pipeline.models import build_model
    from pipeline.training import fit

    m = trial.metrics
    settings = trial.settings.replace(epochs=int(m.best_epoch or 1))
    x = np.concatenate([split[0], split[2]])
    y = np.concatenate([split[1], split[3]])
    check = min(256, len(y))
    per_epoch = epoch_seconds(1 / max(m.train_images_per_second, 1e-9), len(y), check)
    needed = per_epoch * settings.epochs
    left = budget.left() - predict_seconds(FORWARD_SHARE / m.train_images_per_second,
                                           len(ds.x_test))  # fmt: skip
    if needed > left:
        log(f"final: skipping --refit (needs ~{needed:.0f} s, {left:.0f} s left)")
        return None
    log(
        f"final: refitting trial {trial_number} ({trial.model}) on all {len(y)} labelled rows "
        f"for {settings.epochs} epochs (~{needed:.0f} s)"
    )
    fresh_session()
    model = build_model(trial.model, ds.image_shape, ds.num_classes, **trial.hp)
    # the holdout is inside the training rows now: keep the last epoch, not the "best" one
    data = (x, y, x[:check], y[:check])
    return fit(model, settings, data, ds.num_classes, verbose=0, keep_best=False).model


def final_fit_classical(job: FinalFitJob, ds: Dataset, split: Split, budget: Budget,
                        mirror: bool, n_trial: int):  # fmt: skip
    """A classical entry fit once on the whole training split and scored on the whole holdout
    (which chose nothing), when its trial's fit time, scaled to these rows, fits in the time
    left; (model, record), or None."""
    from pipeline import classical
    from pipeline.models import build_model
    from pipeline.predict import view_probas, views

    m = job.trial.metrics
    need = classical.fit_seconds(job.trial.model, (m.seconds, n_trial), len(split[1]),
                                 len(split[3]) + len(ds.x_test))  # fmt: skip
    if need > 0.8 * budget.left():
        log(f"final: no final fit of {job.trial.model}: ~{need:.0f} s on {len(split[1])} rows, "
            f"{budget.left():.0f} s left; its trial's model is submitted")  # fmt: skip
        return None
    estimator = build_model(job.trial.model, ds.image_shape, ds.num_classes, **job.trial.hp)
    result = classical.fit_classical(estimator, split, ds.num_classes, job.seed)
    path = job.tune_dir / "models" / f"final{classical.SUFFIX}"
    classical.save(result.model, path)
    which = views(job.tta, mirror)
    passes = view_probas(result.model, split[2], which)
    acc_plain = float((passes[0].argmax(1) == split[3]).mean())
    acc = float((np.mean(passes, axis=0).argmax(1) == split[3]).mean())
    log(
        f"final: {job.trial.model} fit once on {len(split[1])} rows in "
        f"{result.metrics.seconds:.0f} s: holdout accuracy {acc_plain:.4f}, with the test-time "
        f"views ({len(which)}) {acc:.4f}"
    )
    record = FinalFitRecord(
        trial=job.trial_number, model=job.trial.model, epochs_run=1, best_epoch=1,
        seconds=result.metrics.seconds, train_rows=len(split[1]), holdout_rows=len(split[3]),
        holdout_accuracy_plain=acc_plain, holdout_accuracy_tta=acc, holdout_accuracy=acc,
        tta=job.tta, model_path=str(path), settings=job.trial.settings, flip=mirror,
    )  # fmt: skip
    return result.model, record
