"""The final stage: from the study's best trial(s) to the submission.

Chooses the ensemble of the top trials from their kept holdout probabilities (``--ensemble``),
then predicts the test set with the final fit (on a CPU, where trials saw a slice), the refit
(``--refit``) or the trials' own models, and writes ``best.json``, ``trials.csv``,
``test_proba.npy`` and the submission.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline import artifacts
from pipeline.data import Dataset, holdout, search_split
from pipeline.errors import PipelineError
from pipeline.fsutil import atomic_write_text
from pipeline.options import TuneOptions
from pipeline.records import FlipDecision, TuneResult, load_json, read_trial, save_json
from pipeline.tune import log
from pipeline.tune.budget import Budget, TunePlan
from pipeline.tune.objective import trial_files
from pipeline.tune.search import MARGIN, completed, final_pick, print_top, trials_frame
from pipeline.tune.store import open_store

ENSEMBLE_AUTO_MAX = 3
CHECKPOINT = "final-checkpoint"  # under tune/: the final fit's state, every epoch


def choose_ensemble(trials: list, files: dict, requested: int | str, y_val: np.ndarray):
    """(chosen trials, {k: validation accuracy of the top-k average}) from the probabilities
    each trial kept (``files``: trial number -> (model, probabilities) paths); ``auto`` takes
    the best k <= 3, the smallest on ties."""
    candidates = trials[: (ENSEMBLE_AUTO_MAX if requested == "auto" else int(requested))]
    probs = []
    for t in candidates:
        f = files[t.number][1]
        probs.append(np.load(f) if f is not None and f.exists() else None)
    scores: dict[int, float] = {}
    for k in range(1, len(candidates) + 1):
        if any(p is None or len(p) != len(y_val) for p in probs[:k]):
            break
        mean = np.mean(probs[:k], axis=0)
        scores[k] = float((mean.argmax(1) == y_val).mean())
    if requested == "auto":
        k = max(scores, key=lambda i: (scores[i], -i)) if scores else 1
    else:
        k = len(candidates)
    return candidates[:k], scores


def flip_decision(opts: TuneOptions, model_path: Path, x_val, y_val, k: int) -> FlipDecision:
    """``--flip on/off``, or measured with the chosen trial's model on the trials' validation
    images (see :mod:`pipeline.tune.flip`)."""
    from pipeline.predict import load_model
    from pipeline.tune.flip import decide_flip, forced

    if opts.flip != "auto":
        return forced(opts.flip)
    decision = decide_flip(load_model(Path(model_path)), x_val, y_val, k)
    log(
        f"final: left-right mirror {'keeps' if decision.invariant else 'changes'} the labels "
        f"(the chosen trial's model: {decision.accuracy_plain:.4f} plain, "
        f"{decision.accuracy_mirrored:.4f} mirrored on {decision.rows} validation images); "
        f"{'mirror in training and at test time' if decision.invariant else 'no mirror'}"
    )
    return decision


def final_stage(opts: TuneOptions, plan: TunePlan, ds: Dataset, study, budget: Budget) -> Path:
    """Best trial(s) -> test probabilities -> submission, best.json, trials.csv.

    Every choice (trials, ensemble, mirror) is made on the trials' validation images; the
    holdout only scores what is submitted."""
    from pipeline.predict import load_model, predict_proba
    from pipeline.submission import write_predictions
    from pipeline.tune.refit import final_fit, refit_best

    search_seconds = budget.elapsed()
    tune_dir = artifacts.tune_dir(opts.artifacts, ds.competition)
    tune_dir.mkdir(parents=True, exist_ok=True)
    frame = trials_frame(study)
    atomic_write_text(tune_dir / "trials.csv", frame.to_csv(index=False))
    store = open_store(opts.artifact_store)
    models_dir = tune_dir / "models"
    wanted = ENSEMBLE_AUTO_MAX if opts.ensemble == "auto" else int(opts.ensemble)
    files, done = {}, []
    ranked = completed(study)  # best first; models come from disk or the artifact store
    if plan.final_fit and not opts.refit and opts.final_trial is None and ranked:
        picked = final_pick(ranked)
        if picked[0] is not ranked[0]:
            log(
                f"final: keeping the warm start (trial {picked[0].number}, "
                f"{picked[0].value:.4f}): the best trial ({ranked[0].number}, "
                f"{ranked[0].value:.4f}) does not beat it by {MARGIN * 100:.1f} points, the lead "
                "a slice score needs to hold in the final fit"
            )
        ranked = picked
    if opts.final_trial is not None:
        ranked = [t for t in ranked if t.number == opts.final_trial]
        if not ranked:
            raise PipelineError(
                f"--final-trial {opts.final_trial}: no completed trial of that number in study "
                f"{study.study_name!r}"
            )
    for t in ranked:
        if len(done) >= max(wanted, 1):
            break
        r = read_trial(t)
        if not (r.model_path or r.model_artifact):
            continue
        model_file, probs_file = trial_files(t, models_dir, store)
        if model_file is not None:
            files[t.number] = (model_file, probs_file)
            done.append(t)
    if not done:
        raise PipelineError(
            f"study {study.study_name!r} has no completed trial with a saved model; run "
            "./run.sh tune with a larger --timeout"
        )
    split = holdout(ds, opts.seed, opts.limit)
    _, _, x_sv, y_sv = search_split(split, plan.search_rows, opts.seed)
    chosen, trial_scores = choose_ensemble(done, files, opts.ensemble, y_sv)
    log(
        "final: validation accuracy of the top-k ensembles: "
        + ", ".join(f"k={i}: {s:.4f}" for i, s in trial_scores.items())
        + f"; using k={len(chosen)}"
    )
    checkpoint = tune_dir / CHECKPOINT
    resumed = resume_plan(checkpoint, done) if plan.final_fit and not opts.refit else None
    if resumed is not None:
        chosen, flip = resumed
    best = read_trial(chosen[0])
    if resumed is None:
        flip = flip_decision(opts, files[chosen[0].number][0], x_sv, y_sv, ds.num_classes)
        if plan.final_fit and not opts.refit:
            shutil.rmtree(checkpoint, ignore_errors=True)  # another fit's state: start afresh
            save_json(checkpoint / "plan.json", FinalPlan(chosen[0].number, flip))
    x_va, y_va = split[2], split[3]
    fitted, model, honest = None, None, True
    if plan.final_fit and not opts.refit:
        out = final_fit(ds, split, chosen[0].number, best, budget, opts.final_max_epochs,
                        opts.tta, flip, opts.seed, tune_dir, checkpoint, store, study,
                        init=files[chosen[0].number][0])  # fmt: skip
        if out is not None:
            model, fitted = out
            chosen = chosen[:1]
    if model is None and opts.refit:
        model = refit_best(ds, split, chosen[0].number, best, budget)
        if model is not None:
            chosen, honest = chosen[:1], False  # the holdout is in its training rows
    models = [model] if model is not None else [load_model(files[t.number][0]) for t in chosen]
    test_probs = np.mean(
        [predict_proba(m, ds.x_test, tta=opts.tta, flip=flip.invariant) for m in models], axis=0
    )
    if fitted is not None:
        holdout_acc = fitted.holdout_accuracy
    elif honest:
        held = np.mean([predict_proba(m, x_va, tta=opts.tta, flip=flip.invariant)
                        for m in models], axis=0)  # fmt: skip
        holdout_acc = float((held.argmax(1) == y_va).mean())
    else:
        holdout_acc = trial_scores.get(len(chosen), chosen[0].value)
    log(
        f"final: holdout accuracy of what is submitted {holdout_acc:.4f} on {len(y_va)} rows "
        + ("that chose nothing" if honest else "(not honest: --refit trained on them)")
    )
    k = len(chosen)
    names = "+".join(read_trial(t).model or "?" for t in chosen)
    label = f"tune-{names}" if k > 1 else f"tune-{names}-t{chosen[0].number}"
    if fitted:
        label += "-full"
    np.save(tune_dir / "test_proba.npy", test_probs)
    result = TuneResult(
        study=study.study_name,
        trial=chosen[0].number,
        ensemble=[t.number for t in chosen],
        model=best.model,
        params=dict(chosen[0].params),
        hp=best.hp,
        settings=best.settings,
        holdout_accuracy=holdout_acc,
        best_trial_holdout_accuracy=chosen[0].value,
        ensemble_holdout_accuracy={str(i): s for i, s in trial_scores.items()},
        tta=opts.tta,
        final_fit=fitted,
        model_path=fitted.model_path if fitted else str(files[chosen[0].number][0]),
        model_paths=[str(files[t.number][0]) for t in chosen],
        options=opts.to_dict(),
        flip=flip,
        honest=honest,
        search_seconds=round(search_seconds, 1),
        final_seconds=round(budget.elapsed() - search_seconds, 1),
    )
    save_json(tune_dir / "best.json", result)
    opts.save(tune_dir / "config.json")
    print_top(frame)
    meta = {"holdout_accuracy": holdout_acc, "trials": result.ensemble, "study": study.study_name}
    path = write_predictions(ds, test_probs, label, meta, opts.submissions, opts.submission)
    shutil.rmtree(checkpoint, ignore_errors=True)  # the submission is written: nothing to resume
    return path


@dataclass(frozen=True)
class FinalPlan:
    """What the final fit trains (kept beside its checkpoint, so a rerun resumes that fit)."""

    trial: int
    flip: FlipDecision


def has_checkpoint(tune_dir: Path) -> bool:
    """True when a final fit was interrupted with its state saved (the rerun resumes it)."""
    from pipeline.training import read_checkpoint

    return (tune_dir / CHECKPOINT / "plan.json").is_file() and read_checkpoint(
        tune_dir / CHECKPOINT
    ) is not None


def resume_plan(checkpoint: Path, trials: list):
    """(chosen trials, flip decision) of an interrupted final fit, or None."""
    from pipeline.training import read_checkpoint

    try:
        saved = load_json(FinalPlan, checkpoint / "plan.json")
    except (OSError, ValueError, TypeError):
        return None
    match = [t for t in trials if t.number == saved.trial]
    if not match or read_checkpoint(checkpoint) is None:
        return None
    return match, saved.flip
