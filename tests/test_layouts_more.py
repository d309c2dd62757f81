"""More competition layouts: one-column pixel strings (FER2013) and RGB rows."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from pipeline import cli
from pipeline.data import load_competition


def test_pixel_strings_are_read_as_images(layout_dir):
    folder = layout_dir("fer", n_train=30, n_test=8, side=6)
    ds = load_competition(folder)
    lay = ds.layout
    assert ds.image_shape == (6, 6, 1) and lay.pixel_format == "string"
    assert lay.label_column == "emotion" and lay.id_column == "id"
    assert lay.ignored_columns == ["Usage"]  # not a feature
    assert ds.x_train.shape == (30, 6, 6, 1) and ds.x_test.shape == (8, 6, 6, 1)
    train = pd.read_csv(folder / "train.csv")
    first = np.array(train["pixels"][0].split(), dtype=np.uint8).reshape(6, 6)
    np.testing.assert_array_equal(ds.x_train[0, :, :, 0], first)
    # every labelled row trains, whatever its Usage
    assert len(ds.y_train) == 30 and lay.submission_columns == ["id", "emotion"]


def test_comma_separated_pixel_strings(layout_dir):
    folder = layout_dir("fer", n_train=20, n_test=5, side=4)
    for name in ("train.csv", "test.csv"):
        df = pd.read_csv(folder / name)
        df["pixels"] = df["pixels"].str.replace(" ", ",")
        df.to_csv(folder / name, index=False)
    ds = load_competition(folder)
    assert ds.image_shape == (4, 4, 1) and ds.x_train.max() > 0


def test_integer_tokenizer_agrees_with_the_general_parser():
    from pipeline.data import pixels as P

    rng = np.random.default_rng(3)
    values = rng.integers(0, 256, size=(P.ROWS_PER_CHUNK + 37, 12))  # more than one chunk
    values[0, :3] = [0, 7, 255]
    cells = [" ".join(map(str, r)) for r in values]
    cells[1] = "  " + cells[1].replace(" ", ",") + " "  # commas, leading and trailing spaces
    cells[2] = cells[2].replace(" ", "   ")
    fast, n = P.parse_pixel_strings(pd.Series(cells), "pixels", "train.csv")
    assert n == 12 and fast.dtype.kind == "u"
    np.testing.assert_array_equal(fast, values)
    # decimals go to pandas' parser: same numbers
    decimals = pd.Series([" ".join(f"{v / 255:.4f}" for v in r) for r in values[:5]])
    slow, _ = P.parse_pixel_strings(decimals, "pixels", "train.csv")
    assert slow.dtype.kind == "f"
    np.testing.assert_allclose(slow * 255, values[:5], atol=0.02)


def _break(folder, how):
    df = pd.read_csv(folder / "train.csv")
    cells = df["pixels"].str.split()
    if how == "missing value":
        df.loc[3, "pixels"] = " ".join(cells[3][:-1])
    elif how == "a letter":
        df.loc[3, "pixels"] = " ".join(["12", "x7", *cells[3][2:]])
    elif how == "one value too many":
        df.loc[3, "pixels"] = " ".join([*cells[3], "5"])
    elif how == "NaN value":
        df.loc[3, "pixels"] = " ".join(["nan", *cells[3][1:]])
    elif how == "value above 255":
        df.loc[3, "pixels"] = " ".join(["300", *cells[3][1:]])
    df.to_csv(folder / "train.csv", index=False)


BAD = {
    "missing value": r"train\.csv: row 4 \(line 5\), column 'pixels': 35 pixel values, expected 36",
    "a letter": r"train\.csv: row 4 \(line 5\), column 'pixels': non-numeric pixel 'x7'",
    "one value too many": r"row 4 \(line 5\), column 'pixels': 37 pixel values, expected 36",
    "NaN value": r"row 4 \(line 5\), column 'pixels': non-numeric pixel 'nan'",
    "value above 255": r"pixel 300(\.0)? above 255 in column 'pixels \(value 1\)', row 4",
}


@pytest.mark.parametrize("how", sorted(BAD))
def test_bad_pixel_strings_are_one_line(layout_dir, tmp_path, capsys, how):
    folder = layout_dir("fer", n_train=30, n_test=8, side=6)
    _break(folder, how)
    code = cli.main(["inspect", "--data", str(folder), "--artifacts", str(tmp_path / "a")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert re.search(BAD[how], err[0]), err[0]


def test_a_fer_sized_row_count_infers_48x48(layout_dir):
    ds = load_competition(layout_dir("fer", n_train=12, n_test=3, side=48, classes=(0, 1, 2, 3)))
    assert ds.image_shape == (48, 48, 1)


def test_rgb_rows_are_channel_last_images(layout_dir):
    folder = layout_dir("rgb", n_train=20, n_test=4, side=32)
    ds = load_competition(folder)
    assert ds.image_shape == (32, 32, 3)
    train = pd.read_csv(folder / "train.csv")
    np.testing.assert_array_equal(ds.x_train[0].ravel(), train.iloc[0, 1:].to_numpy())
    # other sizes need --image-shape (192 values: 8x8x3 or 8x24x1 cannot be told apart)
    small = layout_dir("rgb", name="rgb8", n_train=20, n_test=4, side=8)
    assert load_competition(small, image_shape=(8, 8, 3)).image_shape == (8, 8, 3)
