"""Every decision of the final stage, in one place, and none of them on the holdout.

What the final stage trains or averages is decided here from the study and the trials' own
validation rows (:attr:`pipeline.data.split.RunSplits.search`): which trial's configuration
(the warm start unless a trial beats it by :data:`~pipeline.tune.trials.MARGIN`), which trials
average into an ensemble (``--ensemble``), and whether the left-right mirror joins training and
prediction (:mod:`pipeline.tune.flip`). The functions here are never given the holdout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError
from pipeline.records import FlipDecision, read_trial
from pipeline.tune import log
from pipeline.tune.flip import FlipTask, forced
from pipeline.tune.trials import MARGIN, completed, trial_files, warm_start_trial

ENSEMBLE_AUTO_MAX = 3  # --ensemble auto: the best k <= this


@dataclass(frozen=True)
class Decisions:
    """What the final stage uses: ``trials`` best first (a fit trains ``trials[0]``'s
    configuration; without one they are averaged), their kept files, the validation accuracy
    of each top-k average, and the mirror."""

    trials: list
    files: dict[int, tuple[Path, Path | None]]
    ensemble_scores: dict[int, float]
    flip: FlipDecision
    ranked: list = field(default_factory=list)  # every candidate with a kept model, best first


def final_pick(ranked: list) -> list:
    """``ranked`` (completed trials, best first) with the warm start moved to the front unless
    the best trial beats it by more than MARGIN: the configuration the final fit trains."""
    warm = warm_start_trial(ranked)
    if warm is None or not ranked or ranked[0].value > warm.value + MARGIN:
        return ranked
    return [warm] + [t for t in ranked if t.number != warm.number]


def rank(study, fits: bool) -> list:
    """The candidates, best first: with a final fit the warm start leads unless beaten by the
    margin."""
    ranked = completed(study)
    if fits and ranked:
        picked = final_pick(ranked)
        if picked[0] is not ranked[0]:
            log(
                f"final: keeping the warm start (trial {picked[0].number}, "
                f"{picked[0].value:.4f}): the best trial ({ranked[0].number}, "
                f"{ranked[0].value:.4f}) does not beat it by {MARGIN * 100:.1f} points, the lead "
                "a slice score needs to hold in the final fit"
            )
        ranked = picked
    return ranked


def with_models(ranked: list, wanted: int, models_dir: Path, store=None):
    """(the first ``wanted`` candidates that kept a model, {number: (model, probabilities)})."""
    files, kept = {}, []
    for t in ranked:
        if len(kept) >= max(wanted, 1):
            break
        r = read_trial(t)
        if not (r.model_path or r.model_artifact):
            continue
        model_file, probs_file = trial_files(t, models_dir, store)
        if model_file is not None:
            files[t.number] = (model_file, probs_file)
            kept.append(t)
    return kept, files


def choose_ensemble(trials: list, files: dict, requested: int | str, y_val: np.ndarray):
    """(chosen trials, {k: validation accuracy of the top-k average}) from the probabilities
    each trial kept on the validation rows; ``auto``: k <= 3 by :func:`auto_k`."""
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
    k = auto_k(probs[: len(scores)], y_val) if requested == "auto" else len(candidates)
    return candidates[:k], scores


def auto_k(probs: list, y_val: np.ndarray) -> int:
    """The top-k average to use: a larger k only where it is right on more validation rows than
    the k chosen so far by more than the square root of the rows where the two disagree on
    being right (one standard error of their paired difference). At --quick a 1-epoch lenet5
    (0.62) joined a 0.88 lenet5_wide on a gain of 6 rows of 2,400 and kept the run from its
    final fit."""
    if not probs:
        return 1
    right = [(np.mean(probs[:k], axis=0).argmax(1) == y_val) for k in range(1, len(probs) + 1)]
    best = 0
    for k in range(1, len(right)):
        gained = int(np.sum(right[k] & ~right[best]))
        lost = int(np.sum(~right[k] & right[best]))
        if gained - lost > np.sqrt(gained + lost):
            best = k
    return best + 1


def flip_decision(flag: str, model_path: Path, runner, search_rows: int | None) -> FlipDecision:
    """``--flip on/off``, or measured with the chosen trial's model on the validation rows."""
    if flag != "auto":
        return forced(flag)
    decision = runner.run(FlipTask(str(model_path), search_rows))
    log(
        f"final: left-right mirror {'keeps' if decision.invariant else 'changes'} the labels "
        f"(the chosen trial's model: {decision.accuracy_plain:.4f} plain, "
        f"{decision.accuracy_mirrored:.4f} mirrored on {decision.rows} validation images); "
        + (
            "the mirror may join training and the test-time views"
            if decision.invariant
            else "no mirror"
        )  # fmt: skip
    )
    return decision


def test_mirror(flip: FlipDecision, trained_with_mirror: bool) -> tuple[bool, str]:
    """(the mirror among the test-time views, why). Measured on a 32x32x3 competition (10,000
    rows): trial models that never saw a mirrored image, averaged over plain and mirrored views,
    scored 0.819 on the test labels against 0.862 plain (mirrored alone: 0.61 against 0.87). So
    a model is mirrored at test time when it trained with the mirror, or when the average of its
    plain and mirrored predictions beat plain on the validation rows."""
    if flip.how != "measured":
        return flip.invariant, flip.how
    if not flip.invariant:
        return False, "the mirror changes the labels"
    if trained_with_mirror:
        return True, "the model trained with mirrored images"
    better = flip.accuracy_averaged > flip.accuracy_plain
    return better, (
        f"trained without mirrored images; plain and mirrored averaged "
        f"{flip.accuracy_averaged:.4f} {'>' if better else '<='} plain {flip.accuracy_plain:.4f} "
        f"on {flip.rows} validation rows"
    )


def decide(opts, fits: bool, study, y_val: np.ndarray, models_dir: Path, runner,
           search_rows: int | None, store=None, flip: FlipDecision | None = None):  # fmt: skip
    """The final stage's decisions from the study and the validation labels ``y_val`` (the
    mirror is measured by the runner on the same rows); ``flip``: a decision already taken (a
    resumed fit keeps its own)."""
    wanted = ENSEMBLE_AUTO_MAX if opts.ensemble == "auto" else int(opts.ensemble)
    kept, files = with_models(rank(study, fits), wanted, models_dir, store)
    if not kept:
        raise PipelineError(
            f"study {study.study_name!r} has no completed trial with a saved model; run "
            "./run.sh tune with a larger --timeout"
        )
    chosen, scores = choose_ensemble(kept, files, opts.ensemble, y_val)
    using = f"using k={len(chosen)}"
    if fits:  # it trains one configuration; the average is its fallback
        using = f"trial {chosen[0].number}'s configuration is trained ({using} if it cannot be)"
    log(
        "final: validation accuracy of the top-k ensembles: "
        + ", ".join(f"k={i}: {s:.4f}" for i, s in scores.items())
        + f"; {using}"
    )
    if flip is None:
        flip = flip_decision(opts.flip, files[chosen[0].number][0], runner, search_rows)
    return Decisions(chosen, files, scores, flip, kept)
