"""Where the pipeline runs: a local checkout or a Kaggle kernel, and the paths that follow."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def in_kernel() -> bool:
    """True inside a Kaggle kernel (Kaggle sets ``KAGGLE_KERNEL_RUN_TYPE``)."""
    return bool(os.environ.get("KAGGLE_KERNEL_RUN_TYPE"))


def kaggle_root() -> Path:
    """``/kaggle``, relocatable for tests with ``PIPELINE_KAGGLE_ROOT``."""
    return Path(os.environ.get("PIPELINE_KAGGLE_ROOT", "/kaggle"))


def default_artifacts_dir() -> Path:
    if in_kernel():
        return kaggle_root() / "working" / "artifacts"
    return PROJECT_ROOT / "artifacts"


def default_submissions_dir() -> Path:
    if in_kernel():
        return kaggle_root() / "working" / "submissions"
    return PROJECT_ROOT / "submissions"


def default_input_dir() -> Path:
    return PROJECT_ROOT / "input"
