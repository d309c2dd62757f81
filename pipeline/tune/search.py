"""The search loop: trials until the budget, the trial count or the failures say stop, one
progress line per trial, only the top trials' models kept; and the study as a table."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from pipeline.fsutil import atomic_write_text
from pipeline.models.classical import FIT_ONCE as CLASSICAL_RECIPE
from pipeline.models.registry import trial_file
from pipeline.records import read_trial
from pipeline.tune import log
from pipeline.tune.decide import MARGIN, completed, is_warm_start, warm_start_trial
from pipeline.tune.objective import Objective, kept_files

# Once PATIENCE trials have finished after the warm start and none beat it by more than the
# final pick's MARGIN (pipeline.tune.decide), the search stops and its remaining seconds go to
# the final fit.
PATIENCE = 5
# A short budget cannot judge the search at all: when what is left of its share after the warm
# start cannot hold PATIENCE trials of half the warm start's time each (most trials are pruned
# part-way), the search stops there. At 900 s on 2 cores the warm start took 153 s of a 315 s
# share, three more trials took the rest, and the final fit got 8 epochs (0.9314 sealed).
JUDGED_FRACTION = 0.5


def run_search(
    study,
    objective: Objective,
    trials: int | None,
    max_failures: int,
    keep: int,
    shrink: bool = False,
):
    """``study.optimize`` over ``objective`` within its budget (starting from the warm-start
    configuration and the baseline when the study is new); with ``shrink``, stop when the
    search does not beat the warm start (see PATIENCE)."""
    from pipeline.search_space import baseline_params, warm_start_params

    if not study.get_trials(deepcopy=False):
        first = [warm_start_params(objective.models, objective.max_epochs,
                                   objective.plan.warm_start),
                 baseline_params(objective.models)]  # fmt: skip
        for params in filter(None, first):
            study.enqueue_trial(params, skip_if_exists=True)
    if objective.budget.search_left() <= 0:
        return
    progress = Progress(objective, max_failures, keep, shrink)
    study.optimize(
        objective,
        n_trials=trials,
        timeout=max(objective.budget.search_left(), 1),
        catch=(Exception,),
        callbacks=[progress],
        gc_after_trial=True,
    )


class Progress:
    """Optuna callback after each trial: its line, the kept models, and the stop rules."""

    def __init__(self, objective: Objective, max_failures: int, keep: int, shrink: bool = False):
        self.objective, self.max_failures, self.keep = objective, max_failures, keep
        self.shrink = shrink

    def __call__(self, study, trial) -> None:
        import optuna

        r = read_trial(trial)
        s = r.settings
        hp = ", ".join(f"{k}={v}" for k, v in r.hp.items() if "dropout" in k or k == "width")
        # a trial the budget refused never trained: it has no settings to show
        key = (
            f"{s.optimizer} lr={s.learning_rate:.2g} bs={s.batch_size} aug={s.augment}"
            + (f" {hp}" if hp else "")
            if s
            else "(not started)"
        )
        if s and s.optimizer == CLASSICAL_RECIPE.optimizer:  # scikit-learn: its own parameters
            key = "one fit " + ", ".join(f"{k}={v:.3g}" for k, v in r.hp.items())
        try:
            best = f"{study.best_value:.4f} (#{study.best_trial.number})"
        except ValueError:
            best = "-"
        done = trial.state == optuna.trial.TrialState.COMPLETE
        if done:
            m = r.metrics
            result = f"val_acc {trial.value:.4f} epochs {m.epochs_run} {m.seconds:.0f}s"
        else:
            result = f"{trial.state.name.lower()}: {r.reason or ''}"
        left = max(self.objective.budget.search_left(), 0)
        log(
            f"trial {trial.number:>3} {r.model or '?':<12} {key} | {result} | best {best}"
            f" | {left:.0f}s left"
        )
        if done:
            prune_saved_models(study, self.keep, self.objective.models_dir, self.objective.store)
        # once the budget refuses a sampled trial, TPE would only keep sampling refusals
        if self.objective.budget.search_left() < self.objective.cheapest_epoch() or r.refused:
            study.stop()
        if self.objective.failures >= self.max_failures:
            log(f"stopping: {self.objective.failures} trials failed in a row (--max-failures)")
            study.stop()
        if self.shrink and done and cannot_judge(trial, left):
            log(
                f"search: its remaining {left:.0f} s cannot hold the {PATIENCE} trials that would "
                f"judge it against the warm start ({m.seconds:.0f} s); they go to the final fit"
            )
            study.stop()
        elif self.shrink and not_earning(study):
            log(
                f"search: no trial beat the warm start by {MARGIN * 100:.1f} points in "
                f"{PATIENCE} trials; its remaining {left:.0f} s go to the final fit"
            )
            study.stop()


def cannot_judge(trial, left: float) -> bool:
    """True when ``trial`` is the completed warm start and the search's ``left`` seconds cannot
    hold PATIENCE trials of JUDGED_FRACTION of its time each."""
    m = read_trial(trial).metrics if is_warm_start(trial) else None
    return m is not None and left < PATIENCE * JUDGED_FRACTION * m.seconds


def not_earning(study) -> bool:
    """True when PATIENCE trials finished after the completed warm start and none beat it by
    more than MARGIN."""
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    trials = sorted(study.get_trials(deepcopy=False, states=states), key=lambda t: t.number)
    first = warm_start_trial(trials)
    if first is None:
        return False
    after = [t for t in trials if t.number > first.number and not read_trial(t).refused]
    return len(after) >= PATIENCE and study.best_value <= first.value + MARGIN


def prune_saved_models(study, keep: int, models_dir: Path, store=None) -> None:
    """Delete the saved models (and validation probabilities, and their artifacts) of completed
    trials outside the top ``keep``: a long study would otherwise fill the disk."""
    from pipeline.tune.store import remove

    for t in completed(study)[keep:]:
        r = read_trial(t)
        for path in {Path(r.model_path) if r.model_path else None,
                     Path(models_dir) / trial_file(t.number, r.model)} - {None}:  # fmt: skip
            for f in kept_files(path):
                f.unlink(missing_ok=True)
        for artifact in (r.model_artifact, r.validation_artifact, r.history_artifact):
            remove(store, artifact)


def write_trials_table(study, tune_dir: Path) -> pd.DataFrame:
    """``tune/trials.csv``: the study's comparison table (returned too)."""
    frame = trials_frame(study)
    Path(tune_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(tune_dir) / "trials.csv", frame.to_csv(index=False))
    return frame


