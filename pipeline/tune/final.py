"""The final stage: from the study to the submission, as a short sequence of named steps.

1. :func:`pipeline.tune.decide.decide`: the trial(s), the ensemble and the mirror, decided on
   the trials' validation rows only.
2. The plan's mode makes the test probabilities and the estimate (:mod:`pipeline.tune.modes`,
   :mod:`pipeline.tune.kfold`): a final fit, k folds, or the trials' own models; a fit or folds
   that cannot run fall back to the next (folds -> a final fit in their time -> the trials).
3. :func:`write_outputs`: ``best.json``, ``trials.csv``, ``test_proba.npy``, the submission.

The stage's plan (trial, mirror, mode) is saved beside its fits' checkpoints
(``tune/final-checkpoint/``): a rerun after an interruption goes on with the same plan.
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline import artifacts
from pipeline.data import split as data_split
from pipeline.records import FlipDecision, TuneResult, load_json, read_trial, save_json, to_dict
from pipeline.storage import open_store
from pipeline.tune import log
from pipeline.tune.decide import Decisions, decide
from pipeline.tune.fit import CHECKPOINT
from pipeline.tune.kfold import by_kfold
from pipeline.tune.modes import (
    IDLE_FIT_EPOCHS,
    FinalContext,
    Submitted,
    by_final_fit,
    by_trials,
    idle_fit,
)
from pipeline.tune.trials import print_top, write_trials_table


@dataclass(frozen=True)
class FinalPlan:
    """What the final stage trains (kept beside its checkpoints, so a rerun resumes it)."""

    trial: int
    flip: FlipDecision
    final: str = "fit"  # the plan's mode when it started


def final_stage(opts, plan, ds, study, budget, runner) -> Path:
    """The study -> decisions -> test probabilities -> best.json and the submission."""
    search_seconds = budget.elapsed()
    tune_dir = artifacts.tune_dir(opts.artifacts, ds.competition)
    frame = write_trials_table(study, tune_dir)
    splits = data_split.run_splits(ds, opts, plan.search_rows)
    ctx = FinalContext(opts, plan, ds, splits, budget, tune_dir, study, runner,
                       open_store(opts.artifact_store))  # fmt: skip
    saved = resume_plan(tune_dir / CHECKPOINT)
    if saved is not None and saved.final != plan.final:
        saved = None
    d = decide(opts, plan.final_fit, study, splits.search[3], tune_dir / "models", runner,
               plan.search_rows, ctx.store, saved.flip if saved else None)  # fmt: skip
    match = [t for t in d.ranked if saved and t.number == saved.trial]
    if match:  # the interrupted stage goes on with its own trial and mirror
        d = dataclasses.replace(d, trials=match + [t for t in d.trials if t not in match])
    else:
        shutil.rmtree(tune_dir / CHECKPOINT, ignore_errors=True)  # another stage's: afresh
        save_json(tune_dir / CHECKPOINT / "plan.json",
                  FinalPlan(d.trials[0].number, d.flip, plan.final))  # fmt: skip
    submitted = submit(ctx, d)
    estimate = submitted.estimate.for_test(len(ds.x_test))
    submitted = dataclasses.replace(submitted, estimate=estimate)
    log(f"final: estimate of what is submitted {estimate.text()}")
    log(f"final: test-time views {'with' if submitted.mirror[0] else 'without'} the mirror "
        f"({submitted.mirror[1]})")  # fmt: skip
    path = write_outputs(ctx, d, submitted, search_seconds)
    print_top(frame)
    shutil.rmtree(tune_dir / CHECKPOINT, ignore_errors=True)  # written: nothing to resume
    return path


def submit(ctx: FinalContext, d: Decisions) -> Submitted:
    """The plan's mode, and its fallbacks: folds that cannot run leave their time to a final
    fit (so does a search that stopped early); anything that cannot run, to the trials'
    models."""
    submitted = None
    if ctx.plan.final == "fit":
        submitted = by_final_fit(ctx, d)
    elif ctx.plan.final == "folds":
        submitted = by_kfold(ctx, d, ctx.plan.kfold)
    if submitted is None and ctx.plan.final != "fit" and idle_fit(ctx, d, bool(ctx.plan.kfold)):
        least = min(IDLE_FIT_EPOCHS, ctx.opts.final_max_epochs or IDLE_FIT_EPOCHS)
        submitted = by_final_fit(ctx, d, least)
    return submitted or by_trials(ctx, d)


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


def resume_plan(checkpoint: Path) -> FinalPlan | None:
    """The plan of an interrupted final stage with a fit's state saved, or None."""
    try:
        saved = load_json(FinalPlan, checkpoint / "plan.json")
    except (OSError, ValueError, TypeError):
        return None
    states = [*checkpoint.glob("*/state.json"), *checkpoint.glob("*/done/record.json")]
    return saved if states else None
