"""The ``tune`` command: wire the budget, the plan, the study, the search and the final stage,
and print the run's opening line and the submission's path (the last line).

With trials in a worker process (the default), this process does not import TensorFlow before
the final stage: the worker measures the machine and trains the trials.
"""

from __future__ import annotations

from pipeline import artifacts, interrupt
from pipeline.errors import PipelineError
from pipeline.options import TuneOptions
from pipeline.tune import log
from pipeline.tune.budget import Budget, CostModel, TunePlan

# On a CPU, entries whose final fit could not reach this many epochs on all rows are left out.
# Measured at 900 s (40,000 rows): resnet9s after 8 epochs scored 0.9314 against 0.9225 for
# lenet5 after 31 and 0.9278 for lenet5_wide after 33; resnet9s after 4 epochs (300 s) 0.9168.
MIN_FINAL_EPOCHS = 6


def choose_models(
    opts: TuneOptions, plan: TunePlan, cost: CostModel, n_train: int, n_val: int, models,
    image_shape=(28, 28, 1), full_rows: tuple[int, int] | None = None,
) -> list[str]:  # fmt: skip
    """The searched entries: those that build for the data's shape; on a GPU those that take
    its settings (mixed precision); on a CPU ``--models`` as given, else the default space less
    the entries that cannot finish an epoch in a quarter of the search's share."""
    h, w, c = image_shape
    for m, reason in cost.problems.items():
        log(f"leaving out {m}: it cannot be built for {h}x{w}x{c} images ({reason})")
    models = [m for m in models if m not in cost.problems]
    share = (plan.timeout - plan.reserve) / 4
    if not opts.models:  # a classical fit runs on the CPU, on a GPU machine too
        fits = {m: cost.epoch_seconds(m, n_train, n_val) for m in models if m in cost.classical}
        for m in [m for m, s in fits.items() if s > share]:
            log(
                f"leaving out {m}: its fit on {n_train} rows would take ~{fits[m]:.0f} s, more "
                f"than a quarter of the search's {4 * share:.0f} s (--models to force)"
            )
            models.remove(m)
    if plan.device == "GPU":
        for m, reason in cost.gpu_problems.items():
            log(f"GPU: leaving out {m} ({reason})")
        return [m for m in models if m not in cost.gpu_problems]
    if opts.models:
        return list(models)
    slow = [m for m in models if cost.epoch_seconds(m, n_train, n_val) > share]
    if slow:
        log(
            f"CPU only: leaving out {', '.join(slow)} (one epoch would take more than "
            f"a quarter of the search's {4 * share:.0f} s; --models to force)"
        )
    models = [m for m in models if m not in slow]
    if plan.final_fit and full_rows:
        # a configuration the final fit cannot train for long on all rows is not worth a trial
        # on a slice: it would win there and lose in the final fit
        n_full, n_hold = full_rows
        heavy = [
            m for m in models
            if m in cost.macs  # a classical entry is not final-fitted: its trial is what it is
            and plan.reserve / cost.epoch_seconds(m, n_full, n_hold) < MIN_FINAL_EPOCHS
        ]  # fmt: skip
        if heavy and len(heavy) < len(models):
            log(
                f"CPU only: leaving out {', '.join(heavy)} (the final fit could not train "
                f"{MIN_FINAL_EPOCHS} epochs of it on all {n_full} training images in its "
                f"{plan.reserve:.0f} s; --models to force)"
            )
            models = [m for m in models if m not in heavy]
    return models


def open_study(opts: TuneOptions, plan: TunePlan, competition: str):
    """The run's study (created or resumed), refused when it was made for other data."""
    from pipeline.tune.study import (
        check_data,
        create_or_load_study,
        make_pruner,
        make_sampler,
        storage_url,
    )

    url = storage_url(opts.storage, artifacts.competition_dir(opts.artifacts, competition))
    study = create_or_load_study(url, opts.study or competition, make_sampler(opts.seed),
                                 make_pruner(opts.pruner, plan.max_epochs))  # fmt: skip
    check_data(study, url, {"competition": competition, "seed": opts.seed,
                            "limit": opts.limit, "search_rows": plan.search_rows})  # fmt: skip
    return study, url


def run(opts: TuneOptions) -> int:
    from pipeline.data import load
    from pipeline.tune.final import has_checkpoint

    budget = Budget.start(opts.timeout)
    interrupt.install()
    ds = load(opts)
    log(f"data {ds.layout.summary()}")
    tune_dir = artifacts.tune_dir(opts.artifacts, ds.competition)
    opts.save(tune_dir / "config.json")
    resume = has_checkpoint(tune_dir) and not opts.search_only
    if opts.final_only or resume:
        if resume:
            log("an interrupted final fit was found: going straight to the final stage")
        path = final_only(opts, ds, budget, resume)
    else:
        path = search_then_final(opts, ds, budget)
    if path is None:  # --search-only
        return 0
    log(f"done in {budget.elapsed():.0f} s")
    print(path)
    return 0


