"""The ``tune`` command: wire the budget, the runner, the plan, the study, the search and the
final stage, and print the run's opening line and the submission's path (the last line).

With ``--isolate process`` (the default) this process never imports TensorFlow: the worker
(:mod:`pipeline.worker`) measures the machine, trains and predicts.
"""

from __future__ import annotations

import dataclasses

from pipeline import artifacts, interrupt
from pipeline.data import split as data_split
from pipeline.errors import PipelineError
from pipeline.options import TuneOptions
from pipeline.storage import masked, open_store
from pipeline.tune import log
from pipeline.tune.cost import Budget, MeasureTask
from pipeline.tune.final import FinalPlan, final_stage, resume_plan
from pipeline.tune.fit import CHECKPOINT
from pipeline.tune.objective import Objective
from pipeline.tune.plan import FULL_EPOCHS, KFOLD, choose_models, final_epochs, make_plan
from pipeline.tune.search import run_search
from pipeline.tune.study import check_data, fingerprint, open_study, study_rows
from pipeline.tune.trials import write_trials_table
from pipeline.worker import open_runner


def run(opts: TuneOptions) -> int:
    from pipeline.data import load

    budget = Budget.start(opts.timeout)
    interrupt.install()
    ds = load(opts)
    log(f"data {ds.layout.summary()}")
    tune_dir = artifacts.tune_dir(opts.artifacts, ds.competition)
    opts.save(tune_dir / "config.json")
    saved = None if opts.search_only else resume_plan(tune_dir / CHECKPOINT)
    runner = open_runner(opts, ds)
    try:
        if opts.final_only or saved:
            if saved:
                log("an interrupted final stage was found: going straight to it")
            path = final_only(opts, ds, budget, runner, saved)
        else:
            path = search_then_final(opts, ds, budget, runner)
    finally:
        runner.close()
    if path is None:  # --search-only
        return 0
    log(f"done in {budget.elapsed():.0f} s")
    print(path)
    return 0


def final_only(opts: TuneOptions, ds, budget: Budget, runner, saved: FinalPlan | None):
    """The final stage from the study as it stands (``--final-only``, or resuming a final stage
    that was interrupted: then every second left is the final stage's), on the trial rows the
    study was made with."""
    study, _ = open_study(opts, ds.competition, FULL_EPOCHS)
    plan = make_plan(opts, len(ds.y_train), None, len(ds.x_test), rows=study_rows(study))
    if saved is not None:  # the mode it started with
        plan = dataclasses.replace(plan, final=saved.final,
                                   kfold=KFOLD if saved.final == "folds" else 0)  # fmt: skip
    budget = budget.with_reserve(budget.left() if saved else plan.reserve)
    return final_stage(opts, plan, ds, study, budget, runner)


def search_then_final(opts: TuneOptions, ds, budget: Budget, runner):
    """Measure the machine, plan, search, then the final stage (or, ``--search-only``, the
    trials table); returns the submission's path, or None."""
    from pipeline.device import describe
    from pipeline.models import get_entry
    from pipeline.search_space import DEFAULT_MODELS

    for m in opts.models:
        get_entry(m)  # unknown names: one clear line
    candidates = tuple(opts.models or DEFAULT_MODELS)
    cache = artifacts.competition_dir(opts.artifacts, ds.competition) / "cost.json"
    runtime, cost = runner.run(MeasureTask(candidates, str(cache)))
    runner.cost = cost  # the worker is replaced before a fit that would pass its memory limit
    log(describe(runtime))
    study, objective = prepare_search(opts, ds, budget, (runtime, cost), candidates, runner)
    shrink = objective.plan.final_fit and not opts.search_only
    run_search(study, objective, opts.trials, objective.plan.keep, shrink)
    if opts.search_only:
        write_trials_table(study, artifacts.tune_dir(opts.artifacts, ds.competition))
        return None
    return final_stage(opts, objective.plan, ds, study, objective.budget, runner)


def prepare_search(opts, ds, budget, measured: tuple, candidates, runner):
    """(study, objective): the plan, the study, the searched entries, and the opening line."""
    runtime, cost = measured
    plan = make_plan(opts, len(ds.y_train), cost, len(ds.x_test))
    budget = budget.with_reserve(plan.reserve)
    study, url = open_study(opts, ds.competition, plan.max_epochs)
    check_data(study, url, fingerprint(opts, ds.competition, plan.search_rows))
    splits = data_split.run_splits(ds, opts, plan.search_rows)
    data, held = splits.search, splits.holdout
    models = choose_models(opts, plan, cost, (len(data[1]), len(data[3])), candidates,
                           (len(held[1]), len(held[3])))  # fmt: skip
    if not models:
        raise PipelineError("no model fits the time budget; raise --timeout or pick --models")
    models_dir = artifacts.tune_dir(opts.artifacts, ds.competition) / "models"
    objective = Objective(data, models, plan, budget, cost, models_dir, opts.seed, runner,
                          open_store(opts.artifact_store))  # fmt: skip
    n_done = len([t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"])
    then = ""
    if plan.final_fit and not opts.search_only:
        epochs = final_epochs(plan, cost, plan.warm_start, len(held[1]), len(held[3]),
                              len(ds.x_test))  # fmt: skip
        then = (f"; then {plan.reserve:.0f} s to train the best on all {len(held[0])} "
                f"(~{epochs} epochs of {plan.warm_start} by the cost model; the fit re-plans at "
                "its trial's pace)")  # fmt: skip
    elif plan.kfold and not opts.search_only:
        then = f"; then {plan.reserve:.0f} s for {plan.kfold} folds of every labelled row"
    log(
        f"study {study.study_name!r} in {masked(url)} ({n_done} completed trials), "
        f"{len(models)} architectures, {runtime['device']}, budget {opts.timeout:.0f} s, "
        f"up to {plan.max_epochs} epochs per trial, pruner {opts.pruner}, "
        f"{len(data[0])} train / {len(data[2])} validation images per trial{then}"
    )
    return study, objective
