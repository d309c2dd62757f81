"""Stage 1: competition files -> arrays.

Finds a competition's train, test and sample-submission files (plain, ``.gz`` or zipped), infers
its layout (label column, id column, image shape, pixel scale) with no flags, validates every pixel,
and returns uint8 images. Parsed arrays are cached with joblib, keyed on the files' size and mtime.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import math
import os
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline import runtime
from pipeline.errors import PipelineError
from pipeline.fsutil import atomic_path

CACHE_VERSION = 2
TRAIN_PATTERNS = ("train*.csv", "*_train*.csv", "*-train*.csv")
TEST_PATTERNS = ("test*.csv", "*_test*.csv", "*-test*.csv")
SAMPLE_PATTERNS = ("*sample_submission*.csv", "*submission*.csv")
COMPRESSED = ("", ".gz", ".zip")


# --------------------------------------------------------------------------------------------
# Where the files are


@dataclass(frozen=True)
class Source:
    """One CSV: a plain/.gz/.zip file, or a member of a zip holding several files."""

    path: Path
    member: str | None = None

    def __str__(self) -> str:
        return f"{self.path}:{self.member}" if self.member else str(self.path)

    @property
    def name(self) -> str:
        return Path(self.member).name if self.member else self.path.name

    def stat_key(self) -> list[Any]:
        st = self.path.stat()
        return [str(self.path.resolve()), self.member, st.st_size, st.st_mtime_ns]

    def read_csv(self, **kwargs: Any) -> pd.DataFrame:
        """Read with pandas; a corrupt archive or an empty file becomes a one-line error."""
        try:
            if self.member is not None:
                with zipfile.ZipFile(self.path) as zf, zf.open(self.member) as fh:
                    return pd.read_csv(io.BytesIO(fh.read()), **kwargs)
            if self.path.suffix == ".zip":
                with zipfile.ZipFile(self.path) as zf:
                    names = [n for n in zf.namelist() if not n.endswith("/")]
                    if len(names) != 1:
                        raise PipelineError(
                            f"{self.path}: expected one CSV inside the zip, found {len(names)}; "
                            "unzip it or pass the CSV itself"
                        )
                    with zf.open(names[0]) as fh:
                        return pd.read_csv(io.BytesIO(fh.read()), **kwargs)
            return pd.read_csv(self.path, **kwargs)
        except zipfile.BadZipFile:
            raise PipelineError(
                f"{self.path}: corrupt zip file; download it again (./run.sh fetch --force)"
            ) from None
        except (EOFError, OSError) as exc:
            if isinstance(exc, FileNotFoundError):
                raise PipelineError(f"{self}: file not found") from None
            raise PipelineError(
                f"{self}: cannot be read ({exc}); the file is damaged, download it again"
            ) from None
        except pd.errors.EmptyDataError:
            raise PipelineError(f"{self}: file is empty; download it again") from None
        except pd.errors.ParserError as exc:
            raise PipelineError(f"{self}: not a valid CSV ({str(exc).strip()})") from None
        except UnicodeDecodeError:
            raise PipelineError(f"{self}: not a text CSV file (bad encoding)") from None


@dataclass(frozen=True)
class CompetitionFiles:
    folder: Path
    train: Source
    test: Source
    sample_submission: Source | None


def _strip_compression(name: str) -> tuple[str, str]:
    for ext in (".gz", ".zip"):
        if name.endswith(ext):
            return name[: -len(ext)], ext
    return name, ""


def _pick(candidates: list[Source], patterns: tuple[str, ...], exclude: tuple[str, ...] = ()):
    """The first candidate whose (decompressed) base name matches the earliest pattern."""
    for pattern in patterns:
        hits = []
        for src in candidates:
            base, _ = _strip_compression(src.name.lower())
            if fnmatch.fnmatch(base, pattern) and not any(
                fnmatch.fnmatch(base, e) for e in exclude
            ):
                hits.append(src)
        if hits:
            # prefer the plain file over the compressed one, then the shortest name
            return sorted(hits, key=lambda s: (s.member is not None, len(s.name), s.name))[0]
    return None


def _list_sources(folder: Path) -> list[Source]:
    sources: list[Source] = []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        base, ext = _strip_compression(path.name.lower())
        if base.endswith(".csv"):
            sources.append(Source(path))
        elif ext == ".zip":
            # one zip holding all files, as ``kaggle competitions download`` gives
            try:
                with zipfile.ZipFile(path) as zf:
                    for member in zf.namelist():
                        if _strip_compression(member.lower())[0].endswith(".csv"):
                            sources.append(Source(path, member))
            except zipfile.BadZipFile:
                raise PipelineError(
                    f"{path}: corrupt zip file; download it again (./run.sh fetch --force)"
                ) from None
    return sources


def find_files(folder: Path) -> CompetitionFiles:
    """Locate the train, test and sample-submission files in a competition folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PipelineError(f"{folder}: no such competition folder; check --data")
    sources = _list_sources(folder)
    sample = _pick(sources, SAMPLE_PATTERNS)
    rest = [s for s in sources if s != sample]
    train = _pick(rest, TRAIN_PATTERNS, exclude=("*submission*",))
    test = _pick([s for s in rest if s != train], TEST_PATTERNS, exclude=("*submission*",))
    if train is None:
        raise PipelineError(
            f"{folder}: no train file (train*.csv, .csv.gz or .zip); "
            "put the competition's training CSV there or pass --data"
        )
    if test is None:
        raise PipelineError(
            f"{folder}: no test file (test*.csv, .csv.gz or .zip); "
            "put the competition's test CSV there or pass --data"
        )
    return CompetitionFiles(folder, train, test, sample)


