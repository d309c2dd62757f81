"""The stratified 80/20 holdout split (fixed by the seed), the trials' own split of its
training part, and the two built together for a tune run (:class:`RunSplits`).

- ``holdout``: the stratified 80/20 split of the labelled rows (``--seed``, ``--limit``). Its 20%
  scores what is submitted and chooses nothing.
- ``search``: the trials' own training and validation rows, carved out of the holdout split's
  training part (a slice of ``search_rows`` rows where the plan says so). Every choice of the run
  (trials, the ensemble, the mirror) is made on these validation rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.errors import PipelineError

Split = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # x_train, y_train, x_val, y_val


def holdout_split(y: np.ndarray, seed: int, val_fraction: float = 0.2):
    """Stratified train/holdout index arrays, reproducible for a given seed."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    train_idx, val_idx = train_test_split(
        idx, test_size=val_fraction, random_state=seed, stratify=y
    )
    return np.sort(train_idx), np.sort(val_idx)


def holdout(ds, seed: int, limit: int | None = None) -> Split:
    """(x_train, y_train, x_val, y_val): the stratified 80/20 split, optionally on a slice."""
    y = ds.y_train
    counts = np.bincount(y, minlength=ds.num_classes)
    if counts.min() < 2:
        label = ds.classes[int(counts.argmin())]
        label = label.item() if isinstance(label, np.generic) else label
        raise PipelineError(
            f"label {label!r} has {counts.min()} labelled row(s); the stratified 80/20 holdout "
            "needs at least 2 per class: add rows of it or drop it from the train file"
        )
    idx = np.arange(len(y))
    if limit and limit < len(y):
        from sklearn.model_selection import train_test_split

        try:
            idx, _ = train_test_split(idx, train_size=limit, random_state=seed, stratify=y)
        except ValueError as exc:
            raise PipelineError(
                f"--limit {limit}: too few rows for a stratified slice of {ds.num_classes} "
                f"classes ({exc}); raise --limit"
            ) from None
        idx = np.sort(idx)
    if np.bincount(y[idx], minlength=ds.num_classes).min() < 2:
        raise PipelineError(f"--limit {limit}: some class gets fewer than 2 rows; raise --limit")
    tr, va = holdout_split(y[idx], seed)
    tr, va = idx[tr], idx[va]
    return ds.x_train[tr], y[tr], ds.x_train[va], y[va]


def search_split(split: Split, rows: int | None, seed: int) -> Split:
    """The trials' own train/validation data, carved out of the training part of ``split`` so
    that the holdout chooses nothing (it scores what is submitted, honestly).

    ``rows`` training images (a stratified slice) and a quarter as many validation images from
    the rest of the training part; with ``rows`` None (or covering it), an 80/20 split of it.
    """
    from sklearn.model_selection import train_test_split

    x_tr, y_tr = split[0], split[1]
    idx = np.arange(len(y_tr))
    if rows and rows < 0.8 * len(y_tr):
        n_val = max(rows // 4, 1)
        tr, rest = train_test_split(idx, train_size=rows, random_state=seed, stratify=y_tr)
        va, _ = (
            (rest, None)
            if n_val >= len(rest)
            else train_test_split(rest, train_size=n_val, random_state=seed, stratify=y_tr[rest])
        )
    else:
        tr, va = train_test_split(idx, test_size=0.2, random_state=seed, stratify=y_tr)
    tr, va = np.sort(tr), np.sort(va)
    return x_tr[tr], y_tr[tr], x_tr[va], y_tr[va]


@dataclass(frozen=True)
class RunSplits:
    holdout: Split  # (x_train, y_train, x_holdout, y_holdout)
    search: Split  # (x_train, y_train, x_validation, y_validation), inside holdout's training part


def run_splits(ds, opts, search_rows: int | None) -> RunSplits:
    """The splits of a tune run with these options (``seed``, ``limit``) and trials' rows,
    built in this one place by every process of the run."""
    split = holdout(ds, opts.seed, opts.limit)
    return RunSplits(split, search_split(split, search_rows, opts.seed))
