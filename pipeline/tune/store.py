"""Where kept models live when several machines share a study.

Without a store, a trial's model is a file under the local ``tune/models/`` and its record holds
that path. With ``--artifact-store DIR`` (a shared folder, e.g. a network mount), every model a
trial or the final fit keeps, its validation probabilities and its history are uploaded through
Optuna's artifact API and the record holds their artifact ids instead, so a final stage on a
machine that ran no trial downloads what it needs (and the dashboard lists them).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from pipeline.errors import PipelineError


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
