"""Pixel values: checked (numeric, finite, in range), scaled to uint8 and shaped as images.

Every error names the file, the row (1-based, and its line in the CSV) and the column.
"""

from __future__ import annotations

import io
from collections import Counter

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


# The tops a competition's pixels are stored up to: unit floats, 4-bit (scikit-learn's 8x8
# digits, 0-16), 8-bit. The scale is the smallest that holds every pixel of both files; pixels
# above every one of them are scaled by their own maximum ("0-4095" for 12-bit data, say).
SCALES = (1, 16, 255)
# A handful of pixels above a scale every other pixel fits is a typo, not a scale: at most this
# share of all pixels (and at least one), reported by row instead of rescaling every image.
OUTLIER_SHARE = 1e-5


def scale_top(scale: str) -> float:
    """The largest value of a scale written ``"0-N"``."""
    return float(scale.split("-", 1)[1])


def pixel_scale(train: np.ndarray, test: np.ndarray) -> str:
    """The scale the pixels are stored in, ``"0-1"``, ``"0-16"``, ``"0-255"`` or ``"0-<max>"``:
    the smallest of :data:`SCALES` that holds every pixel of both files."""
    top = float(max(train.max(initial=0), test.max(initial=0)))
    fits = [s for s in SCALES if top <= s]
    return f"0-{fits[0] if fits else f'{top:g}'}"


def check_outliers(files: list[tuple[np.ndarray, list[str], object]], scale: str) -> None:
    """A one-line error for the first pixel above the next smaller scale when only a handful of
    pixels (:data:`OUTLIER_SHARE`) are above it: ``(values, column names, file)`` per file."""
    below = [s for s in SCALES if s < scale_top(scale)]
    if not below:
        return
    limit = below[-1]
    over = sum(int(np.count_nonzero(v > limit)) for v, _, _ in files)
    size = sum(v.size for v, _, _ in files)
    if over == 0 or over > max(1, OUTLIER_SHARE * size):
        return
    for values, names, src in files:
        hits = np.argwhere(values > limit)
        if len(hits):
            row, col = (int(i) for i in hits[0])
            raise PipelineError(
                f"{src}: pixel {values[row, col]} above {limit:g} in column {names[col]!r}, "
                f"row {row + 1} (line {row + 2}); every other pixel is in 0-{limit:g}: fix that row"
            )


def to_uint8(values: np.ndarray, scale: str) -> np.ndarray:
    """Pixels of ``scale`` as uint8 0-255 (the same range for every competition)."""
    top = scale_top(scale)
    if top == 255 and values.dtype.kind in "iub":
        return values.astype(np.uint8)
    return np.rint(values * (255.0 / top)).astype(np.uint8)


def to_images(flat: np.ndarray, shape: tuple[int, int, int], channels_first: bool) -> np.ndarray:
    """(N, H*W*C) rows -> (N, H, W, C) images (rows stored plane by plane when channels_first)."""
    h, w, c = shape
    if channels_first:
        return np.ascontiguousarray(flat.reshape(-1, c, h, w).transpose(0, 2, 3, 1))
    return flat.reshape(-1, h, w, c)


def is_pixel_string(column: pd.Series) -> bool:
    """True for a text column whose cells are numbers separated by spaces or commas (FER2013's
    ``pixels``), judged on most of its first cells (a bad cell among them is reported later, by
    row, when the column is parsed)."""
    if pd.api.types.is_numeric_dtype(column.dtype):
        return False
    head = column.dropna().astype(str).head(20)

    def numbers(cell: str) -> bool:
        tokens = cell.replace(",", " ").split()
        return len(tokens) >= 2 and all(_is_number(t) for t in tokens[:50])

    return not head.empty and sum(map(numbers, head)) >= 0.8 * len(head)


def string_pixel_names(column: str, n: int) -> list[str]:
    """Names for the values of a pixel-string column, as errors show them."""
    return [f"{column} (value {i + 1})" for i in range(n)]


