"""Pixel values: checked (numeric, finite, in range), scaled to uint8 and shaped as images.

Every error names the file, the row (1-based, and its line in the CSV) and the column.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.errors import PipelineError


def check_pixels(df: pd.DataFrame, pixel_cols: list[str], src) -> np.ndarray:
    """Numeric, finite, non-negative pixels as a float or int array; errors name row and column."""
    block = df[pixel_cols]
    bad_cols = [c for c in pixel_cols if not pd.api.types.is_numeric_dtype(block[c].dtype)]
    if bad_cols:
        col = bad_cols[0]
        coerced = pd.to_numeric(block[col], errors="coerce")
        row = int(np.flatnonzero(coerced.isna() & block[col].notna())[0])
        raise PipelineError(
            f"{src}: non-numeric pixel {block[col].iloc[row]!r} in column {col!r}, "
            f"row {row + 1} (line {row + 2}); fix or drop that row"
        )
    values = block.to_numpy()
    if values.dtype.kind == "f":
        nan = np.isnan(values)
        if nan.any():
            row, col = (int(i) for i in np.argwhere(nan)[0])
            raise PipelineError(
                f"{src}: missing (NaN) pixel in column {pixel_cols[col]!r}, row {row + 1} "
                f"(line {row + 2}); fill or drop that row"
            )
    neg = values < 0
    if neg.any():
        row, col = (int(i) for i in np.argwhere(neg)[0])
        raise PipelineError(
            f"{src}: negative pixel {values[row, col]} in column {pixel_cols[col]!r}, "
            f"row {row + 1} (line {row + 2}); pixels must be 0-255 or 0-1"
        )
    return values


def pixel_scale(train: np.ndarray, test: np.ndarray) -> str:
    """``"0-255"`` for integer data, ``"0-1"`` for floats in the unit interval."""
    integral = all(
        a.dtype.kind in "iub" or bool(np.all(np.equal(np.mod(a, 1), 0))) for a in (train, test)
    )
    if integral and max(train.max(initial=0), test.max(initial=0)) > 1:
        return "0-255"
    if train.dtype.kind == "f" or test.dtype.kind == "f":
        return "0-1"
    return "0-255"


def to_uint8(values: np.ndarray, scale: str, pixel_cols: list[str], src) -> np.ndarray:
    """Checked pixels as uint8 0-255; a value above the scale's top is a one-line error."""
    limit = 1.0 if scale == "0-1" else 255
    over = values > limit
    if over.any():
        row, col = (int(i) for i in np.argwhere(over)[0])
        hint = "float pixels must be in 0-1" if scale == "0-1" else "pixels must be 0-255"
        raise PipelineError(
            f"{src}: pixel {values[row, col]} above {limit:g} in column {pixel_cols[col]!r}, "
            f"row {row + 1} (line {row + 2}); {hint}"
        )
    if scale == "0-1":
        values = np.rint(values * 255.0)
    return values.astype(np.uint8)


def to_images(flat: np.ndarray, shape: tuple[int, int, int], channels_first: bool) -> np.ndarray:
    """(N, H*W*C) rows -> (N, H, W, C) images (rows stored plane by plane when channels_first)."""
    h, w, c = shape
    if channels_first:
        return np.ascontiguousarray(flat.reshape(-1, c, h, w).transpose(0, 2, 3, 1))
    return flat.reshape(-1, h, w, c)
