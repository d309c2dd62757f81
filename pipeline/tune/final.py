"""The final stage: from the study to the submission, as a short sequence of named steps.

1. :func:`pipeline.tune.decide.decide`: the trial(s), the ensemble and the mirror, decided on
   the trials' validation rows only.
2. One mode makes the test probabilities and the estimate:
   - :func:`by_final_fit` (on a CPU, where trials saw a slice; and with the time folds or a
     search that stopped early left, :func:`idle_fit`): the chosen configuration trained on the
     whole training split from its trial's weights, scored on the holdout;
   - :func:`by_refit` (``--refit``): retrained on every labelled row, the holdout included (the
     estimate is then the trials' validation score: not honest, and it says so);
   - :func:`pipeline.tune.kfold.by_kfold` (small data): the chosen ensemble trained on k folds
     of every labelled row, scored out-of-fold; folds that cannot fit fall back to a final fit;
   - :func:`by_trials`: the trials' own models averaged, scored on the holdout.
   A fit that cannot run (no time) falls back to the trials' own models.
3. :func:`write_outputs`: ``best.json``, ``trials.csv``, ``test_proba.npy``, the submission.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline import artifacts
from pipeline.data import Dataset
from pipeline.options import TuneOptions
from pipeline.records import (
    Estimate,
    FinalFitRecord,
    FlipDecision,
    FoldsRecord,
    TuneResult,
    load_json,
    read_trial,
    save_json,
    to_dict,
)
from pipeline.tune import log
from pipeline.tune.budget import Budget, TunePlan
from pipeline.tune.decide import Decisions, test_mirror
from pipeline.tune.splits import RunSplits

CHECKPOINT = "final-checkpoint"  # under tune/: the final fit's state, every epoch
# Epochs a final fit in the time the search or the folds left (idle_fit) must hold, else the
# trial's own model is submitted: the fit re-warms to the trial's peak rate before annealing,
# which two epochs hardly undo. At --quick on 3,000 demo rows such a fit of 9 epochs from the
# warm start's weights read 0.8233 on the holdout where its trial read 0.7771 on validation.
IDLE_FIT_EPOCHS = 4


@dataclass(frozen=True)
class FinalContext:
    """What every step of the final stage reads."""

    opts: TuneOptions
    plan: TunePlan
    ds: Dataset
    splits: RunSplits
    budget: Budget
    tune_dir: Path
    study: object
    store: object = None


@dataclass(frozen=True)
class Submitted:
    """What a mode produced: the test probabilities, the trials behind them, the estimate."""

    test_probs: np.ndarray
    trials: list
    estimate: Estimate
    holdout_accuracy: float | None  # None when the holdout trained it
    fitted: FinalFitRecord | None = None
    mirror: tuple[bool, str] = (False, "")  # the mirror among the test-time views, and why
    folds: FoldsRecord | None = None  # the k-fold stage's record, where it ran


@dataclass(frozen=True)
class FinalPlan:
    """What the final fit trains (kept beside its checkpoint, so a rerun resumes that fit)."""

    trial: int
    flip: FlipDecision
    members: int = 1  # --final-members the fit started with (a resumed fit keeps it)


def final_stage(opts: TuneOptions, plan: TunePlan, ds: Dataset, study, budget: Budget) -> Path:
    """The study -> decisions -> test probabilities -> best.json and the submission."""
    from pipeline.tune.decide import decide
    from pipeline.tune.search import write_trials_table
    from pipeline.tune.splits import run_splits
    from pipeline.tune.store import open_store

    search_seconds = budget.elapsed()
    tune_dir = artifacts.tune_dir(opts.artifacts, ds.competition)
    frame = write_trials_table(study, tune_dir)
    ctx = FinalContext(opts, plan, ds, run_splits(ds, opts, plan), budget, tune_dir, study,
                       open_store(opts.artifact_store))  # fmt: skip
    fits = plan.final_fit and not opts.refit
    saved = resume_plan(tune_dir / CHECKPOINT) if fits else None
    x_val, y_val = ctx.splits.search[2], ctx.splits.search[3]
    decisions = decide(opts, fits, study, (x_val, y_val), ds.num_classes, tune_dir / "models",
                       ctx.store, saved.flip if saved else None)  # fmt: skip
    match = [t for t in decisions.ranked if saved and t.number == saved.trial]
    if match:  # the interrupted fit goes on with its own trial and mirror
        decisions = dataclasses.replace(decisions, trials=match, flip=saved.flip)
    elif fits:
        shutil.rmtree(tune_dir / CHECKPOINT, ignore_errors=True)  # another fit's: start afresh
        save_json(tune_dir / CHECKPOINT / "plan.json",
                  FinalPlan(decisions.trials[0].number, decisions.flip,
                            final_members(opts)))  # fmt: skip
    submitted = None
    if opts.final_members > 1 and not fits:
        instead = (
            "refits on every row"
            if opts.refit
            else "submits k-fold or the trials' models (a short fit in time they leave is one)"
        )
        log(f"final: --final-members {opts.final_members} splits a planned final fit; this run "
            f"plans none: it {instead}")  # fmt: skip
    if fits:
        members = saved.members if match else final_members(opts)
        submitted = by_final_fit(ctx, decisions, members=members)
    elif opts.refit:
        submitted = by_refit(ctx, decisions)
    elif plan.kfold:
        from pipeline.tune.kfold import by_kfold

        submitted = by_kfold(ctx, decisions, plan.kfold)
    if submitted is None and not fits and idle_fit(ctx, decisions, bool(plan.kfold)):
        shutil.rmtree(tune_dir / CHECKPOINT, ignore_errors=True)  # no other fit's state
        submitted = by_final_fit(
            ctx, decisions, min(IDLE_FIT_EPOCHS, opts.final_max_epochs or IDLE_FIT_EPOCHS)
        )
    submitted = submitted or by_trials(ctx, decisions)
    estimate = submitted.estimate.for_test(len(ctx.ds.x_test))
    submitted = dataclasses.replace(submitted, estimate=estimate)
    log(estimate_line(submitted))
    log(f"final: test-time views {'with' if submitted.mirror[0] else 'without'} the mirror "
        f"({submitted.mirror[1]})")  # fmt: skip
    path = write_outputs(ctx, decisions, submitted, search_seconds)
    from pipeline.tune.search import print_top

    print_top(frame)
    shutil.rmtree(tune_dir / CHECKPOINT, ignore_errors=True)  # written: nothing to resume
    return path


def final_members(opts: TuneOptions) -> int:
    """Members the final fit trains: ``--final-members``, one with a last stretch (it trains
    one model on)."""
    if opts.final_members > 1 and opts.last_stretch != "off":
        log(f"final: --last-stretch {opts.last_stretch} trains one model on: one final member, "
            f"not {opts.final_members}")  # fmt: skip
        return 1
    return opts.final_members


def idle_fit(ctx: FinalContext, d: Decisions, after_folds: bool) -> bool:
    """True when the time the search left should go to a final fit of the one chosen trial
    (by_final_fit: it needs two epochs, else the trial's own model is submitted): folds that do
    not fit leave their time to it (in the suite at 900 s, rgb32 and fer48 submitted their
    trials' models with 420 s of 900 unused), and so does a search that stops before its
    deadline (--quick on 6,000 demo rows left 38 s of 150 unused). Not with --refit, not with
    ``--final-fit off``; without folds, not after ``--trials N`` (the user ended the search,
    not the budget) nor where the validation rows chose an ensemble of several (the fit would
    train its first only)."""
    if ctx.opts.refit or ctx.opts.final_fit == "off":
        return False
    return after_folds or (len(d.trials) == 1 and ctx.opts.trials is None)


def estimate_line(s: Submitted) -> str:
    """The estimate, and what it is the estimate of."""
    stretch = s.fitted.stretch if s.fitted else None
    if stretch is not None:
        also = f" and {stretch.pseudo_rows} test images" if stretch.pseudo_rows else ""
        return (
            f"final: estimate of the final fit before its last stretch {s.estimate.text()}; "
            f"what is submitted then trained {stretch.epochs_run} epochs more on every "
            f"labelled row{also} (its own score cannot be measured: the holdout trained it)"
        )
    rows = s.fitted.member_train_rows if s.fitted else []
    if len(set(rows)) > 1:
        return (
            f"final: estimate of the first member {s.estimate.text()}; what is submitted also "
            f"averages {len(rows) - 1} member(s) trained on every labelled row (their own "
            "scores cannot be measured: the holdout trained them)"
        )
    return f"final: estimate of what is submitted {s.estimate.text()}" + (
        "" if s.estimate.scored_on != "validation"
        else " (not honest: --refit trained on the holdout)")  # fmt: skip


def by_final_fit(ctx: FinalContext, d: Decisions, least: int = 2,
                 members: int = 1) -> Submitted | None:  # fmt: skip
    """The chosen configuration trained on the whole training split (as ``members`` models
    averaged, tune/members.py); None when fewer than ``least`` epochs fit."""
    from pipeline.models import get_entry
    from pipeline.tune.members import combine, fit_members, predict_test
    from pipeline.tune.refit import FinalFitJob, final_fit, final_fit_classical

    best = d.trials[0]
    job = FinalFitJob(best.number, read_trial(best), d.flip, ctx.tune_dir, ctx.opts.seed,
                      ctx.opts.final_max_epochs, ctx.opts.tta, d.files[best.number][0],
                      ctx.opts.last_stretch, ctx.opts.ema, least, members=members)  # fmt: skip
    classical = get_entry(job.trial.model).classical  # fit once on the whole split, no epochs
    # the fit adds the mirror to a network's augmentation where the labels survive it
    mirror = test_mirror(d.flip, trained_with_mirror=d.flip.invariant and not classical)
    if members > 1 and not classical:
        fitted = fit_members(ctx, job, mirror[0])
        if not fitted:
            return None
        probs, record = combine(fitted, ctx.splits.holdout[3])
        estimate = Estimate.of(record.holdout_accuracy, record.holdout_rows, "holdout")
        return Submitted(probs, [best], estimate, record.holdout_accuracy, record, mirror)
    if classical:
        out = final_fit_classical(job, ctx.ds, ctx.splits.holdout, ctx.budget, mirror[0],
                                  len(ctx.splits.search[1]))  # fmt: skip
    else:
        out = final_fit(job, ctx.ds, ctx.splits.holdout, ctx.budget, ctx.store, ctx.study)
    if out is None:
        return None
    t0 = time.monotonic()
    fitted, probs = predict_test(ctx, out, mirror[0])
    estimate = Estimate.of(fitted.holdout_accuracy, fitted.holdout_rows, "holdout")
    if fitted.stretch_kept_s:
        probs, fitted = stretched(ctx, (out[0], fitted), probs, time.monotonic() - t0, mirror[0])
    return Submitted(probs, [best], estimate, fitted.holdout_accuracy, fitted, mirror)


def stretched(ctx: FinalContext, out: tuple, probs, predict_s: float, mirror: bool):
    """(test probabilities, record) after the final fit's last stretch (tune/stretch.py); the
    measured model's, as they were, when the stretch cannot run. The measured model's test
    probabilities are kept as ``test_proba_measured.npy``. ``out``: the final fit's (model,
    record); ``predict_s``: the seconds its test prediction took."""
    from pipeline.predict import predict_proba
    from pipeline.tune.budget import PREDICT_FIXED_S, PREDICT_MARGIN
    from pipeline.tune.refit import holdout_probs_path
    from pipeline.tune.stretch import run_stretch

    model, fitted = out
    np.save(ctx.tune_dir / "test_proba_measured.npy", probs)
    holdout = np.load(holdout_probs_path(fitted.model_path))
    reserve = predict_s * PREDICT_MARGIN + PREDICT_FIXED_S  # the test again, after the stretch
    out = run_stretch(model, fitted, ctx.opts.last_stretch, ctx.splits.holdout, ctx.ds.x_test,
                      (holdout, probs), ctx.budget, reserve, ctx.tune_dir / "models")  # fmt: skip
    if out is None:
        return probs, fitted
    model, record, path = out
    probs = predict_proba(model, ctx.ds.x_test, tta=ctx.opts.tta, flip=mirror)
    return probs, dataclasses.replace(fitted, stretch=record, model_path=str(path))


def by_refit(ctx: FinalContext, d: Decisions) -> Submitted | None:
    """The chosen configuration retrained on every labelled row; None without time."""
    from pipeline.models import get_entry
    from pipeline.predict import predict_proba
    from pipeline.tune.refit import refit_best

    best = d.trials[0]
    if get_entry(read_trial(best).model).classical:
        log("final: --refit trains networks only: the classical trial's own model is submitted")
        return None
    model = refit_best(ctx.ds, ctx.splits.holdout, best.number, read_trial(best), ctx.budget)
    if model is None:
        return None
    mirror = test_mirror(d.flip, trained_with_mirror(d.trials[:1]))
    probs = predict_proba(model, ctx.ds.x_test, tta=ctx.opts.tta, flip=mirror[0])
    estimate = Estimate.of(d.ensemble_scores.get(1, best.value), len(ctx.splits.search[3]),
                           "validation")  # fmt: skip
    return Submitted(probs, [best], estimate, None, mirror=mirror)


def by_trials(ctx: FinalContext, d: Decisions) -> Submitted:
    """The chosen trials' own models averaged, scored on the holdout."""
    from pipeline.predict import load_model, predict_proba

    models = [load_model(d.files[t.number][0]) for t in d.trials]
    opts, (x_ho, y_ho) = ctx.opts, ctx.splits.holdout[2:]
    mirror = test_mirror(d.flip, trained_with_mirror(d.trials))

    def average(x):
        return np.mean([predict_proba(m, x, tta=opts.tta, flip=mirror[0])
                        for m in models], axis=0)  # fmt: skip

    held = float((average(x_ho).argmax(1) == y_ho).mean())
    return Submitted(average(ctx.ds.x_test), d.trials, Estimate.of(held, len(y_ho), "holdout"),
                     held, mirror=mirror)  # fmt: skip


def trained_with_mirror(trials: list) -> bool:
    """True when every one of these trials trained with mirrored images."""
    from pipeline.training import augment_parts

    return all("flip" in augment_parts(read_trial(t).settings.augment) for t in trials)


def write_outputs(ctx: FinalContext, d: Decisions, s: Submitted, search_seconds: float) -> Path:
    """``test_proba.npy``, ``best.json``, ``config.json`` and the submission; returns its path."""
    from pipeline.submission import write_predictions

    first, record = s.trials[0], read_trial(s.trials[0])
    names = "+".join(read_trial(t).model or "?" for t in s.trials)
    label = f"tune-{names}" if len(s.trials) > 1 else f"tune-{names}-t{first.number}"
    label += "-full" if s.fitted else f"-{s.folds.k}fold" if s.folds else ""
    np.save(ctx.tune_dir / "test_proba.npy", s.test_probs)
    result = TuneResult(
        study=ctx.study.study_name, trial=first.number, ensemble=[t.number for t in s.trials],
        model=record.model, params=dict(first.params), hp=record.hp, settings=record.settings,
        holdout_accuracy=s.holdout_accuracy, best_trial_validation_accuracy=first.value,
        ensemble_validation_accuracy={str(k): v for k, v in d.ensemble_scores.items()},
        tta=ctx.opts.tta, final_fit=s.fitted,
        model_path=s.fitted.model_path if s.fitted else str(d.files[first.number][0]),
        model_paths=[str(d.files[t.number][0]) for t in s.trials],
        options=ctx.opts.to_dict(), flip=d.flip, honest=s.estimate.scored_on != "validation",
        search_seconds=round(search_seconds, 1),
        final_seconds=round(ctx.budget.elapsed() - search_seconds, 1), estimate=s.estimate,
        mirror_at_test=s.mirror[0], mirror_at_test_why=s.mirror[1], kfold=s.folds,
    )  # fmt: skip
    save_json(ctx.tune_dir / "best.json", result)
    ctx.opts.save(ctx.tune_dir / "config.json")
    meta = {"estimate": to_dict(s.estimate), "trials": result.ensemble, "study": result.study}
    if s.holdout_accuracy is not None:
        meta["holdout_accuracy"] = s.holdout_accuracy
    return write_predictions(ctx.ds, s.test_probs, label, meta, ctx.opts.submissions,
                             ctx.opts.submission)  # fmt: skip


def has_checkpoint(tune_dir: Path) -> bool:
    """True when a final fit was interrupted with its state saved (the rerun resumes it)."""
    return resume_plan(tune_dir / CHECKPOINT) is not None


def resume_plan(checkpoint: Path) -> FinalPlan | None:
    """The plan of an interrupted final fit whose state is saved, or None."""
    from pipeline.training import read_checkpoint

    try:
        saved = load_json(FinalPlan, checkpoint / "plan.json")
    except (OSError, ValueError, TypeError):
        return None
    return saved if read_checkpoint(checkpoint) is not None else None