def final_only(opts: TuneOptions, ds, budget: Budget, resume: bool):
    """The final stage from the study as it stands (``--final-only``, or resuming a final fit
    that was interrupted: then every second left is the final stage's)."""
    from pipeline.device import configure_runtime
    from pipeline.tune.budget import make_plan
    from pipeline.tune.final import final_stage

    plan = make_plan(opts, len(ds.y_train), configure_runtime()["device"])
    study, _ = open_study(opts, plan, ds.competition)
    budget = budget.with_reserve(budget.left() if resume else plan.reserve)
    return final_stage(opts, plan, ds, study, budget)


def measure(opts: TuneOptions, ds, candidates: list[str], worker):
    """(runtime info, cost model): in the worker when there is one, so that this process does
    not load TensorFlow for the search."""
    from pipeline.tune.budget import measure_machine

    cache = artifacts.competition_dir(opts.artifacts, ds.competition) / "cost.json"
    if worker is not None:
        return worker.probe(candidates, cache)
    return measure_machine(ds, candidates, cache)


def search_then_final(opts: TuneOptions, ds, budget: Budget):
    """Measure the machine, plan, search, then the final stage (or, ``--search-only``, the
    trials table); returns the submission's path, or None."""
    from pipeline.device import describe
    from pipeline.models import get_entry
    from pipeline.search_space import DEFAULT_MODELS
    from pipeline.tune.worker import Worker

    for m in opts.models:
        get_entry(m)  # unknown names: one clear line
    candidates = list(opts.models or DEFAULT_MODELS)
    worker = Worker(opts) if opts.isolate == "process" else None
    try:
        runtime, cost = measure(opts, ds, candidates, worker)
        log(describe(runtime))
        study, objective = prepare_search(opts, ds, budget, runtime["device"], cost, candidates,
                                          worker)  # fmt: skip
        search(opts, study, objective)
    finally:
        if worker is not None:
            worker.close()
    if opts.search_only:
        from pipeline.tune.search import write_trials_table

        write_trials_table(study, artifacts.tune_dir(opts.artifacts, ds.competition))
        return None
    from pipeline.tune.final import final_stage

    return final_stage(opts, objective.plan, ds, study, objective.budget)


def prepare_search(opts, ds, budget, device: str, cost, candidates, worker):
    """(study, objective): the plan, the study, the searched entries, and the opening line."""
    from pipeline.tune.budget import folds_fit, make_plan
    from pipeline.tune.objective import Objective
    from pipeline.tune.splits import run_splits
    from pipeline.tune.store import open_store
    from pipeline.tune.study import masked

    plan = make_plan(opts, len(ds.y_train), device)
    n_labelled = min(opts.limit or len(ds.y_train), len(ds.y_train))
    plan = folds_fit(plan, opts, cost, n_labelled, plan.warm_start, len(ds.x_test))
    budget = budget.with_reserve(plan.reserve)
    study, url = open_study(opts, plan, ds.competition)
    splits = run_splits(ds, opts, plan)
    data, held = splits.search, splits.holdout
    models = choose_models(opts, plan, cost, len(data[1]), len(data[3]), candidates,
                           ds.image_shape, (len(held[1]), len(held[3])))  # fmt: skip
    if not models:
        raise PipelineError("no model fits the time budget; raise --timeout or pick --models")
    models_dir = artifacts.tune_dir(opts.artifacts, ds.competition) / "models"
    objective = Objective(ds, data, models, plan, budget, cost, models_dir, opts.seed,
                          open_store(opts.artifact_store), worker)  # fmt: skip
    n_done = len([t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"])
    log(
        f"study {study.study_name!r} in {masked(url)} ({n_done} completed trials), "
        f"{len(models)} architectures, {device}, budget {opts.timeout:.0f} s, "
        f"up to {plan.max_epochs} epochs per trial, pruner {opts.pruner}, "
        f"{len(data[0])} train / {len(data[2])} validation images per trial"
        + (
            f"; then {plan.reserve:.0f} s to train the best on all {len(held[0])}"
            if plan.final_fit
            else ""
        )  # fmt: skip
    )
    return study, objective


def search(opts: TuneOptions, study, objective) -> None:
    from pipeline.tune.search import run_search

    shrink = objective.plan.final_fit and not opts.search_only
    run_search(study, objective, opts.trials, opts.max_failures, objective.plan.keep, shrink)
