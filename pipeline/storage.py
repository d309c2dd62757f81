"""Where studies and kept models live: Optuna's storage (an SQLite file by default, any
URL: PostgreSQL for many workers, a journal file) with one-line errors for the ways it fails
to open, and the artifact store that lets several machines share the models trials keep.

Without an artifact store, a trial's model is a file under the local ``tune/models/`` and its
record holds that path. With ``--artifact-store DIR`` (a shared folder, e.g. a network mount),
every model a trial or the final fit keeps, its validation probabilities and its history are
uploaded through Optuna's artifact API and the record holds their artifact ids instead, so a
final stage on a machine that ran no trial downloads what it needs (and the dashboard lists
them). Used by ``tune``, ``report`` and ``dashboard``.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import time
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError


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


def open_store(spec: str | None):
    """An Optuna artifact store for ``--artifact-store``, or None."""
    if not spec:
        return None
    from optuna.artifacts import FileSystemArtifactStore

    if "://" in spec:
        raise PipelineError(
            f"--artifact-store {spec}: give a folder every machine can reach (a network mount); "
            "object stores (s3://) are not supported"
        )
    folder = Path(spec)
    folder.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(folder))


def upload(store, study_or_trial, path: Path) -> str:
    """Upload one file; returns its artifact id."""
    from optuna.artifacts import upload_artifact

    return upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=study_or_trial)


def fetch(store, artifact_id: str, dest: Path) -> Path:
    """The artifact as a local file at ``dest`` (downloaded unless already there)."""
    from optuna.artifacts import download_artifact

    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".download-{dest.name}")
        tmp.unlink(missing_ok=True)
        try:
            download_artifact(artifact_store=store, file_path=str(tmp), artifact_id=artifact_id)
        except Exception as exc:  # noqa: BLE001 - a missing or unreachable artifact
            tmp.unlink(missing_ok=True)
            raise PipelineError(
                f"artifact {artifact_id} cannot be downloaded from the artifact store "
                f"({type(exc).__name__}: {str(exc)[:120]}); check --artifact-store"
            ) from None
        tmp.replace(dest)
    return dest


def remove(store, artifact_id: str | None) -> None:
    """Delete an artifact (a trial that left the top K); a missing one is fine."""
    if store is None or not artifact_id:
        return
    # already gone, or the store refuses: nothing to keep either way
    with contextlib.suppress(Exception):
        store.remove(artifact_id)