def trials_frame(study) -> pd.DataFrame:
    """One row per trial: state, model, parameters, metrics, reason (the study's table)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        r = read_trial(t)
        m, s = r.metrics, r.settings
        seconds = m.seconds if m else None
        if seconds is None and t.datetime_complete and t.datetime_start:
            seconds = (t.datetime_complete - t.datetime_start).total_seconds()
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "model": r.model or t.params.get("model"),
                "params": json.dumps(dict(t.params), sort_keys=True),
                "val_accuracy": m.val_accuracy if m else None,
                "val_loss": m.val_loss if m else None,
                "train_accuracy": m.train_accuracy if m else None,
                "train_loss": m.train_loss if m else None,
                "epochs_run": m.epochs_run if m else (len(t.intermediate_values) or None),
                "seconds": seconds,
                "param_count": m.params if m else None,
                "optimizer": s.optimizer if s else None,
                "learning_rate": s.learning_rate if s else None,
                "batch_size": s.batch_size if s else None,
                "augment": s.augment if s else None,
                "reason": r.reason or "",
            }
        )
    return pd.DataFrame(rows)


def print_top(frame: pd.DataFrame) -> None:
    """The ten best completed trials, as the study's comparison table."""
    if frame.empty:
        return
    done = frame[frame["state"] == "COMPLETE"].sort_values("val_accuracy", ascending=False)
    if done.empty:
        return
    cols = [
        "number", "model", "val_accuracy", "val_loss", "train_accuracy", "epochs_run", "seconds",
        "optimizer", "learning_rate", "batch_size", "augment",
    ]  # fmt: skip
    print("\ntop trials:")
    print(done[cols].head(10).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(flush=True)
