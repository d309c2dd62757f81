"""What a competition's columns mean: label, ids, pixels, image shape and the submission's columns.

Each rule is one function over the column names (and the sample submission), so a new layout
changes one rule; :class:`Layout` is what ``inspect`` prints.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline.errors import PipelineError

LABEL_NAMES = ("label", "labels", "target", "class", "y")
ID_NAMES = ("id", "imageid", "image_id")
# columns that describe a row but are not pixels: FER2013's "Usage" (Training / PublicTest /
# PrivateTest, the original split). They are left out of the features; every labelled row of the
# train file trains, whatever its Usage, and the test file is predicted whole.
META_NAMES = ("usage",)


@dataclass(frozen=True)
class Layout:
    """What ``inspect`` reports: the competition's files and how to read them."""

    competition: str
    train_file: str
    test_file: str
    sample_submission_file: str | None
    n_train: int
    n_test: int
    image_shape: tuple[int, int, int]
    classes: list[Any]
    label_column: str
    id_column: str
    ids_from: str
    pixel_scale: str
    submission_columns: list[str] = field(default_factory=list)
    channels_first: bool = False
    pixel_format: str = "columns"  # one column per pixel, or "string": one column of numbers
    ignored_columns: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for a command's log: the data as it was read."""
        h, w, c = self.image_shape
        return (
            f"{self.competition}: {self.n_train} labelled and {self.n_test} test images of "
            f"{h}x{w}x{c}, {len(self.classes)} classes, pixels read as {self.pixel_scale}"
        )

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["image_shape"] = list(self.image_shape)
        d["classes"] = [py(c) for c in self.classes]
        return d


def py(value: Any) -> Any:
    """A numpy scalar as the plain Python value (for JSON and messages)."""
    return value.item() if isinstance(value, np.generic) else value


def ci_lookup(columns: list[str], name: str) -> str | None:
    """The column called ``name``, compared case-insensitively."""
    for c in columns:
        if c.lower() == name.lower():
            return c
    return None


def label_column(train_cols: list[str], test_cols: list[str], target: str | None, train_src) -> str:
    """The train column the test file lacks, cross-checked with the sample submission's target
    column (``target``), else the one called label/target/class."""
    test_lower = {c.lower() for c in test_cols}
    only_train = [c for c in train_cols if c.lower() not in test_lower]
    found = None
    if target is not None:
        found = ci_lookup(only_train, target) or ci_lookup(train_cols, target)
    if found is None and len(only_train) == 1:
        found = only_train[0]
    if found is None:
        named = [c for c in only_train if c.lower() in LABEL_NAMES]
        found = named[0] if len(named) == 1 else None
    if found is None:
        hint = f" (the sample submission's target is {target!r})" if target else ""
        raise PipelineError(
            f"{train_src}: missing label column{hint}; the train file needs one column more "
            f"than the test file, found {only_train or 'none'}"
        )
    return found


def id_column(test_cols: list[str], sample: pd.DataFrame | None) -> str:
    """The submission's id column: the sample submission's first column, else an id-like test
    column, else ``id``."""
    if sample is not None:
        return str(sample.columns[0])
    return next((c for c in test_cols if c.lower() in ID_NAMES), "id")


def pixel_columns(
    train_cols: list[str], test_cols: list[str], label: str, train_id: str | None,
    test_id: str | None, test_src, train_name: str,
) -> list[str]:  # fmt: skip
    """Every train column but the label, the id and the row descriptions (META_NAMES); the
    test file must have the same ones."""
    drop = {label} | ({train_id} if train_id else set())
    pixels = [c for c in train_cols if c not in drop and c.lower() not in META_NAMES]
    test_pixels = [c for c in test_cols if c != test_id and c.lower() not in META_NAMES]
    if set(pixels) != set(test_pixels):
        missing = [c for c in pixels if c not in test_pixels][:3]
        extra = [c for c in test_pixels if c not in pixels][:3]
        raise PipelineError(
            f"{test_src}: pixel columns differ from {train_name} "
            f"(missing {missing}, unexpected {extra}); both files need the same pixel columns"
        )
    return pixels


def infer_image_shape(
    n_pixels: int, image_shape: tuple[int, int, int] | None, where: str
) -> tuple[int, int, int]:
    """H,W,C from the pixel count: a square is HxWx1, 3072 is 32x32x3, else ``--image-shape``.
    ``where`` names the file (and the column of a pixel-string layout)."""
    if image_shape is not None:
        if math.prod(image_shape) != n_pixels:
            raise PipelineError(
                f"{where}: --image-shape {','.join(map(str, image_shape))} needs "
                f"{math.prod(image_shape)} pixels, the file has {n_pixels}"
            )
        return tuple(image_shape)  # type: ignore[return-value]
    side = math.isqrt(n_pixels)
    if side * side == n_pixels and n_pixels > 1:
        return (side, side, 1)
    if n_pixels == 3072:
        return (32, 32, 3)
    what = "pixel columns" if " column " not in where else "pixel values per row"
    raise PipelineError(
        f"{where}: {n_pixels} {what} is not a square image; pass --image-shape H,W,C"
    )


def encode_labels(labels: pd.Series, column: str, src) -> tuple[np.ndarray, np.ndarray]:
    """(classes, indices 0..K-1): the original label values are kept for the submission."""
    if labels.isna().any():
        row = int(np.flatnonzero(labels.isna().to_numpy())[0])
        raise PipelineError(
            f"{src}: empty label in column {column!r}, row {row + 1} (line {row + 2}); "
            "fill or drop that row"
        )
    classes, y = np.unique(labels.to_numpy(), return_inverse=True)
    if len(classes) < 2:
        raise PipelineError(
            f"{src}: column {column!r} has a single class ({py(classes[0])!r}); "
            "a classifier needs at least two"
        )
    return classes, y.astype(np.int32)


def _first_duplicate(values: np.ndarray) -> int | None:
    dup = pd.Series(values).duplicated().to_numpy()
    return int(np.flatnonzero(dup)[0]) if dup.any() else None


def read_test_ids(test: pd.DataFrame, test_id: str | None, test_src) -> np.ndarray | None:
    """The test file's ids (unique), or None when it has no id column."""
    if test_id is None:
        return None
    ids = test[test_id].astype(str).to_numpy()
    row = _first_duplicate(ids)
    if row is not None:
        raise PipelineError(
            f"{test_src}: duplicated id {ids[row]!r} in column {test_id!r}, "
            f"row {row + 1} (line {row + 2}); ids must be unique"
        )
    return ids


def submission_ids(
    sample: pd.DataFrame, id_col: str, ids: np.ndarray | None, test_id: str | None, n_test: int,
    sample_src, test_src,
) -> np.ndarray:  # fmt: skip
    """The sample submission's ids in its row order: one per test row, unique, and the same set
    as the test file's ids when it has them."""
    sub_ids = sample[id_col].to_numpy()
    if len(sample) != n_test:
        raise PipelineError(
            f"{sample_src}: {len(sample)} rows but the test file has {n_test}; "
            "the sample submission must have one row per test image"
        )
    row = _first_duplicate(sub_ids)
    if row is not None:
        raise PipelineError(
            f"{sample_src}: duplicated id {sub_ids[row]!r}, row {row + 1} "
            f"(line {row + 2}); ids must be unique"
        )
    if ids is not None and set(sub_ids) != set(ids):
        only = sorted(set(sub_ids) - set(ids))[:3]
        raise PipelineError(
            f"{sample_src}: ids {only} are not in {test_src.name}'s {test_id!r} column; "
            "the two files must hold the same ids"
        )
    return sub_ids.astype(str)
