"""What the final stage can submit, each a mode that returns a :class:`Submitted` (or None
when it cannot run in the time left):

- :func:`by_final_fit`: the chosen configuration trained on the whole training split, from its
  trial's weights, to the deadline (:class:`~pipeline.tune.fit.FitJob`), scored on the holdout;
- :func:`pipeline.tune.kfold.by_kfold` (small data): k folds of every labelled row;
- :func:`by_trials`: the chosen trials' own models averaged, scored on the holdout.

Where no fit was planned, the time the folds or the search left may still go to a final fit of
the one chosen trial (:func:`idle_fit`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.data import Dataset
from pipeline.data.split import RunSplits
from pipeline.options import TuneOptions
from pipeline.predict import views
from pipeline.records import Estimate, FinalFitRecord, FoldsRecord, read_trial
from pipeline.tune.cost import Budget
from pipeline.tune.decide import Decisions, test_mirror
from pipeline.tune.fit import FitJob, PredictTask
from pipeline.tune.plan import TunePlan
from pipeline.tune.trials import sampled_width

# Epochs a final fit in the time the search or the folds left (idle_fit) must hold, else the
# trial's own model is submitted: the fit re-warms to the trial's peak rate before annealing,
# which two epochs hardly undo. At --quick on 3,000 demo rows such a fit of 9 epochs from the
# warm start's weights read 0.8233 on the holdout where its trial read 0.7771 on validation.
IDLE_FIT_EPOCHS = 4


@dataclass(frozen=True)
class FinalContext:
    """What every mode reads."""

    opts: TuneOptions
    plan: TunePlan
    ds: Dataset
    splits: RunSplits
    budget: Budget
    tune_dir: Path
    study: object
    runner: object  # where the fits and predictions run (pipeline.worker)
    store: object = None


@dataclass(frozen=True)
class Submitted:
    """What a mode produced: the test probabilities, the trials behind them, the estimate."""

    test_probs: np.ndarray
    trials: list
    estimate: Estimate
    holdout_accuracy: float | None  # None when the holdout trained it (k-fold)
    fitted: FinalFitRecord | None = None
    mirror: tuple[bool, str] = (False, "")  # the mirror among the test-time views, and why
    folds: FoldsRecord | None = None  # the k-fold stage's record, where it ran


def by_final_fit(ctx: FinalContext, d: Decisions, least: int = 2) -> Submitted | None:
    """The chosen configuration trained on the whole training split; None when fewer than
    ``least`` epochs fit."""
    from pipeline.models import get_entry

    best = d.trials[0]
    record = read_trial(best)
    classical = get_entry(record.model).classical  # fit once, no epochs, no mirrored images
    # the fit adds the mirror to a network's augmentation where the labels survive it
    mirror = test_mirror(d.flip, trained_with_mirror=d.flip.invariant and not classical)
    job = FitJob("final", best.number, record, ctx.plan.search_rows, ctx.budget.deadline,
                 mirror=d.flip.invariant, views=tuple(views(ctx.opts.tta, mirror[0])),
                 max_epochs=ctx.opts.final_max_epochs, least=least,
                 init=str(d.files[best.number][0]), seed=ctx.opts.seed,
                 width=sampled_width(best))  # fmt: skip
    out = ctx.runner.run(job)
    if out is None:
        return None
    fitted = uploaded(ctx, out.record)
    estimate = Estimate.of(fitted.holdout_accuracy, fitted.holdout_rows, "holdout")
    return Submitted(out.test, [best], estimate, fitted.holdout_accuracy, fitted, mirror)


def uploaded(ctx: FinalContext, record: FinalFitRecord) -> FinalFitRecord:
    """The record with the final model and its history in the artifact store (any machine
    finds them), where there is one."""
    if ctx.store is None:
        return record
    from pipeline.storage import upload

    model = Path(record.model_path)
    history = ctx.tune_dir / f"{model.name.removesuffix(model.suffix)}_history.csv"
    return dataclasses.replace(
        record, model_artifact=upload(ctx.store, ctx.study, model),
        history_artifact=upload(ctx.store, ctx.study, history) if history.exists() else None,
    )  # fmt: skip


def by_trials(ctx: FinalContext, d: Decisions) -> Submitted:
    """The chosen trials' own models averaged, scored on the holdout."""
    mirror = test_mirror(d.flip, trained_with_mirror(d.trials))
    which = tuple(tuple(views(ctx.opts.tta, mirror[0])) for _ in d.trials)
    paths = tuple(str(d.files[t.number][0]) for t in d.trials)
    held, test = ctx.runner.run(PredictTask(paths, which, ctx.plan.search_rows))
    y_holdout = ctx.splits.holdout[3]
    accuracy = float((held.argmax(1) == y_holdout).mean())
    return Submitted(test, d.trials, Estimate.of(accuracy, len(y_holdout), "holdout"), accuracy,
                     mirror=mirror)  # fmt: skip


def trained_with_mirror(trials: list) -> bool:
    """True when every one of these trials trained with mirrored images."""
    from pipeline.training import augment_parts

    return all("flip" in augment_parts(read_trial(t).settings.augment) for t in trials)


def idle_fit(ctx: FinalContext, d: Decisions, after_folds: bool) -> bool:
    """True when the time left should go to a final fit of the one chosen trial (by_final_fit
    with IDLE_FIT_EPOCHS at least, else the trial's own model is submitted): folds that do not
    fit leave their time to it (in the suite at 900 s, rgb32 and fer48 submitted their trials'
    models with 420 s of 900 unused), and so does a search that stops before its deadline
    (--quick on 6,000 demo rows left 38 s of 150 unused). Not with ``--final trials``; without
    folds, not after ``--trials N`` (the user ended the search, not the budget) nor where the
    validation rows chose an ensemble of several (the fit would train its first only)."""
    if ctx.opts.final == "trials":
        return False
    return after_folds or (len(d.trials) == 1 and ctx.opts.trials is None)
