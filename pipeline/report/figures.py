"""The report's figures (matplotlib, Agg, written atomically) and readable class names."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.fsutil import atomic_path

# class names of the competitions whose labels are plain indices
CLASS_NAMES = {
    "fashion": [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],
}


def class_names(competition: str, classes: np.ndarray) -> list[str]:
    """Readable names for the label values (Fashion-MNIST's names when it is that competition)."""
    for key, names in CLASS_NAMES.items():
        if (
            key in competition.lower()
            and len(classes) == len(names)
            and all(str(c) == str(i) for i, c in enumerate(classes))
        ):
            return list(names)
    return [str(c) for c in classes]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 11, "axes.titlesize": 12, "figure.dpi": 100})
    return plt


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    _pyplot().close(fig)


def plot_curves(history: pd.DataFrame, title: str, path: Path) -> None:
    """The study's six plots in one figure."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    epoch = np.arange(1, len(history) + 1)
    panels = [
        ("training loss vs epoch", epoch, "loss", "epoch"),
        ("validation loss vs epoch", epoch, "val_loss", "epoch"),
        ("training accuracy vs epoch", epoch, "accuracy", "epoch"),
        ("validation accuracy vs epoch", epoch, "val_accuracy", "epoch"),
        ("training accuracy vs training loss", "loss", "accuracy", "training loss"),
        ("validation accuracy vs validation loss", "val_loss", "val_accuracy", "validation loss"),
    ]
    for ax, (name, x, y, xlabel) in zip(axes.flat, panels, strict=True):
        xs = history[x].to_numpy() if isinstance(x, str) and x in history else x
        if y in history and not isinstance(xs, str):
            ax.plot(xs, history[y].to_numpy(), marker="o", markersize=3)
        else:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(name)
        if xlabel == "epoch":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(y.replace("val_", "validation ").replace("_", " "))
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=14)
    fig.tight_layout()
    _save(fig, path)


def plot_confusion(cm: np.ndarray, names: list[str], normalized: bool, path: Path) -> None:
    from sklearn.metrics import ConfusionMatrixDisplay

    plt = _pyplot()
    size = max(6.0, 0.6 * len(names) + 3)
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay(cm, display_labels=names).plot(
        ax=ax, cmap="Blues", colorbar=False, values_format=".2f" if normalized else "d"
    )
    ax.set_title(
        "confusion matrix (holdout, " + ("normalized by true class)" if normalized else "counts)")
    )
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right")
    _save(fig, path)


def plot_mistakes(images, true, pred, conf, names, path: Path, n: int = 25) -> int:
    """A grid of the most confidently misclassified holdout images; returns how many."""
    plt = _pyplot()
    wrong = np.flatnonzero(true != pred)
    order = wrong[np.argsort(-conf[wrong])][:n]
    cols = 5
    rows = max(1, int(np.ceil(len(order) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.6, rows * 2.9), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, order, strict=False):
        img = images[i]
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray")
        ax.set_title(f"true: {names[true[i]]}\npred: {names[pred[i]]} ({conf[i]:.2f})", fontsize=9)
    if not len(order):
        axes.flat[0].text(0.5, 0.5, "no mistakes", ha="center", va="center")
    fig.suptitle("most confident mistakes on the holdout", fontsize=12)
    fig.tight_layout()
    _save(fig, path)
    return len(order)


def plot_by_architecture(frame: pd.DataFrame, path: Path) -> None:
    plt = _pyplot()
    done = frame.dropna(subset=["val_accuracy"])
    if "kind" in done:
        done = done[done["kind"] == "trial"]  # the trials' own validation images
    models = sorted(done["model"].unique(), key=lambda m: -done[done.model == m].val_accuracy.max())
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(models) + 2), 4.5))
    for i, m in enumerate(models):
        v = done[done.model == m]["val_accuracy"].to_numpy()
        ax.scatter(np.full(len(v), i), v, alpha=0.7)
        ax.plot([i - 0.3, i + 0.3], [v.max()] * 2, color="k")
    ax.set_xticks(range(len(models)), models, rotation=30, ha="right")
    ax.set_ylabel("validation accuracy")
    ax.set_title("accuracy by architecture (each dot a completed trial; bar = best)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def study_plots(study, out: Path) -> dict[str, str]:
    """Optuna's own matplotlib plots; returns {title: file name} for those that could be drawn."""
    import optuna
    from optuna.visualization import matplotlib as ovm

    _pyplot()
    done = study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])
    made = {}
    plots = [
        ("optimization history", "study_history.png", ovm.plot_optimization_history, 1),
        ("parameter importances", "study_importances.png", ovm.plot_param_importances, 2),
        ("intermediate values (learning curves)", "study_intermediate.png",
         ovm.plot_intermediate_values, 1),
    ]  # fmt: skip
    for title, name, fn, need in plots:
        if len(done) < need:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ax = fn(study)
            except (ValueError, RuntimeError) as exc:
                # e.g. importances need two completed trials that differ in some parameter
                # stderr: the submission's path stays the last line on stdout
                print(f"report: skipped {title} ({exc})", file=sys.stderr)
                continue
        fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        fig.set_size_inches(10, 5.5)
        _save(fig, out / name)
        made[title] = name
    return made
