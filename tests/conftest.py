"""Shared fixtures: tiny generated competitions in every supported layout, and demo slices."""

from __future__ import annotations

import gzip
import os
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "input" / "fashion-mnist"

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# CI sets this: a part of the machine a test needs (PostgreSQL's server binaries, the right to
# mount a read-only file system) missing is then a failure, not a skip
REQUIRE_ALL = os.environ.get("PIPELINE_TESTS_REQUIRE_ALL") == "1"


def unavailable(reason: str):
    """Skip a test for want of a part of the machine; fail instead under CI."""
    if REQUIRE_ALL:
        pytest.fail(f"{reason} (PIPELINE_TESTS_REQUIRE_ALL=1: CI must have it)")
    pytest.skip(reason)


def wait_for(condition, timeout: float = 300, every: float = 0.5, what: str = "the condition"):
    """Poll ``condition()`` until it returns something true (returned); fail after ``timeout``
    seconds, a generous limit on a busy 2-core machine, not a measurement."""
    deadline = time.monotonic() + timeout
    while True:
        got = condition()
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what} after {timeout:.0f} s")
        time.sleep(every)


def make_images(n: int, n_pixels: int, classes, rng: np.random.Generator):
    """Images whose brightness pattern depends on the class, so a model can learn them."""
    labels = np.array([classes[i % len(classes)] for i in range(n)], dtype=object)
    rng.shuffle(labels)
    idx = np.array([list(classes).index(lab) for lab in labels])
    base = rng.integers(0, 60, size=(n, n_pixels))
    band = (np.arange(n_pixels)[None, :] * len(classes) // n_pixels) == idx[:, None]
    pixels = np.clip(base + band * 180, 0, 255).astype(np.int64)
    return labels, pixels


def write_layout(
    folder: Path,
    style: str,
    n_train: int = 40,
    n_test: int = 12,
    side: int = 4,
    classes=(0, 1, 2),
    seed: int = 0,
    compress: str = "",
) -> Path:
    """Write a tiny competition in one of the four layouts of the foundation issue.

    ``compress``: "" (plain CSV), "gz" (each file .csv.gz), "zip" (each file .csv.zip) or
    "bundle" (one zip holding all files, as ``kaggle competitions download`` gives).
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    n_pix = side * side
    y, x = make_images(n_train, n_pix, classes, rng)
    _, xt = make_images(n_test, n_pix, classes, rng)
    if style == "ece657a":
        pix = [f"pixel{i}" for i in range(n_pix)]
        train = pd.DataFrame(x, columns=pix)
        train.insert(0, "Label", y)
        train.insert(0, "Id", np.arange(n_train))
        test = pd.DataFrame(xt, columns=pix)
        test.insert(0, "Id", np.arange(n_train, n_train + n_test))
        sample = pd.DataFrame({"Id": test["Id"], "Label": classes[0]})
        names = ("train.csv", "testX.csv", "sample_submission.csv")
    elif style == "digit":
        pix = [f"pixel{i}" for i in range(n_pix)]
        train = pd.DataFrame(x, columns=pix)
        train.insert(0, "label", y)
        test = pd.DataFrame(xt, columns=pix)
        sample = pd.DataFrame({"ImageId": np.arange(1, n_test + 1), "Label": classes[0]})
        names = ("train.csv", "test.csv", "sample_submission.csv")
    elif style == "kannada":
        pix = [f"pixel{i}" for i in range(n_pix)]
        train = pd.DataFrame(x, columns=pix)
        train.insert(0, "label", y)
        test = pd.DataFrame(xt, columns=pix)
        test.insert(0, "id", np.arange(n_test))
        # the sample submission lists the ids in another order than the test file
        sample = pd.DataFrame({"id": np.arange(n_test)[::-1], "label": classes[0]})
        names = ("train.csv", "test.csv", "sample_submission.csv")
    elif style == "fer":
        # FER2013: one "pixels" column of space-separated values, a Usage column in train
        strings = [" ".join(map(str, row)) for row in x]
        train = pd.DataFrame({"emotion": y, "pixels": strings})
        train["Usage"] = np.where(np.arange(n_train) % 5 == 0, "PublicTest", "Training")
        test = pd.DataFrame(
            {"id": np.arange(n_test), "pixels": [" ".join(map(str, r)) for r in xt]}
        )
        sample = pd.DataFrame({"id": test["id"], "emotion": classes[0]})
        names = ("train.csv", "test.csv", "sample_submission.csv")
    elif style == "rgb":
        # CIFAR-style rows: label, pixel0..pixel(3*side*side-1), channel-last
        y, x = make_images(n_train, n_pix * 3, classes, rng)
        _, xt = make_images(n_test, n_pix * 3, classes, rng)
        pix = [f"pixel{i}" for i in range(n_pix * 3)]
        train = pd.DataFrame(x, columns=pix)
        train.insert(0, "label", y)
        test = pd.DataFrame(xt, columns=pix)
        test.insert(0, "id", np.arange(n_test))
        sample = pd.DataFrame({"id": test["id"], "label": classes[0]})
        names = ("train.csv", "test.csv", "sample_submission.csv")
    elif style == "sign":
        pix = [f"pixel{i}" for i in range(1, n_pix + 1)]
        train = pd.DataFrame(x, columns=pix)
        train.insert(0, "label", y)
        test = pd.DataFrame(xt, columns=pix)
        test.insert(0, "id", np.arange(100, 100 + n_test))
        sample = pd.DataFrame({"id": test["id"], "label": classes[0]})
        names = ("sign_mnist_train.csv", "sign_mnist_test.csv", "sample_submission.csv")
    else:
        raise ValueError(style)

    frames = dict(zip(names, (train, test, sample), strict=True))
    if compress == "bundle":
        with zipfile.ZipFile(folder / "competition.zip", "w") as zf:
            for name, df in frames.items():
                zf.writestr(name, df.to_csv(index=False))
        return folder
    for name, df in frames.items():
        text = df.to_csv(index=False)
        if compress == "gz" and name != "sample_submission.csv":
            with gzip.open(folder / f"{name}.gz", "wt") as fh:
                fh.write(text)
        elif compress == "zip" and name != "sample_submission.csv":
            with zipfile.ZipFile(folder / f"{name}.zip", "w") as zf:
                zf.writestr(name, text)
        else:
            (folder / name).write_text(text)
    return folder


@pytest.fixture
def layout_dir(tmp_path):
    """Factory: ``layout_dir(style, **kw)`` writes a tiny competition and returns its folder."""

    def make(style: str, name: str | None = None, **kw) -> Path:
        return write_layout(tmp_path / (name or style), style, **kw)

    return make


def demo_slice(folder: Path, n_train: int, n_test: int) -> Path:
    """The first rows of the demo competition, in its own layout (ECE657A)."""
    folder.mkdir(parents=True, exist_ok=True)
    train = pd.read_csv(DEMO / "train.csv.gz", nrows=n_train)
    test = pd.read_csv(DEMO / "testX.csv.gz", nrows=n_test)
    sample = pd.read_csv(DEMO / "sample_submission.csv", nrows=n_test)
    train.to_csv(folder / "train.csv", index=False)
    test.to_csv(folder / "testX.csv", index=False)
    sample.to_csv(folder / "sample_submission.csv", index=False)
    return folder


@pytest.fixture(scope="session")
def demo_small(tmp_path_factory) -> Path:
    """2,000 labelled and 200 test rows of the demo competition."""
    return demo_slice(tmp_path_factory.mktemp("demo") / "fashion-mnist", 2000, 200)


@pytest.fixture
def copy_dir(tmp_path):
    def copy(src: Path, name: str) -> Path:
        dst = tmp_path / name
        shutil.copytree(src, dst)
        return dst

    return copy
