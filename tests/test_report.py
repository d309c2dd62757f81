"""report: tables, plots and index.html from a tiny train run and a 3-trial study."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import cli
from pipeline.report.figures import class_names

pytestmark = pytest.mark.slow

COLUMNS = [
    "id",
    "kind",
    "model",
    "train_accuracy",
    "train_loss",
    "val_accuracy",
    "val_loss",
    "scored_on",
    "seconds",
    "params",
    "epochs",
    "optimizer",
    "batch_size",
    "learning_rate",
    "augment",
]


def _common(demo_small, tmp_path):
    return ["--data", str(demo_small), "--artifacts", str(tmp_path / "art"),
            "--submissions", str(tmp_path / "subs")]  # fmt: skip


def _common_data(reported) -> str:
    common = reported[1]
    return common[common.index("--data") + 1]


def _png_ok(path: Path) -> None:
    import matplotlib.image as mpimg

    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100, path
    assert float(np.std(img[..., :3])) > 0.01, f"{path} looks blank"


@pytest.fixture(scope="module")
def reported(demo_small, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("report")
    common = _common(demo_small, tmp_path)
    assert cli.main(["train", "--model", "cnn1", "--epochs", "2", "--limit", "500", *common]) == 0
    tune = ["tune", "--models", "cnn1,lenet5_wide", "--trials", "3", "--max-epochs", "2"]
    tune += ["--limit", "600", "--pruner", "none", "--timeout", "400", "--final", "trials", *common]
    assert cli.main(tune) == 0
    return tmp_path / "art" / "fashion-mnist", common


def test_train_and_tune_leave_a_full_report(reported):
    comp, _ = reported
    out = comp / "report"
    models = pd.read_csv(out / "models.csv")
    assert list(models.columns) == COLUMNS
    assert (models["kind"] == "run").sum() == 1 and (models["kind"] == "trial").sum() == 3
    # the run's row matches its metrics.json
    run_dir = next((comp / "runs").iterdir())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    row = models[models["kind"] == "run"].iloc[0]
    assert row["id"] == f"run-{run_dir.name}" and row["model"] == "cnn1"
    for col, key in [("val_accuracy", "val_accuracy"), ("train_loss", "train_loss"),
                     ("params", "params"), ("epochs", "epochs_run")]:  # fmt: skip
        assert row[col] == pytest.approx(metrics[key]), col
    # the trials' rows match trials.csv
    trials = pd.read_csv(comp / "tune" / "trials.csv")
    trials = trials[trials["state"] == "COMPLETE"].set_index("number")
    for _, r in models[models["kind"] == "trial"].iterrows():
        t = trials.loc[int(r["id"].split("-")[1])]
        assert r["model"] == t["model"]
        assert r["val_accuracy"] == pytest.approx(t["val_accuracy"])
        assert r["train_accuracy"] == pytest.approx(t["train_accuracy"])
        assert r["params"] == t["param_count"] and r["batch_size"] == t["batch_size"]
    assert list(models["val_accuracy"]) == sorted(models["val_accuracy"], reverse=True)
    # each score names the rows it rests on
    scored = models.groupby("kind")["scored_on"].unique()
    assert list(scored["trial"]) == ["validation (the trials' own rows)"]
    assert list(scored["run"]) == ["validation (chose the kept epoch)"]
    md = (out / "models.md").read_text().splitlines()
    assert md[0].startswith("| id | kind | model") and len(md) == 2 + len(models)

    for e in models["id"]:
        hist = pd.read_csv(out / e / "history.csv")
        assert {"epoch", "loss", "accuracy", "val_loss", "val_accuracy"} <= set(hist.columns)
        assert len(hist) == 2
        _png_ok(out / e / "curves.png")
    for name in ("confusion.png", "confusion_normalized.png", "mistakes.png",
                 "study_history.png", "study_importances.png", "study_intermediate.png",
                 "study_architectures.png"):  # fmt: skip
        _png_ok(out / name)
    cm = pd.read_csv(out / "confusion.csv", index_col=0)
    assert cm.shape == (10, 10) and list(cm.columns)[0] == "T-shirt/top"
    report = pd.read_csv(out / "classification.csv", index_col=0)
    assert {"precision", "recall", "f1-score", "support"} <= set(report.columns)
    assert (
        "weighted avg" in report.index and report.loc["weighted avg", "support"] == cm.values.sum()
    )


def test_index_html_references_only_existing_files(reported):
    comp, _ = reported
    out = comp / "report"
    page = (out / "index.html").read_text()
    refs = re.findall(r"(?:src|href)='([^']+)'", page)
    assert len(refs) >= 10
    for ref in refs:
        assert not ref.startswith(("http", "/")), ref
        assert (out / ref).is_file(), ref
    assert "<script" not in page
    assert "all models" in page and "best model on the holdout" in page


def test_report_command_on_one_run_and_errors(reported, capsys, tmp_path):
    import shutil

    shared, _ = reported  # the module's report stays as it is: this one writes a copy's
    comp = tmp_path / "art" / shared.name
    shutil.copytree(shared, comp)
    common = ["--data", _common_data(reported), "--artifacts", str(tmp_path / "art"),
              "--submissions", str(tmp_path / "subs")]  # fmt: skip
    run_id = next((comp / "runs").iterdir()).name
    assert cli.main(["report", "--run", run_id, *common]) == 0
    assert capsys.readouterr().out.strip().endswith("index.html")
    models = pd.read_csv(comp / "report" / "models.csv")
    assert list(models["kind"]) == ["run"]
    assert cli.main(["report", "--run", "nope", *common]) == 2
    assert "no such run" in capsys.readouterr().err
    assert cli.main(["report", "--study", "nope", *common]) == 2
    assert "no study 'nope'" in capsys.readouterr().err


def test_class_names_only_for_known_index_labels():
    assert class_names("fashion-mnist", np.arange(10))[0] == "T-shirt/top"
    assert class_names("digit-recognizer", np.arange(10))[3] == "3"
    assert class_names("fashion-mnist", np.array(["a", "b"])) == ["a", "b"]
