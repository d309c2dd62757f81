"""The Optuna study: storage (SQLite file by default, any URL), sampler, pruner, and the creation
race of workers started together. Rerunning resumes: the study is loaded if it exists, and
Optuna's heartbeat marks a killed process's RUNNING trial failed and retries it."""

from __future__ import annotations

import os
import random
import re
import time
from pathlib import Path
from typing import Any

from pipeline import artifacts
from pipeline.errors import PipelineError

# The first epoch that pruning judges. At epoch 1 batch-norm nets and strong augmentation still
# look bad (cnn5bn and resnet were pruned at val ~0.22 there in a 3600 s run); the trials warm
# up their learning rate over that epoch.
FIRST_RUNG = 2


def storage_url(storage: str | None, competition_dir: Path) -> str:
    """``storage`` when given, else the competition's SQLite file (its folder created)."""
    if storage:
        return storage
    path = Path(competition_dir) / "optuna.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path.resolve()}"


def make_storage(url: str):
    """Any Optuna storage URL; heartbeats find trials whose process died (RDB and journal)."""
    import optuna

    beat = float(os.environ.get("PIPELINE_HEARTBEAT", "10"))
    if url.endswith(".log") or url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        path = url.removeprefix("journal:").removeprefix("///")
        return optuna.storages.JournalStorage(JournalFileBackend(path))
    # SQLite: a writer waits this long for another process's lock before giving up
    wait = float(os.environ.get("PIPELINE_SQLITE_TIMEOUT", "60"))
    kwargs: dict[str, Any] = dict(
        heartbeat_interval=max(1, int(beat)),
        grace_period=max(2, int(beat * 3)),
        engine_kwargs={"connect_args": {"timeout": wait}} if url.startswith("sqlite") else {},
    )
    # Optuna 4.9 renamed the retry callback; Kaggle kernels may carry an older Optuna
    if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):
        kwargs["heartbeat_stale_trial_callback"] = optuna.storages.RetryHeartbeatStaleTrialCallback(
            max_retry=1
        )
    else:
        kwargs["failed_trial_callback"] = optuna.storages.RetryFailedTrialCallback(max_retry=1)
    return optuna.storages.RDBStorage(url, **kwargs)


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


def quiet_optuna() -> None:
    """Optuna's info lines and experimental-feature warnings would bury the progress lines
    (TPE's multivariate/group/constant_liar and heartbeats are flagged experimental)."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def create_or_load_study(url: str, name: str, sampler=None, pruner=None):
    """The study `name` in storage `url`, created if missing; safe for workers started together."""
    import optuna

    quiet_optuna()
    for attempt in range(5):
        try:
            return optuna.create_study(
                storage=make_storage(url),
                study_name=name,
                direction="maximize",
                sampler=sampler,
                pruner=pruner,
                load_if_exists=True,
            )
        except Exception as exc:  # noqa: BLE001 - bad URL, driver missing, DB locked...
            # workers started together race to create the schema or the study: the loser sees a
            # unique-constraint error and finds everything in place on the next try
            if attempt < 4 and _creation_race(exc):
                time.sleep(0.5 + random.random())
                continue
            raise storage_error(url, exc) from None
    raise AssertionError("unreachable")


def masked(url: str) -> str:
    """The URL with its password hidden (never print credentials)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not an SQLAlchemy URL (journal file, garbage)
        return re.sub(r"//([^:/@]*):[^@/]*@", r"//\1:***@", url)


def storage_error(url: str, exc: Exception) -> PipelineError:
    """One line for a storage that cannot be opened: which file or URL (password hidden), what
    went wrong, and what to do."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    text = re.sub(r"\s*\(Background on this error at:.*", "", text)
    path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else None
    if path and ("not a database" in text or "malformed" in text or "DatabaseError" in text):
        return PipelineError(
            f"{path}: damaged, not an Optuna study database ({text[:120]}); move it aside "
            f"(mv {path} {path}.bad) to start a new study, or pass --storage / --study"
        )
    if path and "locked" in text:
        return PipelineError(
            f"{path}: locked by another process; wait for it to finish, or run several workers "
            "on --storage journal:FILE.log or a PostgreSQL URL"
        )
    where = masked(url)
    low = text.lower()
    if "failed to import db access module" in low or "no module named" in low:
        return PipelineError(
            f"cannot open Optuna storage {where}: its database driver is not installed "
            "(PostgreSQL's comes with requirements.txt: ./run.sh installs it; for MySQL: "
            "pip install pymysql)"
        )
    if "password authentication failed" in low or "access denied" in low:
        reason = "the server refused the user name or password"
    elif "does not exist" in low and "database" in low:
        reason = "no such database on the server (create it first, e.g. createdb NAME)"
    elif any(
        k in low
        for k in (
            "connection refused",
            "could not connect",
            "timeout",
            "no route",
            "name or service not known",
            "connection failed",
        )
    ):
        reason = "no server answers at that host and port"
    else:
        reason = text[:200]
    return PipelineError(f"cannot open Optuna storage {where}: {reason}")


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


def load_study(url: str, name: str):
    """An existing study, or None when the storage holds none of that name."""
    import optuna

    quiet_optuna()
    try:
        return optuna.load_study(study_name=name, storage=make_storage(url))
    except KeyError:
        return None


def _creation_race(exc: Exception) -> bool:
    text = f"{type(exc).__name__} {exc}"
    return any(
        k in text for k in ("IntegrityError", "UNIQUE constraint", "already exists", "Duplicated")
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
