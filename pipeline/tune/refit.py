"""Training the chosen configuration again: the final fit (the whole training split, scored on
the whole holdout, for as many epochs as the budget leaves) or ``--refit`` (all labelled rows,
for the trial's best epoch count)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.data import Dataset
from pipeline.data.split import Split
from pipeline.device import fresh_session
from pipeline.records import FinalFitRecord, FlipDecision, TrialRecord
from pipeline.tune import log
from pipeline.tune.budget import Budget

# Each final epoch is followed by a validation pass that only prints progress (the honest score
# is taken once, after the last epoch, on the whole holdout): a few thousand holdout images
# show the trend. On the demo the whole 10,000-image holdout cost ~8% of every epoch.
PROGRESS_ROWS = 2000


def final_fit(
    ds: Dataset,
    split: Split,
    trial_number: int,
    trial: TrialRecord,
    budget: Budget,
    max_epochs: int | None,
    shifts: bool,
    flip: FlipDecision,
    seed: int,
    tune_dir: Path,
    checkpoint: Path | None = None,
    store=None,
    study=None,
    init: Path | None = None,
):
    """(model, record), or None when fewer than two epochs fit in what is left of the budget.

    ``init``: the trial's saved model, whose weights the fit starts from (the trial trained the
    same network on a slice of these rows: its epochs are not thrown away).

    The configuration is trained with a one-epoch warmup and a cosine schedule that ends when
    the budget does (re-planned each epoch from measured epoch times); the time kept for
    predicting afterwards (holdout and test under every test-time view) is re-measured from each
    epoch's holdout pass (an estimate from the trial's speed overran a 3600 s budget by 6 s).
    The last epoch is kept and scored on the whole holdout (each epoch's progress line uses
    PROGRESS_ROWS of it): nothing was chosen on it, so its accuracy is the honest estimate of
    what is submitted."""

    from pipeline import artifacts, callbacks
    from pipeline.models import build_model
    from pipeline.predict import view_probas, views
    from pipeline.training import fit, read_checkpoint, with_flip

    x_tr, y_tr, x_va, y_va = split
    ips = float(trial.metrics.train_images_per_second if trial.metrics else 0)
    if ips <= 0 or trial.settings is None:
        return None
    n_progress = min(len(y_va), PROGRESS_ROWS)
    # an epoch: training, plus one forward pass over the progress rows (~3x cheaper per image)
    epoch_s = (len(y_tr) + n_progress / 3) / ips * 1.1
    which = views(shifts, flip.invariant)
    after = len(which) * (len(y_va) + len(ds.x_test))
    per_image = [1 / (3 * ips)]

    def predict_s() -> float:
        return after * per_image[-1] * 1.25 + 15

    left = budget.left() - predict_s()
    cap = max_epochs or 10_000
    resumed = read_checkpoint(checkpoint)
    done = resumed["epoch"] if resumed else 0
    epochs = min(int(left // epoch_s) + done, cap)
    if epochs - done < 2 and not resumed:
        log(f"final: no time to train on the whole split (~{epoch_s:.0f} s/epoch, {left:.0f} s)")
        return None
    if resumed:
        log(f"final: resuming {trial.model} from epoch {done} ({checkpoint})")
    # re-planned to the deadline every epoch; a resumed fit finishes the plan it had
    planned = (resumed or {}).get("planned_epochs")
    settings = trial.settings.replace(
        epochs=planned or cap,
        schedule="cosine",
        warmup_epochs=1.0,
        augment=with_flip(trial.settings.augment, flip.invariant),
        seed=seed,
    )
    fresh_session()
    model = build_model(trial.model, ds.image_shape, ds.num_classes, **trial.hp)
    started = init is not None and start_from(model, Path(init))
    log(
        f"final: training trial {trial_number}'s configuration ({trial.model}, augment "
        f"{settings.augment}) on all {len(y_tr)} training images for ~{epochs} epochs "
        f"(~{epochs * epoch_s:.0f} s; re-planned each epoch from its measured time), "
        f"scored at its last epoch on {len(y_va)} holdout images (progress on {n_progress})"
        + (f", starting from the trial's weights ({Path(init).name})" if started else "")
    )
    result = fit(
        model,
        settings,
        (x_tr, y_tr, x_va[:n_progress], y_va[:n_progress]),
        ds.num_classes,
        deadline=lambda: budget.deadline - predict_s(),
        verbose=0,
        keep_best=False,
        checkpoint=checkpoint,
        callbacks=[
            callbacks.EpochLog(log, "final: "),
            callbacks.HoldoutTimer(n_progress, per_image),
        ],
    )
    path = tune_dir / "models" / "final.keras"
    artifacts.save_model(result.model, path)
    artifacts.save_history(tune_dir / "final_history.csv", result.history)
    passes = view_probas(result.model, x_va, which)
    plain, averaged = passes[0].astype(np.float32), np.mean(passes, axis=0).astype(np.float32)
    acc_plain = float((plain.argmax(1) == y_va).mean())
    acc_tta = float((averaged.argmax(1) == y_va).mean())
    np.save(tune_dir / "models" / "final.holdout.npy", averaged)
    log(
        f"final: holdout accuracy at the last epoch {acc_plain:.4f}, with the test-time views "
        f"in use ({len(which)}) {acc_tta:.4f}"
    )
    m = result.metrics
    uploaded = {}
    if store is not None and study is not None:  # the study's artifacts: any machine finds them
        from pipeline.tune.store import upload

        uploaded = dict(
            model_artifact=upload(store, study, path),
            history_artifact=upload(store, study, tune_dir / "final_history.csv"),
        )
    record = FinalFitRecord(
        trial=trial_number,
        model=trial.model,
        epochs_run=m.epochs_run,
        best_epoch=m.best_epoch,
        seconds=m.seconds,
        train_rows=len(y_tr),
        holdout_rows=len(y_va),
        holdout_accuracy_plain=acc_plain,
        holdout_accuracy_tta=acc_tta,
        holdout_accuracy=acc_tta,
        tta=shifts,
        model_path=str(path),
        settings=settings,
        flip=flip.invariant,
        progress_rows=n_progress,
        started_from=str(init) if started else None,
        **uploaded,
    )
    return result.model, record


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

    from pipeline.models import build_model
    from pipeline.training import fit

    m = trial.metrics
    settings = trial.settings.replace(epochs=int(m.best_epoch or 1))
    needed = m.seconds / max(m.epochs_run, 1) * settings.epochs * 1.25
    left = budget.left() - 30
    if needed > left:
        log(f"final: skipping --refit (needs ~{needed:.0f} s, {left:.0f} s left)")
        return None
    x = np.concatenate([split[0], split[2]])
    y = np.concatenate([split[1], split[3]])
    log(
        f"final: refitting trial {trial_number} ({trial.model}) on all {len(y)} labelled rows "
        f"for {settings.epochs} epochs (~{needed:.0f} s)"
    )
    fresh_session()
    model = build_model(trial.model, ds.image_shape, ds.num_classes, **trial.hp)
    # the holdout is inside the training rows now: keep the last epoch, not the "best" one
    data = (x, y, x[:256], y[:256])
    return fit(model, settings, data, ds.num_classes, verbose=0, keep_best=False).model
