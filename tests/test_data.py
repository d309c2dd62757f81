"""Foundation: finding files, inferring layouts, labels, holdout split, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from conftest import DEMO, ROOT, write_layout

from pipeline import cli
from pipeline.data import find_files, holdout_split, load_competition, resolve_data_dir
from pipeline.errors import PipelineError

EXPECTED = {
    # style: (label column, id column, ids_from, submission columns)
    "ece657a": ("Label", "Id", "test", ["Id", "Label"]),
    "digit": ("label", "ImageId", "sample_submission", ["ImageId", "Label"]),
    "kannada": ("label", "id", "test", ["id", "label"]),
    "sign": ("label", "id", "test", ["id", "label"]),
}


@pytest.mark.parametrize("compress", ["", "gz", "zip", "bundle"])
@pytest.mark.parametrize("style", sorted(EXPECTED))
def test_layouts_are_inferred(layout_dir, style, compress):
    folder = layout_dir(style, compress=compress, n_train=30, n_test=7, side=5)
    ds = load_competition(folder)
    label, id_col, ids_from, columns = EXPECTED[style]
    lay = ds.layout
    assert (lay.label_column, lay.id_column, lay.ids_from) == (label, id_col, ids_from)
    assert lay.submission_columns == columns
    assert lay.image_shape == (5, 5, 1)
    assert (lay.n_train, lay.n_test) == (30, 7)
    assert lay.classes == [0, 1, 2]
    assert lay.pixel_scale == "0-255"
    assert ds.x_train.shape == (30, 5, 5, 1) and ds.x_train.dtype == np.uint8
    assert ds.x_test.shape == (7, 5, 5, 1)


def test_pixels_land_in_row_major_order(layout_dir):
    folder = layout_dir("digit", n_train=6, n_test=2, side=3)
    raw = pd.read_csv(folder / "train.csv")
    ds = load_competition(folder)
    np.testing.assert_array_equal(ds.x_train[2, :, :, 0].ravel(), raw.iloc[2, 1:].to_numpy())


def test_demo_competition_is_understood(tmp_path, monkeypatch):
    ds = load_competition(DEMO, cache_dir=tmp_path)
    lay = ds.layout
    assert lay.competition == "fashion-mnist"
    assert (lay.n_train, lay.n_test) == (60000, 10000)
    assert lay.image_shape == (28, 28, 1)
    assert lay.classes == list(range(10))
    assert (lay.label_column, lay.id_column, lay.ids_from) == ("Label", "Id", "test")
    assert lay.train_file.endswith("train.csv.gz") and lay.test_file.endswith("testX.csv.gz")
    # the second load comes from the joblib cache: nothing is parsed again
    from pipeline.data import dataset

    def parse_again(*args, **kwargs):
        raise AssertionError("parsed again: the cache was not used")

    monkeypatch.setattr(dataset, "parse_competition", parse_again)
    again = load_competition(DEMO, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("dataset-*.joblib"))) == 1
    np.testing.assert_array_equal(again.x_test, ds.x_test)


def test_cache_is_invalidated_when_a_file_changes(layout_dir, tmp_path):
    folder = layout_dir("kannada", n_train=20, n_test=4)
    cache = tmp_path / "cache"
    first = load_competition(folder, cache_dir=cache)
    df = pd.read_csv(folder / "train.csv")
    changed = (int(first.x_train[0, 0, 0, 0]) + 7) % 256
    df.loc[0, "pixel0"] = changed
    df.to_csv(folder / "train.csv", index=False)
    later = time.time_ns() + 10**9
    os.utime(folder / "train.csv", ns=(later, later))
    second = load_competition(folder, cache_dir=cache)
    assert second.x_train[0, 0, 0, 0] == changed
    assert len(list(cache.glob("dataset-*.joblib"))) == 2


def test_string_labels_and_gaps_round_trip(layout_dir):
    from pipeline.submission import build_submission

    folder = layout_dir("sign", classes=(0, 3, 10, 24), n_train=40, n_test=8)
    ds = load_competition(folder)
    assert ds.layout.classes == [0, 3, 10, 24]
    assert set(ds.y_train) == {0, 1, 2, 3}
    sub = build_submission(ds, np.array([0, 1, 2, 3, 3, 2, 1, 0]))
    assert list(sub["label"]) == [0, 3, 10, 24, 24, 10, 3, 0]

    folder = layout_dir("kannada", name="str", classes=("cat", "dog", "ant"), n_train=30, n_test=4)
    ds = load_competition(folder)
    assert ds.layout.classes == ["ant", "cat", "dog"]
    probs = np.eye(3)[[2, 0, 1, 1]]
    sub = build_submission(ds, probs)
    # kannada's sample submission lists ids in reverse test order
    assert list(sub["id"]) == ["3", "2", "1", "0"]
    assert list(sub["label"]) == ["cat", "cat", "ant", "dog"]


def test_float_pixels_in_unit_interval(layout_dir):
    folder = layout_dir("digit", n_train=20, n_test=4, side=4)
    for name in ("train.csv", "test.csv"):
        df = pd.read_csv(folder / name)
        pix = [c for c in df.columns if c.startswith("pixel")]
        df[pix] = df[pix] / 255.0
        df.to_csv(folder / name, index=False)
    ds = load_competition(folder)
    assert ds.layout.pixel_scale == "0-1"
    raw = pd.read_csv(folder / "train.csv")
    expected = np.rint(raw.iloc[0, 1:].to_numpy(dtype=float) * 255)
    np.testing.assert_array_equal(ds.x_train[0].ravel(), expected)


@pytest.mark.parametrize(
    "top, scale",
    [(1.0, "0-1"), (16, "0-16"), (255, "0-255"), (4095, "0-4095"), (1, "0-1")],
)
def test_the_pixel_scale_is_inferred_and_every_scale_reads_as_0_255(layout_dir, top, scale):
    """0-1 floats, 0-16 (scikit-learn's digits), 0-255, 12-bit and binary 0/1 pixels: the scale
    is the data's, saved in the layout, and the images come out in the same 0-255 range."""
    folder = layout_dir("digit", n_train=20, n_test=4, side=4)
    rng = np.random.default_rng(3)
    for name in ("train.csv", "test.csv"):
        df = pd.read_csv(folder / name)
        pix = [c for c in df.columns if c.startswith("pixel")]
        if isinstance(top, float):
            df[pix] = rng.random((len(df), len(pix)))
        else:
            df[pix] = rng.integers(0, top + 1, size=(len(df), len(pix)))
        df.loc[0, pix[0]] = top  # the top is reached (and the bottom: rows are random)
        df.to_csv(folder / name, index=False)
    ds = load_competition(folder)
    assert ds.layout.pixel_scale == scale
    assert scale in ds.layout.summary()
    raw = pd.read_csv(folder / "train.csv").iloc[:, 1:].to_numpy(dtype=float)
    expected = np.rint(raw * 255.0 / top).astype(np.uint8)
    np.testing.assert_array_equal(ds.x_train.reshape(len(raw), -1), expected)
    assert ds.x_train.max() == 255


def test_a_lone_pixel_above_the_scale_is_an_error_not_a_new_scale(layout_dir):
    folder = layout_dir("digit", n_train=20, n_test=4, side=4)
    df = pd.read_csv(folder / "test.csv")
    pix = [c for c in df.columns if c.startswith("pixel")]
    df[pix] = df[pix] % 17
    df.to_csv(folder / "test.csv", index=False)
    train = pd.read_csv(folder / "train.csv")
    train[pix] = train[pix] % 17
    train.loc[2, "pixel5"] = 200
    train.to_csv(folder / "train.csv", index=False)
    with pytest.raises(PipelineError, match=r"train\.csv: pixel 200 above 16 in column 'pixel5', "
                       r"row 3 \(line 4\); every other pixel is in 0-16"):  # fmt: skip
        load_competition(folder)


def test_rgb_3072_is_32x32x3_and_channels_first(layout_dir):
    folder = layout_dir("kannada", n_train=12, n_test=3, side=1)  # placeholder, rewritten below
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(12, 3072))
    train = pd.DataFrame(x, columns=[f"p{i}" for i in range(3072)])
    train.insert(0, "label", np.arange(12) % 3)
    test = train.drop(columns="label").iloc[:3].copy()
    test.insert(0, "id", range(3))
    train.to_csv(folder / "train.csv", index=False)
    test.to_csv(folder / "test.csv", index=False)
    pd.DataFrame({"id": range(3), "label": 0}).to_csv(folder / "sample_submission.csv", index=False)
    ds = load_competition(folder)
    assert ds.layout.image_shape == (32, 32, 3)
    assert list(ds.x_train[0, 0, 0]) == list(x[0, :3])  # channel-last: R,G,B adjacent
    planar = load_competition(folder, channels_first=True)
    assert list(planar.x_train[0, 0, 0]) == [x[0, 0], x[0, 1024], x[0, 2048]]


