"""Stage 4: predictions -> a validated submission CSV, written atomically."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.data import Dataset, Layout
from pipeline.errors import PipelineError
from pipeline.fsutil import atomic_path, atomic_write_json


def build_submission(ds: Dataset, predictions: np.ndarray) -> pd.DataFrame:
    """The sample submission's columns and row order, from class indices or probabilities."""
    predictions = np.asarray(predictions)
    if predictions.ndim == 2:
        if predictions.shape[1] != ds.num_classes:
            raise PipelineError(
                f"predictions have {predictions.shape[1]} classes, the competition has "
                f"{ds.num_classes}; the model was trained on other data"
            )
        predictions = predictions.argmax(axis=1)
    if len(predictions) != len(ds.test_ids):
        raise PipelineError(
            f"{len(predictions)} predictions for {len(ds.test_ids)} test rows; predict the whole "
            "test set"
        )
    labels = ds.classes[predictions.astype(int)]
    by_id = pd.Series(labels, index=ds.test_ids)
    id_col, label_col = ds.layout.submission_columns[:2]
    ordered = by_id.loc[ds.submission_ids].to_numpy()
    return pd.DataFrame({id_col: ds.submission_ids, label_col: ordered})


def validate_submission(df: pd.DataFrame, layout: Layout, test_ids: np.ndarray, where: str) -> None:
    """Refuse what Kaggle would reject: columns, row count, ids, labels, NaN."""
    columns = list(layout.submission_columns)
    if [str(c) for c in df.columns] != columns:
        raise PipelineError(
            f"{where}: columns {list(df.columns)} but the competition expects {columns}; "
            "write it with ./run.sh predict"
        )
    if len(df) != len(test_ids):
        raise PipelineError(
            f"{where}: {len(df)} rows but the test set has {len(test_ids)}; "
            "a submission needs one row per test image"
        )
    id_col, label_col = columns[:2]
    ids = df[id_col].astype(str)
    na = df[columns].isna().any(axis=1) | (df[columns].astype(str) == "").any(axis=1)
    if na.any():
        row = int(np.flatnonzero(na.to_numpy())[0])
        raise PipelineError(f"{where}: empty value in row {row + 1} (line {row + 2}); fill it")
    dup = ids.duplicated()
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0])
        raise PipelineError(
            f"{where}: duplicated id {ids.iloc[row]!r} in row {row + 1} (line {row + 2})"
        )
    unknown = sorted(set(ids) - set(test_ids))
    if unknown:
        raise PipelineError(
            f"{where}: ids {unknown[:3]} are not test ids; the ids must be those of the test set"
        )
    allowed = {str(c) for c in layout.classes}
    bad = ~df[label_col].astype(str).isin(allowed)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise PipelineError(
            f"{where}: label {df[label_col].iloc[row]!r} in row {row + 1} (line {row + 2}) is "
            f"not a training label {sorted(allowed)[:10]}"
        )


def read_submission(path: Path) -> pd.DataFrame:
    """Read a submission file as text (ids and labels compared exactly as written)."""
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise PipelineError(f"{path}: no such submission file") from None
    except pd.errors.EmptyDataError:
        raise PipelineError(f"{path}: submission file is empty") from None
    except pd.errors.ParserError as exc:
        raise PipelineError(f"{path}: not a valid CSV ({str(exc).strip()})") from None


def default_path(submissions_dir: Path, competition: str, model: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    safe = re.sub(r"[^A-Za-z0-9_.+-]+", "_", model)
    return Path(submissions_dir) / f"{competition}-{stamp}-{safe}.csv"


def write_submission(
    ds: Dataset,
    predictions: np.ndarray,
    path: Path,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Validate and write atomically (temp file + rename); metadata goes beside it as JSON."""
    df = build_submission(ds, predictions)
    path = Path(path)
    validate_submission(df.astype(str), ds.layout, ds.test_ids, str(path))
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    if meta is not None:
        atomic_write_json(
            path.with_suffix(".json"), {"competition": ds.competition, "file": path.name, **meta}
        )
    return path


def write_predictions(
    ds: Dataset,
    probs: np.ndarray,
    label: str,
    meta: dict[str, Any],
    submissions_dir: Path,
    path: Path | None = None,
) -> Path:
    """Write the submission for test-set probabilities to ``path`` (default: a new file under
    ``submissions_dir``); inside a Kaggle kernel also as the kernel's ``submission.csv``."""
    from pipeline import runtime

    out = write_submission(
        ds, probs, path or default_path(submissions_dir, ds.competition, label),
        meta={"model": label, **meta},
    )  # fmt: skip
    if runtime.in_kernel():
        # the file name Kaggle takes a kernel's submission from
        write_submission(ds, probs, runtime.kaggle_root() / "working" / "submission.csv")
    return out
