"""The search loop: trials until the budget, the trial count or the failures say stop, one
progress line per trial, only the top trials' models kept."""

from __future__ import annotations

from pipeline.models.classical import FIT_ONCE as CLASSICAL_RECIPE
from pipeline.records import read_trial
from pipeline.tune import log
from pipeline.tune.objective import Objective
from pipeline.tune.trials import MARGIN, is_warm_start, prune_saved_models, warm_start_trial

# Once PATIENCE trials have finished after the warm start and none beat it by more than the
# final pick's MARGIN (pipeline.tune.decide), the search stops and its remaining seconds go to
# the final fit.
PATIENCE = 5
MAX_FAILURES = 5  # trials failing in a row that stop the search (a broken machine or setting)
# A short budget cannot judge the search at all: when what is left of its share after the warm
# start cannot hold PATIENCE trials of half the warm start's time each (most trials are pruned
# part-way), the search stops there. At 900 s on 2 cores the warm start took 153 s of a 315 s
# share, three more trials took the rest, and the final fit got 8 epochs (0.9314 sealed).
JUDGED_FRACTION = 0.5


def run_search(study, objective: Objective, trials: int | None, keep: int, shrink: bool = False):
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
    progress = Progress(objective, keep, shrink)
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

    def __init__(self, objective: Objective, keep: int, shrink: bool = False):
        self.objective, self.keep, self.shrink = objective, keep, shrink

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
        if self.objective.failures >= MAX_FAILURES:
            log(f"stopping: {self.objective.failures} trials failed in a row")
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
