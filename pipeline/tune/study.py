"""The Optuna study of a tune run: sampler, pruner, the study created or resumed (rerunning
resumes: Optuna's heartbeat marks a killed process's RUNNING trial failed and retries it), and
the data it was made for."""

from __future__ import annotations

from typing import Any

from pipeline import artifacts
from pipeline.errors import PipelineError
from pipeline.storage import create_or_load_study, masked, quiet_optuna, storage_url

# The first epoch that pruning judges. At epoch 1 batch-norm nets and strong augmentation still
# look bad (cnn5bn and resnet were pruned at val ~0.22 there in a 3600 s run); the trials warm
# up their learning rate over that epoch.
FIRST_RUNG = 2


def make_pruner(name: str, max_epochs: int):
    """``halving`` (default), ``median``, ``hyperband`` or ``none``; steps are epoch numbers."""
    import optuna

    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=FIRST_RUNG, max_resource=max_epochs, reduction_factor=3
        )
    if name == "halving":
        # asynchronous successive halving: a trial goes on past epoch 2, 6, 18... only while it
        # is in the top third of the trials that reached that epoch
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=FIRST_RUNG, reduction_factor=3)
    # steps are epoch numbers (1-based): no pruning before epoch 2
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2)


def make_sampler(seed: int):
    """TPE seeded by ``--seed``; multivariate and grouped (the space is conditional on the
    architecture), with a constant liar so parallel workers spread out."""
    import optuna

    quiet_optuna()
    return optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=5, multivariate=True, group=True, constant_liar=True
    )


def check_data(study, url: str, fingerprint: dict[str, Any]) -> None:
    """Refuse a study made for other data (competition, split seed, --limit, trial rows): its
    trials were scored on other validation images. A new study records this run's."""
    saved = study.user_attrs.get("data")
    if saved is None:
        study.set_user_attr("data", fingerprint)
        return
    differ = [k for k in fingerprint if k in saved and saved[k] != fingerprint[k]]
    if not differ:
        return
    made = ", ".join(f"{k} {saved[k]}" for k in differ)
    here = ", ".join(f"{k} {fingerprint[k]}" for k in differ)
    flags = " ".join(
        f"--{k.replace('_', '-')} {saved[k]}"
        for k in differ
        if k in ("seed", "limit", "search_rows") and saved[k] is not None
    )
    hint = f"rerun with {flags}, or " if flags and "competition" not in differ else ""
    raise PipelineError(
        f"study {study.study_name!r} in {masked(url)} was made for other data "
        f"({made}; this run: {here}); {hint}pass --study NEW_NAME to start a new study"
    )


def open_study(opts, competition: str, max_epochs: int):
    """(the run's study, created or resumed, its storage URL)."""
    url = storage_url(opts.storage, artifacts.competition_dir(opts.artifacts, competition))
    study = create_or_load_study(url, opts.study or competition, make_sampler(opts.seed),
                                 make_pruner(opts.pruner, max_epochs))  # fmt: skip
    return study, url


def fingerprint(opts, competition: str, search_rows: int | None) -> dict[str, Any]:
    """What a study's trials were scored on: the data, the split's seed, --limit, trial rows."""
    return {"competition": competition, "seed": opts.seed, "limit": opts.limit,
            "search_rows": search_rows}  # fmt: skip


def study_rows(study) -> int | None:
    """The trial rows the study was made with (0 for every row), or None when it says none."""
    saved = study.user_attrs.get("data") or {}
    if "search_rows" not in saved:
        return None
    return saved["search_rows"] or 0
