"""The ``tune`` command: wire the budget, the plan, the study, the search and the final stage,
and print the run's opening line and the submission's path (the last line)."""

from __future__ import annotations

import time

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
    image_shape=(28, 28, 1), num_classes: int = 10, full_rows: tuple[int, int] | None = None,
) -> list[str]:  # fmt: skip
    """The searched entries: those that build for the data's shape; on a GPU those that take
    its settings (mixed precision); on a CPU ``--models`` as given, else the default space less
    the entries that cannot finish an epoch in a quarter of the search's share."""
    h, w, c = image_shape
    for m, reason in cost.problems.items():
        log(f"leaving out {m}: it cannot be built for {h}x{w}x{c} images ({reason})")
    models = [m for m in models if m not in cost.problems]
    if plan.device == "GPU":
        from pipeline.device import gpu_problem

        kept = []
        for m in models:
            reason = gpu_problem(m, image_shape, num_classes)
            if reason:
                log(f"GPU: leaving out {m} ({reason})")
            else:
                kept.append(m)
        return kept
    if opts.models:
        return list(models)
    share = (plan.timeout - plan.reserve) / 4
    slow = [m for m in models if cost.epoch_seconds(m, n_train, n_val) > share]
    if slow:
        log(
            f"CPU only: leaving out {', '.join(slow)} (one epoch would take more than "
            f"a quarter of the {plan.timeout:.0f} s budget; --models to force)"
        )
    models = [m for m in models if m not in slow]
    if plan.final_fit and full_rows:
        # a configuration the final fit cannot train for long on all rows is not worth a trial
        # on a slice: it would win there and lose in the final fit
        n_full, n_hold = full_rows
        heavy = [
            m for m in models
            if plan.reserve / cost.epoch_seconds(m, n_full, n_hold) < MIN_FINAL_EPOCHS
        ]  # fmt: skip
        if heavy and len(heavy) < len(models):
            log(
                f"CPU only: leaving out {', '.join(heavy)} (the final fit could not train "
                f"{MIN_FINAL_EPOCHS} epochs of it on all {n_full} training images in its "
                f"{plan.reserve:.0f} s; --models to force)"
            )
            models = [m for m in models if m not in heavy]
    return models


def run(opts: TuneOptions) -> int:
    from pipeline.data import holdout, load, search_split
    from pipeline.device import configure_runtime
    from pipeline.models import get_entry
    from pipeline.search_space import DEFAULT_MODELS
    from pipeline.tune.budget import cost_model, make_plan
    from pipeline.tune.final import final_stage, has_checkpoint
    from pipeline.tune.objective import Objective
    from pipeline.tune.search import print_top, run_search, trials_frame
    from pipeline.tune.store import open_store
    from pipeline.tune.study import (
        check_data,
        create_or_load_study,
        make_pruner,
        make_sampler,
        masked,
        storage_url,
    )

    budget = Budget.start(opts.timeout)
    interrupt.install()
    device = configure_runtime()["device"]
    ds = load(opts)
    plan = make_plan(opts, len(ds.y_train), device)
    budget = budget.with_reserve(plan.reserve)
    comp_dir = artifacts.competition_dir(opts.artifacts, ds.competition)
    tune_dir = artifacts.tune_dir(opts.artifacts, ds.competition)
    url = storage_url(opts.storage, comp_dir)
    name = opts.study or ds.competition
    study = create_or_load_study(
        url, name, make_sampler(opts.seed), make_pruner(opts.pruner, plan.max_epochs)
    )
    check_data(study, url, {"competition": ds.competition, "seed": opts.seed,
                            "limit": opts.limit, "search_rows": plan.search_rows})  # fmt: skip
    opts.save(tune_dir / "config.json")
    if opts.final_only:
        print(final_stage(opts, plan, ds, study, budget))
        return 0
    if has_checkpoint(tune_dir) and not opts.search_only:
        log("an interrupted final fit was found: going straight to the final stage")
        path = final_stage(opts, plan, ds, study, budget.with_reserve(budget.left()))
        log(f"done in {budget.elapsed():.0f} s")
        print(path)
        return 0

    for m in opts.models:
        get_entry(m)  # unknown names: one clear line
    split = holdout(ds, opts.seed, opts.limit)
    data = search_split(split, plan.search_rows, opts.seed)
    candidates = list(opts.models or DEFAULT_MODELS)
    cost = cost_model(ds, candidates, comp_dir / "cost.json")
    full = (len(split[1]), len(split[3]))
    models = choose_models(opts, plan, cost, len(data[1]), len(data[3]), candidates,
                           ds.image_shape, ds.num_classes, full)  # fmt: skip
    if not models:
        raise PipelineError("no model fits the time budget; raise --timeout or pick --models")
    worker = None
    if opts.isolate == "process":
        from pipeline.data import resolve_data_dir
        from pipeline.tune.worker import Setup, Worker

        worker = Worker(Setup(
            data_dir=str(resolve_data_dir(opts.data, opts.competition)),
            cache_dir=str(opts.artifacts / "cache"), competition=opts.competition,
            image_shape=opts.image_shape, channels_first=opts.channels_first, seed=opts.seed,
            limit=opts.limit, search_rows=plan.search_rows, storage=url, study=name,
            pruner=opts.pruner, max_epochs=plan.max_epochs,
            models_dir=str(tune_dir / "models"), artifact_store=opts.artifact_store,
            debug=opts.debug,
        ))  # fmt: skip
    objective = Objective(ds, data, models, plan.max_epochs, budget, cost, tune_dir / "models",
                          opts.seed, open_store(opts.artifact_store), worker)  # fmt: skip
    n_done = len([t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"])
    log(
        f"study {name!r} in {masked(url)} ({n_done} completed trials), "
        f"{len(models)} architectures, {device}, budget {opts.timeout:.0f} s, "
        f"up to {plan.max_epochs} epochs per trial, "
        f"pruner {opts.pruner}, {len(data[0])} train / {len(data[2])} holdout images per trial"
        + (
            f"; then {plan.reserve:.0f} s to train the best on all {len(split[0])}"
            if plan.final_fit
            else ""
        )
    )
    shrink = plan.final_fit and not opts.search_only
    try:
        run_search(study, objective, opts.trials, opts.max_failures, plan.keep, shrink)
    finally:
        if worker is not None:
            worker.close()
    if opts.search_only:
        frame = trials_frame(study)
        from pipeline.fsutil import atomic_write_text

        atomic_write_text(tune_dir / "trials.csv", frame.to_csv(index=False))
        print_top(frame)
        return 0
    path = final_stage(opts, plan, ds, study, budget)
    log(f"done in {time.monotonic() - budget.started:.0f} s")
    print(path)
    return 0
