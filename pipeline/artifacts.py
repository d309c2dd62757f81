"""Where results live under ``artifacts/`` and how they are written (atomically).

``<artifacts>/<competition>/`` holds ``runs/<run-id>/`` (one ``train`` each), ``tune/`` (the
study's models, best.json, trials.csv), ``optuna.db``, ``cost.json`` and ``report/``;
``<artifacts>/cache/`` the parsed datasets. Every stage finds its inputs here, so any stage can be
rerun alone.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import PipelineError
from pipeline.fsutil import atomic_path, atomic_write_text


def competition_dir(artifacts: Path, competition: str) -> Path:
    return Path(artifacts) / competition


def runs_dir(artifacts: Path, competition: str) -> Path:
    return competition_dir(artifacts, competition) / "runs"


def tune_dir(artifacts: Path, competition: str) -> Path:
    return competition_dir(artifacts, competition) / "tune"


def new_run_id(model: str) -> str:
    """A sortable, unique id: UTC time to the microsecond, then the model name."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{stamp[:15]}{stamp[-1]}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', model)}"


def find_run(artifacts: Path, competition: str, run_id: str) -> Path:
    """The folder of a saved run; an unknown id is a one-line error listing the newest ones."""
    runs = runs_dir(artifacts, competition)
    run_dir = runs / run_id
    if not run_dir.is_dir():
        known = sorted(p.name for p in runs.glob("*")) if runs.is_dir() else []
        hint = f"; known runs: {', '.join(known[-5:])}" if known else ""
        raise PipelineError(f"{run_dir}: no such run{hint}")
    return run_dir


def save_history(path: Path, history: dict[str, list[float]]) -> None:
    """Per-epoch values as CSV (one row per epoch, ``epoch`` 1-based)."""
    atomic_write_text(path, history_frame(history).to_csv(index=False))


def history_frame(history: dict[str, list[float]] | None) -> pd.DataFrame:
    """Per-epoch values as a DataFrame with a 1-based ``epoch`` column (ragged lists padded)."""
    if not history:
        return pd.DataFrame()
    n = max((len(v) for v in history.values()), default=0)
    cols = {k: list(v) + [np.nan] * (n - len(v)) for k, v in history.items()}
    return pd.DataFrame({"epoch": np.arange(1, n + 1), **cols})


def save_model(model, path: Path) -> None:
    """``model.save`` to a temporary file, then rename: never a half-written model."""
    with atomic_path(path) as tmp:
        model.save(tmp)
