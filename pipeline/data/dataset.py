"""A parsed competition (:class:`Dataset`): read the files, apply the layout rules, check the
pixels, and cache the arrays with joblib (keyed on the files' size and mtime)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.data import layout as L
from pipeline.data import pixels as P
from pipeline.data.files import CompetitionFiles, find_files
from pipeline.errors import PipelineError
from pipeline.fsutil import atomic_path

# bump when Dataset or the parsing changes: older caches are then rebuilt, never trusted
CACHE_VERSION = 4


@dataclass
class Dataset:
    """A parsed competition: uint8 images (N, H, W, C), label indices, test ids, and its layout."""

    layout: L.Layout
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


def read_frames(files: CompetitionFiles):
    """(train, test, sample or None) as DataFrames; empty files are one-line errors."""
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
    return train, test, sample


def parse_competition(
    files: CompetitionFiles,
    image_shape: tuple[int, int, int] | None = None,
    channels_first: bool = False,
    competition: str | None = None,
) -> Dataset:
    """Read and validate a competition's files (no cache). See :func:`load_competition`."""
    train, test, sample = read_frames(files)
    train_cols = [str(c) for c in train.columns]
    test_cols = [str(c) for c in test.columns]
    target = str(sample.columns[1]) if sample is not None else None
    label_col = L.label_column(train_cols, test_cols, target, files.train)
    id_col = L.id_column(test_cols, sample)
    test_id = L.ci_lookup(test_cols, id_col)
    train_id = L.ci_lookup(train_cols, id_col)
    pixel_cols = L.pixel_columns(
        train_cols, test_cols, label_col, train_id, test_id, files.test, files.train.name
    )
    classes, y = L.encode_labels(train[label_col], label_col, files.train)
    string, raw_train, raw_test, shape, names = _raw_pixels(train, test, pixel_cols, files,
                                                            image_shape)  # fmt: skip
    n_train, n_test = len(train), len(test)
    id_frame = test[[test_id]] if test_id is not None else None
    del train, test  # the frames' pixels (hundreds of MB for 60,000 rows): freed before converting
    scale = P.pixel_scale(raw_train, raw_test)
    P.check_outliers([(raw_train, names, files.train), (raw_test, names, files.test)], scale)
    x_train = P.to_images(P.to_uint8(raw_train, scale), shape, channels_first)
    del raw_train
    x_test = P.to_images(P.to_uint8(raw_test, scale), shape, channels_first)
    del raw_test
    ignored = [c for c in train_cols + test_cols if c.lower() in L.META_NAMES]

    ids, sub_ids, columns = _ids(files, sample, id_frame, (id_col, test_id, label_col), n_test)
    layout = L.Layout(
        competition=competition or files.folder.resolve().name,
        train_file=str(files.train),
        test_file=str(files.test),
        sample_submission_file=str(files.sample_submission) if files.sample_submission else None,
        n_train=n_train,
        n_test=n_test,
        image_shape=shape,
        classes=[L.py(c) for c in classes],
        label_column=label_col,
        id_column=id_col,
        ids_from="test" if test_id is not None else "sample_submission",
        pixel_scale=scale,
        submission_columns=columns,
        channels_first=channels_first,
        pixel_format="string" if string else "columns",
        ignored_columns=sorted(set(ignored)),
    )
    return Dataset(
        layout=layout,
        x_train=x_train,
        y_train=y,
        x_test=x_test,
        test_ids=np.asarray(ids, dtype=str),
        submission_ids=np.asarray(sub_ids if sub_ids is not None else ids, dtype=str),
        classes=classes,
    )


def _ids(files: CompetitionFiles, sample, id_frame, names: tuple, n_test: int):
    """(the test rows' ids, the sample submission's ids or None, the submission's columns);
    ``names``: (the id column, the test file's id column or None, the label column)."""
    id_col, test_id, label_col = names
    ids = L.read_test_ids(id_frame, test_id, files.test)
    if sample is not None:
        sub_ids = L.submission_ids(
            sample, id_col, ids, test_id, n_test, files.sample_submission, files.test
        )
        columns = [str(c) for c in sample.columns]
    else:
        sub_ids = None
        columns = [id_col, label_col]
    if ids is None:
        # no id column in the test file: the sample submission's ids in row order, else
        # Digit-Recognizer style 1-based ImageIds
        ids = sub_ids if sub_ids is not None else np.arange(1, n_test + 1).astype(str)
    return ids, sub_ids, columns


def _raw_pixels(train, test, pixel_cols: list[str], files: CompetitionFiles, image_shape):
    """(pixel strings?, train pixels, test pixels, image shape, names of the pixel values)."""
    string = len(pixel_cols) == 1 and P.is_pixel_string(train[pixel_cols[0]])
    if string:  # FER2013 style: one column of space-separated numbers per image
        col = pixel_cols[0]
        raw_train, n = P.parse_pixel_strings(train[col], col, files.train)
        raw_test, _ = P.parse_pixel_strings(test[col], col, files.test, expected=n)
        shape = L.infer_image_shape(n, image_shape, f"{files.train} column {col!r}")
        return string, raw_train, raw_test, shape, P.string_pixel_names(col, n)
    shape = L.infer_image_shape(len(pixel_cols), image_shape, str(files.train))
    raw_train = P.check_pixels(train, pixel_cols, files.train)
    raw_test = P.check_pixels(test, pixel_cols, files.test)  # columns ordered like train
    return string, raw_train, raw_test, shape, pixel_cols


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


def load(opts) -> Dataset:
    """The competition named by a command's options, parsed once and cached under
    ``<artifacts>/cache``."""
    from pipeline.data.files import resolve_data_dir

    return load_competition(
        resolve_data_dir(opts.data, opts.competition),
        cache_dir=opts.artifacts / "cache",
        image_shape=opts.image_shape,
        channels_first=opts.channels_first,
        competition=opts.competition,
    )
