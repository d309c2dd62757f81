"""Submission writing: the sample submission's columns, order and ids; validation; atomicity."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.data import load_competition
from pipeline.errors import PipelineError
from pipeline.submission import (
    build_submission,
    default_path,
    read_submission,
    validate_submission,
    write_submission,
)


@pytest.mark.parametrize("style", ["ece657a", "digit", "kannada", "sign"])
def test_written_submission_matches_sample(layout_dir, tmp_path, style):
    folder = layout_dir(style, n_train=30, n_test=9)
    ds = load_competition(folder)
    preds = np.arange(9) % 3
    path = write_submission(ds, preds, tmp_path / "out" / "s.csv", meta={"model": "m"})
    written = pd.read_csv(path, dtype=str)
    sample = pd.read_csv(next(folder.glob("*sample_submission*")), dtype=str)
    assert list(written.columns) == list(sample.columns)
    assert list(written.iloc[:, 0]) == list(sample.iloc[:, 0])  # same ids, same order
    # each id gets the prediction of its own test row
    test = pd.read_csv(next(p for p in folder.glob("*test*")), dtype=str)
    if style == "digit":
        expected = {str(i + 1): str(p) for i, p in enumerate(preds)}
    else:
        id_col = ds.layout.id_column
        expected = dict(zip(test[id_col], map(str, preds), strict=True))
    assert dict(zip(written.iloc[:, 0], written.iloc[:, 1], strict=True)) == expected
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["model"] == "m" and meta["competition"] == ds.competition


def test_default_path_names_competition_time_and_model(tmp_path):
    p = default_path(tmp_path, "fashion-mnist", "cnn7 best")
    assert p.parent == tmp_path
    assert p.name.startswith("fashion-mnist-") and p.name.endswith("-cnn7_best.csv")


def test_failed_write_leaves_no_file(layout_dir, tmp_path, monkeypatch):
    ds = load_competition(layout_dir("kannada", n_train=20, n_test=5))
    target = tmp_path / "subs" / "x.csv"

    def boom(self, path, **kw):
        with open(path, "w") as fh:
            fh.write("Id,La")  # half a file, then the disk "fills"
        raise OSError("No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", boom)
    with pytest.raises(OSError):
        write_submission(ds, np.zeros(5, dtype=int), target)
    assert not target.exists()
    assert list((tmp_path / "subs").iterdir()) == []


def test_wrong_prediction_count_is_refused_before_writing(layout_dir, tmp_path):
    ds = load_competition(layout_dir("digit", n_train=20, n_test=5))
    with pytest.raises(PipelineError, match="4 predictions for 5 test rows"):
        write_submission(ds, np.zeros(4, dtype=int), tmp_path / "x.csv")
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda df: df.iloc[:-1], "4 rows but the test set has 5"),
        (lambda df: df.rename(columns={"label": "Label"}), "columns"),
        (lambda df: df.assign(label=["7"] + list(df["label"][1:])), "label '7' in row 1"),
        (lambda df: df.assign(id=[df["id"][1]] + list(df["id"][1:])), "duplicated id"),
        (lambda df: df.assign(id=["999"] + list(df["id"][1:])), "not test ids"),
        (lambda df: df.assign(label=[""] + list(df["label"][1:])), "empty value in row 1"),
    ],
)
def test_validation_refuses_what_kaggle_would_reject(layout_dir, tmp_path, mutate, message):
    ds = load_competition(layout_dir("kannada", n_train=20, n_test=5))
    good = build_submission(ds, np.zeros(5, dtype=int)).astype(str)
    validate_submission(good, ds.layout, ds.test_ids, "ok.csv")
    bad = mutate(good.copy())
    path = tmp_path / "bad.csv"
    bad.to_csv(path, index=False)
    with pytest.raises(PipelineError, match=message):
        validate_submission(read_submission(path), ds.layout, ds.test_ids, str(path))