def test_holdout_split_is_stratified_and_reproducible():
    y = np.repeat(np.arange(5), [100, 200, 300, 150, 250])
    a_train, a_val = holdout_split(y, seed=7)
    b_train, b_val = holdout_split(y, seed=7)
    c_train, c_val = holdout_split(y, seed=8)
    np.testing.assert_array_equal(a_val, b_val)
    assert not np.array_equal(a_val, c_val)
    assert len(a_val) == 200 and len(set(a_train) | set(a_val)) == len(y)
    assert not set(a_train) & set(a_val)
    np.testing.assert_array_equal(np.bincount(y[a_val]), np.bincount(y) // 5)


def test_data_dir_precedence(layout_dir, tmp_path, monkeypatch):
    from pipeline import runtime

    a = layout_dir("digit", name="a")
    b = layout_dir("digit", name="b")
    monkeypatch.setenv("PIPELINE_DATA", str(b))
    assert resolve_data_dir(a) == a
    assert resolve_data_dir(None) == b
    monkeypatch.delenv("PIPELINE_DATA")

    # inside a kernel: the folder under /kaggle/input that holds a train and a test CSV
    kroot = tmp_path / "kaggle"
    nested = write_layout(kroot / "input" / "competitions" / "my-comp", "kannada")
    monkeypatch.setenv("PIPELINE_KAGGLE_ROOT", str(kroot))
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    assert resolve_data_dir(None) == nested
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE")

    # locally: input/<competition>, else the only folder under input/, else an error listing them
    inp = tmp_path / "input"
    monkeypatch.setattr(runtime, "default_input_dir", lambda: inp)
    write_layout(inp / "one", "digit")
    assert resolve_data_dir(None) == inp / "one"
    assert resolve_data_dir(None, "other") == inp / "other"
    write_layout(inp / "two", "digit")
    with pytest.raises(PipelineError, match="several competitions.*one, two"):
        resolve_data_dir(None)


def test_find_files_prefers_plain_files(layout_dir):
    folder = layout_dir("digit")
    (folder / "extra_notes.csv").write_text("a,b\n1,2\n")
    files = find_files(folder)
    assert files.train.name == "train.csv" and files.test.name == "test.csv"
    assert files.sample_submission.name == "sample_submission.csv"


# ---------------------------------------------------------------------------------------------
# Bad input: one line on stderr naming the file and the place, exit 2, nothing written


def _run_cli(args, capsys):
    code = cli.main(args)
    out, err = capsys.readouterr()
    return code, out, err


def _corrupt(folder, how):
    train = folder / "train.csv"
    test = folder / "test.csv"
    df = pd.read_csv(train)
    if how == "missing train":
        train.unlink()
    elif how == "missing test":
        test.unlink()
    elif how == "empty file":
        test.write_text("")
    elif how == "non-numeric pixel":
        df["pixel3"] = df["pixel3"].astype(object)
        df.loc[5, "pixel3"] = "abc"
        df.to_csv(train, index=False)
    elif how == "NaN pixel":
        df["pixel3"] = df["pixel3"].astype(float)
        df.loc[5, "pixel3"] = np.nan
        df.to_csv(train, index=False)
    elif how == "pixel above 255":
        df.loc[5, "pixel3"] = 300
        df.to_csv(train, index=False)
    elif how == "float pixel above 1":
        pix = [c for c in df.columns if c.startswith("pixel")]
        df[pix] = df[pix] / 255.0
        df.loc[5, "pixel3"] = 1.5
        df.to_csv(train, index=False)
        t = pd.read_csv(test)
        t[pix] = t[pix] / 255.0
        t.to_csv(test, index=False)
    elif how == "different pixel columns":
        t = pd.read_csv(test).rename(columns={"pixel3": "pixelX"})
        t.to_csv(test, index=False)
    elif how == "missing label column":
        df.drop(columns="label").to_csv(train, index=False)
    elif how == "single class":
        df["label"] = 1
        df.to_csv(train, index=False)
    elif how == "duplicated ids":
        t = pd.read_csv(test)
        t.loc[3, "id"] = t.loc[2, "id"]
        t.to_csv(test, index=False)
    elif how == "sample row count":
        s = pd.read_csv(folder / "sample_submission.csv")
        s.iloc[:-1].to_csv(folder / "sample_submission.csv", index=False)
    elif how == "corrupt zip":
        train.unlink()
        (folder / "train.csv.zip").write_bytes(b"PK\x03\x04 this is not really a zip")
    elif how == "not an image":
        df.drop(columns="pixel3").to_csv(train, index=False)
        pd.read_csv(test).drop(columns="pixel3").to_csv(test, index=False)


BAD = {
    "missing train": r"no train file",
    "missing test": r"no test file",
    "empty file": r"test\.csv: file is empty",
    "non-numeric pixel": r"train\.csv: non-numeric pixel 'abc' in column 'pixel3', row 6",
    "NaN pixel": r"train\.csv: missing \(NaN\) pixel in column 'pixel3', row 6",
    "pixel above 255": r"train\.csv: pixel 300 above 255 in column 'pixel3', row 6",
    "float pixel above 1": r"train\.csv: pixel 1\.5 above 1 in column 'pixel3', row 6",
    "different pixel columns": r"test\.csv: pixel columns differ",
    "missing label column": r"train\.csv: missing label column",
    "single class": r"train\.csv: column 'label' has a single class",
    "duplicated ids": r"test\.csv: duplicated id '\d+' in column 'id', row 4",
    "sample row count": r"sample_submission\.csv: 11 rows but the test file has 12",
    "corrupt zip": r"train\.csv\.zip: corrupt zip",
    "not an image": r"train\.csv: 15 pixel columns is not a square image; pass --image-shape",
}


@pytest.mark.parametrize("how", sorted(BAD))
def test_bad_input_is_one_clear_line(layout_dir, tmp_path, capsys, how):
    folder = layout_dir("kannada", n_train=30, n_test=12, side=4)
    _corrupt(folder, how)
    subs = tmp_path / "subs"
    code, out, err = _run_cli(
        [
            "inspect",
            "--data",
            str(folder),
            "--artifacts",
            str(tmp_path / "art"),
            "--submissions",
            str(subs),
        ],
        capsys,
    )
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    import re

    assert re.search(BAD[how], lines[0]), lines[0]
    assert "Traceback" not in err
    assert not subs.exists()


def test_bad_input_exit_status_from_a_real_process(layout_dir):
    folder = layout_dir("digit")
    (folder / "test.csv").unlink()
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "inspect", "--data", str(folder)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "no test file" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_inspect_prints_the_layout_json(layout_dir, tmp_path, capsys):
    folder = layout_dir("digit", n_train=25, n_test=5, side=6)
    code, out, _ = _run_cli(
        ["inspect", "--data", str(folder), "--artifacts", str(tmp_path / "a")], capsys
    )
    assert code == 0
    info = json.loads(out)
    for key in (
        "train_file",
        "test_file",
        "sample_submission_file",
        "n_train",
        "n_test",
        "image_shape",
        "classes",
        "label_column",
        "id_column",
        "ids_from",
        "pixel_scale",
    ):
        assert key in info
    assert info["image_shape"] == [6, 6, 1]
    assert info["ids_from"] == "sample_submission" and info["id_column"] == "ImageId"
    assert (info["n_train"], info["n_test"]) == (25, 5)


def test_single_row_class_is_a_clear_error(layout_dir):
    import pandas as pd

    from pipeline.data import holdout, load_competition

    folder = layout_dir("digit", n_train=40, classes=(0, 1, 2))
    train = pd.read_csv(folder / "train.csv")
    train.loc[0, "label"] = 7  # label 7 now has a single row
    train.to_csv(folder / "train.csv", index=False)
    ds = load_competition(folder)
    with pytest.raises(PipelineError, match=r"label 7 has 1 labelled row"):
        holdout(ds, 42)
    with pytest.raises(PipelineError, match="raise --limit"):
        holdout(load_competition(layout_dir("digit", name="d2", n_train=40)), 42, limit=4)