def parse_pixel_strings(column: pd.Series, name: str, src, expected: int | None = None):
    """(values as an array (N, P), P) from a column of space/comma-separated numbers.

    Integer pixels are tokenized with numpy on the cells' bytes; anything else is parsed by
    pandas' C parser (no Python loop per row either way). Every row must
    hold ``expected`` values (default: the most common count among the first rows); a missing,
    extra or non-numeric value is a one-line error naming the file, row and column."""
    cells = column.astype(str)
    if expected is None:
        counts = Counter(len(c.replace(",", " ").split()) for c in cells.head(200))
        expected = counts.most_common(1)[0][0]
    values = _parse_integer_strings(cells, expected)
    if values is not None:
        return values, expected
    # anything else (decimals, signs, words, missing cells): pandas' parser, and errors by row
    cells = cells.str.replace(",", " ", regex=False)
    try:
        block = pd.read_csv(
            io.StringIO("\n".join(cells)), sep=r"\s+", header=None, names=range(expected),
            dtype=np.float64, skip_blank_lines=False, engine="c",
        )  # fmt: skip
    except ValueError as exc:  # pandas' ParserError is a ValueError: an extra value, or a word
        raise _string_error(cells, name, src, expected, str(exc)) from None
    values = block.to_numpy()
    if len(values) != len(cells) or np.isnan(values).any():
        raise _string_error(cells, name, src, expected, "")
    return values, expected


DIGITS = np.uint8(ord("0"))
_INTEGER_BYTES = np.zeros(256, dtype=bool)
_INTEGER_BYTES[[*range(ord("0"), ord("9") + 1), ord(" "), ord(","), ord("\n")]] = True
ROWS_PER_CHUNK = 2048  # bounds the tokenizer's temporary arrays (~20 MB of text at 48x48)


def _parse_integer_strings(cells: pd.Series, expected: int) -> np.ndarray | None:
    """The (N, expected) uint16 values of cells made only of 1-3 digit integers separated by
    spaces or commas, tokenized with numpy on the bytes; None where any cell holds anything else
    or a row has another count, for the general path to parse or report. bench/parse_speed.py,
    35,000 FER-sized rows: 5.4 s and 814 MiB peak, against 13.6 s and 2,992 MiB with pandas'
    parser, and 8.1 s for the same pixels as columns."""
    out = np.empty((len(cells), expected), dtype=np.uint16)
    for start in range(0, len(cells), ROWS_PER_CHUNK):
        chunk = cells.iloc[start : start + ROWS_PER_CHUNK]
        try:
            text = np.frombuffer(("\n".join(chunk) + "\n").encode("ascii"), dtype=np.uint8)
        except UnicodeEncodeError:
            return None
        if not _INTEGER_BYTES[text].all():
            return None  # a decimal point, a sign, a word, "nan": the general path
        digit = text >= DIGITS
        edge = np.diff(digit.astype(np.int8), prepend=np.int8(0), append=np.int8(0))
        begins, ends = np.flatnonzero(edge == 1), np.flatnonzero(edge == -1)
        if len(begins) != len(chunk) * expected:
            return None
        # tokens per row: how many begin before each row's newline
        before = np.searchsorted(begins, np.flatnonzero(text == ord("\n")))
        if (np.diff(before, prepend=0) != expected).any():
            return None
        length = ends - begins
        if length.max(initial=1) > 3:
            return None  # 1000 or 0255: let the general path (and its range check) decide
        values = sum(10**k * _digit(text, ends, length, k + 1) for k in range(3))
        out[start : start + len(chunk)] = values.reshape(len(chunk), expected)
    return out


def _digit(text: np.ndarray, ends: np.ndarray, length: np.ndarray, back: int) -> np.ndarray:
    """Each token's digit ``back`` places before its end (0 where the token is shorter)."""
    d = text[ends - back].astype(np.uint16) - DIGITS
    return d if back == 1 else np.where(length >= back, d, 0)


def _string_error(cells: pd.Series, name: str, src, expected: int, detail: str) -> PipelineError:
    """Find the first bad row (only on the error path, so a loop is fine) and say what is wrong."""
    for row, cell in enumerate(cells):
        tokens = cell.split()
        bad = next((t for t in tokens if not _is_number(t)), None)
        where = f"{src}: row {row + 1} (line {row + 2}), column {name!r}"
        if bad is not None:
            return PipelineError(f"{where}: non-numeric pixel {bad!r}; fix or drop that row")
        if len(tokens) != expected:
            return PipelineError(
                f"{where}: {len(tokens)} pixel values, expected {expected} like the other rows; "
                "fix or drop that row"
            )
    return PipelineError(f"{src}: column {name!r} cannot be read as pixels ({detail[:120]})")


def _is_number(token: str) -> bool:
    try:
        value = float(token)
    except ValueError:
        return False
    return not np.isnan(value)
