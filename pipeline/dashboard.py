"""``dashboard``: serve a study live with optuna-dashboard (Ctrl-C stops it).

The storage is ``--storage URL`` or the competition's SQLite file; with ``--artifact-store`` the
dashboard also lists the models and histories the trials uploaded there.
"""

from __future__ import annotations

import socket
import sys

from pipeline.errors import PipelineError
from pipeline.options import DashboardOptions


def free_port(host: str) -> int:
    """A port nobody listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def run(opts: DashboardOptions) -> int:
    from pipeline import artifacts
    from pipeline.tune.study import (
        make_storage,
        masked,
        quiet_optuna,
        storage_error,
        storage_url,
    )

    try:
        from optuna_dashboard import run_server
    except ImportError:
        raise PipelineError(
            "optuna-dashboard is not installed; run ./run.sh (it installs requirements.txt)"
        ) from None
    if opts.storage:
        url = opts.storage
    else:
        from pipeline.data import load

        ds = load(opts)
        db = artifacts.competition_dir(opts.artifacts, ds.competition) / "optuna.db"
        if not db.is_file():
            raise PipelineError(f"{db}: no study database yet; run ./run.sh tune first")
        url = storage_url(None, db.parent)
    quiet_optuna()
    try:
        storage = make_storage(url)
        names = [s.study_name for s in storage.get_all_studies()]
    except PipelineError:
        raise
    except Exception as exc:  # noqa: BLE001 - unreachable server, bad password, no database
        raise storage_error(url, exc) from None
    if opts.study and opts.study not in names:
        known = ", ".join(names)
        raise PipelineError(f"no study {opts.study!r} in {masked(url)}; known: {known}")
    store = None
    if opts.artifact_store:
        from pipeline.tune.store import open_store

        store = open_store(opts.artifact_store)
    port = opts.port or free_port(opts.host)
    address = f"http://{opts.host}:{port}/dashboard/"
    if opts.study:
        study_id = storage.get_study_id_from_name(opts.study)
        address += f"studies/{study_id}"
    print(f"dashboard: {address} ({len(names)} studies; Ctrl-C stops it)", flush=True)
    try:
        run_server(storage, host=opts.host, port=port, artifact_store=store)
    except KeyboardInterrupt:
        print("dashboard: stopped", file=sys.stderr)
    return 0
