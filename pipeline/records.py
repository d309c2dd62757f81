"""Typed results, and the one pair of functions that write and read them (JSON and Optuna).

A ``train`` run leaves a :class:`RunRecord` (``metrics.json``); a tune trial a
:class:`TrialRecord` (its Optuna user attributes); the tune command's final fit a
:class:`FinalFitRecord`, inside the :class:`TuneResult` (``tune/best.json``). The keys are the
field names, written in one place: :func:`to_dict` / :func:`from_dict`, and for Optuna
:func:`write_trial` / :func:`read_trial`. A field marked ``FLAT`` is merged into its parent
(``metrics.json`` is one flat object), so older files and studies read back unchanged. A field
renamed carries its old key (``was``): files and studies written before the rename still load.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pipeline.fsutil import atomic_write_text
from pipeline.training import FitMetrics, TrainSettings

T = TypeVar("T")
FLAT = {"flat": True}


def was(old: str) -> dict[str, str]:
    """Field metadata: the key this field had before it was renamed."""
    return {"was": old}


@dataclass(frozen=True)
class RunRecord:
    """One ``train`` run (``runs/<run-id>/metrics.json``)."""

    model: str
    run_id: str
    metrics: FitMetrics = field(metadata=FLAT)
    validation_rows: int | None = None  # the rows that chose the kept epoch and score it


@dataclass(frozen=True)
class TrialRecord:
    """What a tune trial saved: written in steps (before training: the configuration; after:
    the metrics and model; on failure: the reason), so every field may be missing."""

    model: str | None = None
    hp: dict[str, Any] = field(default_factory=dict)
    settings: TrainSettings | None = None
    metrics: FitMetrics | None = field(default=None, metadata=FLAT)
    history: dict[str, list[float]] = field(default_factory=dict)
    model_path: str | None = None  # local file (no artifact store)
    model_artifact: str | None = None  # artifact ids (with --artifact-store)
    validation_artifact: str | None = field(default=None, metadata=was("holdout_artifact"))
    history_artifact: str | None = None
    reason: str | None = None
    refused: bool = False  # the budget could not hold one epoch: never started
    epochs_clipped_to: int | None = None


@dataclass(frozen=True)
class FlipDecision:
    """Whether the labels survive a left-right mirror, and the evidence (see tune/flip.py)."""

    invariant: bool
    accuracy_plain: float
    accuracy_mirrored: float
    rows: int
    how: str  # "measured", or "--flip on/off"
    # the measured model's validation accuracy with its plain and mirrored predictions averaged
    accuracy_averaged: float = float("nan")


@dataclass(frozen=True)
class Estimate:
    """What the run says of the submission's accuracy: the rows it rests on and its 95% interval
    (Wilson's, for a proportion of ``rows`` independent rows). ``scored_on``: ``holdout`` (rows
    that chose nothing: honest) or ``validation`` (rows that chose something: optimistic).

    ``test_low``-``test_high``: where the score on the ``test_rows`` test images should fall, 95%
    of the time (a prediction interval: the test set is a sample of its own, so its score
    scatters around the accuracy by its own rows too). In the suite at 900 s, digits28 scored
    1.0000 on 2,000 sealed rows, above the accuracy's interval (0.9978-0.9995 on 6,000
    out-of-fold rows) but inside this one."""

    accuracy: float
    rows: int
    scored_on: str
    low: float
    high: float
    test_rows: int = 0
    test_low: float | None = None
    test_high: float | None = None

    @classmethod
    def of(cls, accuracy: float, rows: int, scored_on: str, test_rows: int = 0) -> Estimate:
        z = 1.959964
        n = max(rows, 1)
        centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
        half = z * ((accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
        low, high = max(0.0, centre - half), min(1.0, centre + half)
        if test_rows <= 0:
            return cls(accuracy, rows, scored_on, low, high)
        # both samples' variances, at Agresti-Coull's p (2 successes and 2 failures added), so
        # an accuracy of 1.0 on few rows still gets a width
        p = (accuracy * n + 2) / (n + 4)
        spread = z * (p * (1 - p) * (1 / n + 1 / test_rows)) ** 0.5
        return cls(accuracy, rows, scored_on, low, high, test_rows,
                   max(0.0, accuracy - spread), min(1.0, accuracy + spread))  # fmt: skip

    def for_test(self, test_rows: int) -> Estimate:
        """This estimate with the interval of the score on ``test_rows`` test images."""
        return Estimate.of(self.accuracy, self.rows, self.scored_on, test_rows)

    def text(self) -> str:
        out = (
            f"{self.accuracy:.4f} (95% interval {self.low:.4f}-{self.high:.4f}) on "
            f"{self.rows} {self.scored_on} rows"
        )
        if self.test_rows and self.test_low is not None:
            out += (f"; the score on the {self.test_rows} test images should fall in "
                    f"{self.test_low:.4f}-{self.test_high:.4f}")  # fmt: skip
        return out


@dataclass(frozen=True)
class FinalFitRecord:
    """The best configuration trained again on the whole training split for as many epochs as
    the budget holds, scored at its last epoch on the whole holdout, which chose nothing: the
    honest estimate of what is submitted."""

    trial: int
    model: str
    epochs_run: int
    best_epoch: int
    seconds: float
    train_rows: int
    holdout_rows: int
    holdout_accuracy_plain: float  # the last epoch, no test-time augmentation
    holdout_accuracy_tta: float  # with the test-time views in use (= plain when none)
    holdout_accuracy: float  # what is submitted
    tta: bool  # one-pixel shifts at test time
    model_path: str
    settings: TrainSettings
    flip: bool = False  # mirrored views at test time
    model_artifact: str | None = None  # with --artifact-store
    history_artifact: str | None = None
    progress_rows: int | None = None  # holdout images behind each epoch's progress line
    started_from: str | None = None  # the trial's saved model whose weights it started from
    predict_kept_s: float | None = None  # seconds the fit left for predicting (the formula)
    predict_used_s: float | None = None  # seconds predicting the holdout and the test took
    images_per_second: float | None = None  # the fit's measured training pace
    last_learning_rate: float | None = None  # of its last epoch (the cosine's end)


@dataclass(frozen=True)
class FoldsRecord:
    """What the k-fold final stage trained and measured (pipeline.tune.kfold)."""

    k: int
    trial: int
    model: str
    rows: int  # labelled rows: each is out-of-fold once
    out_of_fold_accuracy: float
    fold_accuracies: list[float]
    epochs: list[int]  # per fold (1 for a classical entry)
    seconds: float
    members: list[int] = field(default_factory=list)  # the trials trained per fold, averaged
    member_accuracies: list[float] = field(default_factory=list)  # out-of-fold, each alone


@dataclass(frozen=True)
class TuneResult:
    """What the tune command submitted and why (``tune/best.json``)."""

    study: str
    trial: int
    ensemble: list[int]
    model: str | None
    params: dict[str, Any]
    hp: dict[str, Any]
    settings: TrainSettings | None
    holdout_accuracy: float | None  # None when the holdout trained what is submitted (k-fold)
    best_trial_validation_accuracy: float = field(metadata=was("best_trial_holdout_accuracy"))
    # the trials' validation accuracy of the averaged top-k probabilities, by k
    ensemble_validation_accuracy: dict[str, float] = field(
        metadata=was("ensemble_holdout_accuracy")
    )
    tta: bool
    final_fit: FinalFitRecord | None
    model_path: str | None
    model_paths: list[str]
    options: dict[str, Any]
    flip: FlipDecision | None = None
    honest: bool = False  # the estimate is on rows that chose nothing
    search_seconds: float | None = None
    final_seconds: float | None = None
    estimate: Estimate | None = None
    # the left-right mirror among the test-time views, and why (pipeline.tune.decide.test_mirror)
    mirror_at_test: bool | None = None
    mirror_at_test_why: str | None = None
    kfold: FoldsRecord | None = None  # the k-fold final stage, where it trained what is submitted


# ---------------------------------------------------------------------------------------------
# The one pair of functions per medium


def to_dict(record: Any) -> dict[str, Any]:
    """A record as plain JSON values; ``FLAT`` fields merged into the parent."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        if f.metadata.get("flat"):
            if value is not None:
                out.update(to_dict(value))
        else:
            out[f.name] = _plain(value)
    return out


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """The record of type ``cls`` from :func:`to_dict`'s output; unknown keys are ignored,
    missing ones take the field's default."""
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        inner = _record_type(hints[f.name])
        if f.metadata.get("flat"):
            names = {g.name for g in dataclasses.fields(inner)}
            needed = {g.name for g in dataclasses.fields(inner) if _required(g)}
            if needed <= set(data):
                kwargs[f.name] = from_dict(inner, {k: v for k, v in data.items() if k in names})
        elif f.name in data or f.metadata.get("was") in data:
            value = data[f.name] if f.name in data else data[f.metadata["was"]]
            if inner is not None and isinstance(value, dict):
                value = from_dict(inner, value)
            kwargs[f.name] = value
    return cls(**kwargs)


def save_json(path: Path, record: Any) -> None:
    """Write a record as JSON, atomically."""
    text = json.dumps(to_dict(record), indent=2, sort_keys=True, default=str) + "\n"
    atomic_write_text(path, text)


def load_json(cls: type[T], path: Path) -> T:
    return from_dict(cls, json.loads(Path(path).read_text()))


def write_trial(trial, record: TrialRecord) -> None:
    """Store the record's known fields as the trial's Optuna user attributes."""
    for key, value in to_dict(record).items():
        # identity, not ``in``: 0 == False, and a metric of 0.0 (a diverged trial's train
        # accuracy) dropped that way took every metric of the trial with it
        if not (value is None or value is False or (isinstance(value, dict) and not value)):
            trial.set_user_attr(key, value)


def read_trial(trial) -> TrialRecord:
    """The record of a trial (a ``FrozenTrial`` or a running ``Trial``)."""
    return from_dict(TrialRecord, dict(trial.user_attrs))


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _record_type(hint: Any) -> type | None:
    """The dataclass in a field's type (``X`` or ``X | None``), else None."""
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for a in args:
        if dataclasses.is_dataclass(a):
            return a
    return None


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