def _holds_competition(folder: Path) -> bool:
    try:
        find_files(folder)
        return True
    except PipelineError:
        return False


def resolve_data_dir(data: Path | None = None, competition: str | None = None) -> Path:
    """The competition folder, by the documented precedence (see README, "How data is found")."""
    if data is not None:
        return Path(data)
    env = os.environ.get("PIPELINE_DATA")
    if env:
        return Path(env)
    if runtime.in_kernel():
        root = runtime.kaggle_root() / "input"
        found = [
            p
            for p in sorted(root.glob("*")) + sorted(root.glob("*/*")) + sorted(root.glob("*/*/*"))
            if p.is_dir() and _holds_competition(p)
        ]
        if competition:
            named = [p for p in found if p.name == competition]
            found = named or found
        if len(found) == 1 or (found and competition):
            return found[0]
        if not found:
            raise PipelineError(
                f"{root}: no folder with a train and a test CSV; add the competition's data "
                "to the kernel (competition_sources) or pass --data"
            )
        raise PipelineError(
            f"{root}: several competition folders ({', '.join(str(p) for p in found)}); "
            "pass --competition SLUG or --data DIR"
        )
    input_dir = runtime.default_input_dir()
    if competition:
        return input_dir / competition
    found = [p for p in sorted(input_dir.glob("*")) if p.is_dir() and _holds_competition(p)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise PipelineError(
            f"{input_dir}: no competition folder; put one under input/ "
            "(./run.sh fetch --competition SLUG) or pass --data DIR"
        )
    names = ", ".join(p.name for p in found)
    raise PipelineError(f"{input_dir}: several competitions ({names}); pass --competition NAME")


# --------------------------------------------------------------------------------------------
# What the files mean


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

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["image_shape"] = list(self.image_shape)
        d["classes"] = [_py(c) for c in self.classes]
        return d


def _py(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


@dataclass
class Dataset:
    """A parsed competition: uint8 images (N, H, W, C), label indices, test ids, and its layout."""

    layout: Layout
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    test_ids: np.ndarray  # str, in test-row order
    submission_ids: np.ndarray  # str, in the sample submission's row order
    classes: np.ndarray

    @property
    def competition(self) -> str:
        return self.layout.competition

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.layout.image_shape


def _ci_lookup(columns: list[str], name: str) -> str | None:
    for c in columns:
        if c.lower() == name.lower():
            return c
    return None


def infer_image_shape(
    n_pixels: int, image_shape: tuple[int, int, int] | None, where: str
) -> tuple[int, int, int]:
    if image_shape is not None:
        if math.prod(image_shape) != n_pixels:
            raise PipelineError(
                f"{where}: --image-shape {','.join(map(str, image_shape))} needs "
                f"{math.prod(image_shape)} pixel columns, the file has {n_pixels}"
            )
        return tuple(image_shape)  # type: ignore[return-value]
    side = math.isqrt(n_pixels)
    if side * side == n_pixels and n_pixels > 1:
        return (side, side, 1)
    if n_pixels == 3072:
        return (32, 32, 3)
    raise PipelineError(
        f"{where}: {n_pixels} pixel columns is not a square image; pass --image-shape H,W,C"
    )


def _check_pixels(df: pd.DataFrame, pixel_cols: list[str], src: Source) -> np.ndarray:
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


def _pixel_scale(train: np.ndarray, test: np.ndarray) -> str:
    """``"0-255"`` for integer data, ``"0-1"`` for floats in the unit interval."""
    integral = all(
        a.dtype.kind in "iub" or bool(np.all(np.equal(np.mod(a, 1), 0))) for a in (train, test)
    )
    if integral and max(train.max(initial=0), test.max(initial=0)) > 1:
        return "0-255"
    if train.dtype.kind == "f" or test.dtype.kind == "f":
        return "0-1"
    return "0-255"


def _to_uint8(values: np.ndarray, scale: str, pixel_cols: list[str], src: Source) -> np.ndarray:
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


def _to_images(flat: np.ndarray, shape: tuple[int, int, int], channels_first: bool) -> np.ndarray:
    h, w, c = shape
    if channels_first:
        return np.ascontiguousarray(flat.reshape(-1, c, h, w).transpose(0, 2, 3, 1))
    return flat.reshape(-1, h, w, c)


def parse_competition(
    files: CompetitionFiles,
    image_shape: tuple[int, int, int] | None = None,
    channels_first: bool = False,
    competition: str | None = None,
) -> Dataset:
    """Read and validate a competition's files (no cache). See :func:`load_competition`."""
    train = files.train.read_csv()
    test = files.test.read_csv()
    for df, src in ((train, files.train), (test, files.test)):
        if len(df) == 0:
            raise PipelineError(f"{src}: has a header but no rows; download it again")
    sample = None
    if files.sample_submission is not None:
        sample = files.sample_submission.read_csv(dtype=str, keep_default_na=False)
        if sample.shape[1] < 2:
            raise PipelineError(
                f"{files.sample_submission}: a sample submission needs an id and a label column"
            )

    train_cols = [str(c) for c in train.columns]
    test_cols = [str(c) for c in test.columns]
    test_lower = {c.lower() for c in test_cols}

    # The label column is the train column that the test file lacks, cross-checked with the
    # sample submission's target column.
    target = str(sample.columns[1]) if sample is not None else None
    only_train = [c for c in train_cols if c.lower() not in test_lower]
    label_col = None
    if target is not None:
        label_col = _ci_lookup(only_train, target) or _ci_lookup(train_cols, target)
    if label_col is None and len(only_train) == 1:
        label_col = only_train[0]
    if label_col is None:
        named = [c for c in only_train if c.lower() in ("label", "labels", "target", "class", "y")]
        label_col = named[0] if len(named) == 1 else None
    if label_col is None:
        hint = f" (the sample submission's target is {target!r})" if target else ""
        raise PipelineError(
            f"{files.train}: missing label column{hint}; the train file needs one column more "
            f"than the test file, found {only_train or 'none'}"
        )

    # The id column is the sample submission's first column; ids come from the test file when it
    # has that column, otherwise from the sample submission in row order.
    if sample is not None:
        id_col = str(sample.columns[0])
    else:
        id_col = next((c for c in test_cols if c.lower() in ("id", "imageid", "image_id")), "id")
    test_id_col = _ci_lookup(test_cols, id_col)
    train_id_col = _ci_lookup(train_cols, id_col)
    ids_from = "test" if test_id_col is not None else "sample_submission"

    drop_train = {label_col} | ({train_id_col} if train_id_col else set())
    pixel_cols = [c for c in train_cols if c not in drop_train]
    test_pixels = [c for c in test_cols if c != test_id_col]
    if set(pixel_cols) != set(test_pixels):
        missing = [c for c in pixel_cols if c not in test_pixels][:3]
        extra = [c for c in test_pixels if c not in pixel_cols][:3]
        raise PipelineError(
            f"{files.test}: pixel columns differ from {files.train.name} "
            f"(missing {missing}, unexpected {extra}); both files need the same pixel columns"
        )

    shape = infer_image_shape(len(pixel_cols), image_shape, str(files.train))

    labels = train[label_col]
    if labels.isna().any():
        row = int(np.flatnonzero(labels.isna().to_numpy())[0])
        raise PipelineError(
            f"{files.train}: empty label in column {label_col!r}, row {row + 1} (line {row + 2}); "
            "fill or drop that row"
        )
    classes, y = np.unique(labels.to_numpy(), return_inverse=True)
    if len(classes) < 2:
        raise PipelineError(
            f"{files.train}: column {label_col!r} has a single class ({_py(classes[0])!r}); "
            "a classifier needs at least two"
        )

    raw_train = _check_pixels(train, pixel_cols, files.train)
    raw_test = _check_pixels(test, pixel_cols, files.test)  # test columns reordered like train
    scale = _pixel_scale(raw_train, raw_test)
    x_train = _to_images(
        _to_uint8(raw_train, scale, pixel_cols, files.train), shape, channels_first
    )
    x_test = _to_images(_to_uint8(raw_test, scale, pixel_cols, files.test), shape, channels_first)

    if test_id_col is not None:
        test_ids = test[test_id_col].astype(str).to_numpy()
        dup = pd.Series(test_ids).duplicated()
        if dup.any():
            row = int(np.flatnonzero(dup.to_numpy())[0])
            raise PipelineError(
                f"{files.test}: duplicated id {test_ids[row]!r} in column {test_id_col!r}, "
                f"row {row + 1} (line {row + 2}); ids must be unique"
            )
    if sample is not None:
        sub_ids = sample[id_col].to_numpy()
        if len(sample) != len(test):
            raise PipelineError(
                f"{files.sample_submission}: {len(sample)} rows but the test file has {len(test)}; "
                "the sample submission must have one row per test image"
            )
        dup = pd.Series(sub_ids).duplicated()
        if dup.any():
            row = int(np.flatnonzero(dup.to_numpy())[0])
            raise PipelineError(
                f"{files.sample_submission}: duplicated id {sub_ids[row]!r}, row {row + 1} "
                f"(line {row + 2}); ids must be unique"
            )
        if test_id_col is None:
            test_ids = sub_ids.astype(str)
        elif set(sub_ids) != set(test_ids):
            only = sorted(set(sub_ids) - set(test_ids))[:3]
            raise PipelineError(
                f"{files.sample_submission}: ids {only} are not in {files.test.name}'s "
                f"{test_id_col!r} column; the two files must hold the same ids"
            )
        columns = [str(c) for c in sample.columns]
    else:
        if test_id_col is None:  # Digit-Recognizer style: 1-based ImageId
            test_ids = np.arange(1, len(test) + 1).astype(str)
        sub_ids = test_ids
        columns = [id_col, label_col]

    name = competition or files.folder.resolve().name
    layout = Layout(
        competition=name,
        train_file=str(files.train),
        test_file=str(files.test),
        sample_submission_file=str(files.sample_submission) if files.sample_submission else None,
        n_train=len(train),
        n_test=len(test),
        image_shape=shape,
        classes=[_py(c) for c in classes],
        label_column=label_col,
        id_column=id_col,
        ids_from=ids_from,
        pixel_scale=scale,
        submission_columns=columns,
        channels_first=channels_first,
    )
    return Dataset(
        layout=layout,
        x_train=x_train,
        y_train=y.astype(np.int32),
        x_test=x_test,
        test_ids=np.asarray(test_ids, dtype=str),
        submission_ids=np.asarray(sub_ids, dtype=str),
        classes=classes,
    )


def _cache_key(files: CompetitionFiles, image_shape, channels_first: bool, competition) -> str:
    srcs = [files.train, files.test] + (
        [files.sample_submission] if files.sample_submission else []
    )
    payload = {
        "v": CACHE_VERSION,
        "files": [s.stat_key() for s in srcs],
        "shape": image_shape,
        "cf": channels_first,
        "competition": competition,
    }
    return hashlib.sha256(json.dumps(payload, default=str).encode()).hexdigest()[:16]


def load_competition(
    data_dir: Path,
    cache_dir: Path | None = None,
    image_shape: tuple[int, int, int] | None = None,
    channels_first: bool = False,
    competition: str | None = None,
) -> Dataset:
    """Find, parse and validate a competition folder; cached in ``cache_dir`` when given."""
    import joblib

    files = find_files(data_dir)
    cache_file = None
    if cache_dir is not None:
        key = _cache_key(files, image_shape, channels_first, competition)
        cache_file = Path(cache_dir) / f"dataset-{key}.joblib"
        if cache_file.exists():
            try:
                return joblib.load(cache_file)
            except Exception:  # a damaged cache is rebuilt, never trusted
                cache_file.unlink(missing_ok=True)
    ds = parse_competition(files, image_shape, channels_first, competition)
    if cache_file is not None:
        try:
            with atomic_path(cache_file) as tmp:
                joblib.dump(ds, tmp)
        except OSError:
            pass  # a read-only or full disk only costs the next load some seconds
    return ds


def holdout_split(y: np.ndarray, seed: int, val_fraction: float = 0.2):
    """Stratified train/holdout index arrays, reproducible for a given seed."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    train_idx, val_idx = train_test_split(
        idx, test_size=val_fraction, random_state=seed, stratify=y
    )
    return np.sort(train_idx), np.sort(val_idx)
