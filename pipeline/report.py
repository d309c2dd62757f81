"""Reports: the study's tables and plots for every run and every search (``./run.sh report``).

Reads what ``train`` and ``tune`` left in ``artifacts/<competition>/`` and writes
``artifacts/<competition>/report/``: ``models.csv``/``models.md`` (one row per run or completed
trial), per entry ``history.csv`` and a six-panel figure, for the best model a confusion matrix,
precision/recall/F1 and its most confident mistakes on the holdout, for a study Optuna's plots, and
``index.html`` showing it all. Nothing is retrained; the best model predicts the holdout once.
"""

from __future__ import annotations

import html
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.fsutil import atomic_path, atomic_write_text

COLUMNS = [
    "id",
    "kind",
    "model",
    "train_accuracy",
    "train_loss",
    "val_accuracy",
    "val_loss",
    "seconds",
    "params",
    "epochs",
    "optimizer",
    "batch_size",
    "learning_rate",
    "augment",
]
MAX_CURVES = 20  # per-entry figures: the best 20 (a long study would otherwise take minutes)
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


# ---------------------------------------------------------------------------------------------
# Gathering what was run


def _history_frame(history: dict[str, list[float]] | None) -> pd.DataFrame:
    if not history:
        return pd.DataFrame()
    n = max(len(v) for v in history.values())
    frame = pd.DataFrame({k: list(v) + [np.nan] * (n - len(v)) for k, v in history.items()})
    frame.insert(0, "epoch", np.arange(1, n + 1))
    return frame


def run_entries(comp_dir: Path, run_id: str | None = None) -> list[dict[str, Any]]:
    """One entry per saved ``train`` run (or just ``run_id``)."""
    runs = comp_dir / "runs"
    dirs = sorted(runs.glob("*")) if runs.is_dir() else []
    if run_id:
        dirs = [runs / run_id]
        if not (runs / run_id / "metrics.json").is_file():
            known = ", ".join(p.name for p in sorted(runs.glob("*"))[-5:]) if runs.is_dir() else ""
            raise PipelineError(
                f"{runs / run_id}: no such run" + (f"; known runs: {known}" if known else "")
            )
    out = []
    for d in dirs:
        mfile = d / "metrics.json"
        if not mfile.is_file():
            continue
        m = json.loads(mfile.read_text())
        cfg = json.loads((d / "config.json").read_text()) if (d / "config.json").is_file() else {}
        s = cfg.get("settings", {})
        hist = pd.read_csv(d / "history.csv") if (d / "history.csv").is_file() else pd.DataFrame()
        out.append(
            {
                "id": f"run-{d.name}",
                "kind": "run",
                "model": m.get("model"),
                "train_accuracy": m.get("train_accuracy"),
                "train_loss": m.get("train_loss"),
                "val_accuracy": m.get("val_accuracy"),
                "val_loss": m.get("val_loss"),
                "seconds": m.get("seconds"),
                "params": m.get("params"),
                "epochs": m.get("epochs_run"),
                "optimizer": s.get("optimizer"),
                "batch_size": s.get("batch_size"),
                "learning_rate": s.get("learning_rate"),
                "augment": s.get("augment"),
                "_history": hist.drop(columns=["epoch"], errors="ignore"),
                "_model_path": d / "model.keras",
                "_seed": cfg.get("seed", 42),
                "_limit": cfg.get("limit"),
            }
        )
    return out


def trial_entries(study, cfg: Config) -> list[dict[str, Any]]:
    """One entry per completed trial of ``study``."""
    import optuna

    out = []
    for t in study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE]):
        a = t.user_attrs
        s = a.get("settings", {})
        path = a.get("model_path")
        out.append(
            {
                "id": f"trial-{t.number}",
                "kind": "trial",
                "model": a.get("model", t.params.get("model")),
                "train_accuracy": a.get("train_accuracy"),
                "train_loss": a.get("train_loss"),
                "val_accuracy": a.get("val_accuracy", t.value),
                "val_loss": a.get("val_loss"),
                "seconds": a.get("seconds"),
                "params": a.get("params"),
                "epochs": a.get("epochs_run"),
                "optimizer": s.get("optimizer"),
                "batch_size": s.get("batch_size"),
                "learning_rate": s.get("learning_rate"),
                "augment": s.get("augment"),
                "_history": _history_frame(a.get("history")).drop(
                    columns=["epoch"], errors="ignore"
                ),
                "_model_path": Path(path) if path else None,
                "_seed": cfg.seed,
                "_limit": cfg.opt("limit"),
            }
        )
    return out


def final_entries(comp_dir: Path, cfg: Config) -> list[dict[str, Any]]:
    """The tune command's final fit (best configuration on the whole split), when there is one."""
    f = comp_dir / "tune" / "best.json"
    best = json.loads(f.read_text()) if f.is_file() else {}
    info = best.get("final_fit")
    if not info:
        return []
    hfile = comp_dir / "tune" / "final_history.csv"
    hist = pd.read_csv(hfile) if hfile.is_file() else pd.DataFrame()
    s = info.get("settings", {})
    last = hist.iloc[info["best_epoch"] - 1] if len(hist) >= info.get("best_epoch", 0) > 0 else {}
    return [
        {
            "id": "tune-final",
            "kind": "final",
            "model": info.get("model"),
            "train_accuracy": last.get("accuracy") if len(last) else None,
            "train_loss": last.get("loss") if len(last) else None,
            "val_accuracy": info.get("holdout_accuracy_plain"),
            "val_loss": last.get("val_loss") if len(last) else None,
            "seconds": info.get("seconds"),
            "params": None,
            "epochs": info.get("epochs_run"),
            "optimizer": s.get("optimizer"),
            "batch_size": s.get("batch_size"),
            "learning_rate": s.get("learning_rate"),
            "augment": s.get("augment"),
            "_history": hist.drop(columns=["epoch"], errors="ignore"),
            "_model_path": Path(info["model_path"]) if info.get("model_path") else None,
            "_seed": best.get("config", {}).get("seed", cfg.seed),
            "_limit": best.get("config", {}).get("limit"),
        }
    ]


# ---------------------------------------------------------------------------------------------
# Figures


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
    models = sorted(done["model"].unique(), key=lambda m: -done[done.model == m].val_accuracy.max())
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(models) + 2), 4.5))
    for i, m in enumerate(models):
        v = done[done.model == m]["val_accuracy"].to_numpy()
        ax.scatter(np.full(len(v), i), v, alpha=0.7)
        ax.plot([i - 0.3, i + 0.3], [v.max()] * 2, color="k")
    ax.set_xticks(range(len(models)), models, rotation=30, ha="right")
    ax.set_ylabel("holdout accuracy")
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


# ---------------------------------------------------------------------------------------------
# Best model on the holdout


def best_model_section(entry: dict[str, Any], ds, out: Path) -> dict[str, Any]:
    """Confusion matrix, precision/recall/F1 and mistakes of one saved model on the holdout."""
    from sklearn.metrics import classification_report, confusion_matrix

    from pipeline.predict import load_model, predict_proba
    from pipeline.runs import holdout

    _, _, x_va, y_va = holdout(ds, entry["_seed"], entry["_limit"])
    probs = predict_proba(load_model(entry["_model_path"]), x_va)
    pred = probs.argmax(1)
    names = class_names(ds.competition, ds.classes)
    labels = list(range(len(names)))
    cm = confusion_matrix(y_va, pred, labels=labels)
    with np.errstate(invalid="ignore", divide="ignore"):
        cmn = np.nan_to_num(cm / cm.sum(axis=1, keepdims=True))
    pd.DataFrame(cm, index=names, columns=names).to_csv(out / "confusion.csv")
    plot_confusion(cm, names, False, out / "confusion.png")
    plot_confusion(cmn, names, True, out / "confusion_normalized.png")
    rep = classification_report(
        y_va, pred, labels=labels, target_names=names, output_dict=True, zero_division=0
    )
    table = pd.DataFrame(rep).T.drop(index=["accuracy"], errors="ignore")
    table["support"] = table["support"].astype(int)
    table.index.name = "class"
    table.to_csv(out / "classification.csv")
    n = plot_mistakes(x_va, y_va, pred, probs.max(1), names, out / "mistakes.png")
    return {
        "id": entry["id"],
        "model": entry["model"],
        "accuracy": float((pred == y_va).mean()),
        "holdout_rows": len(y_va),
        "weighted": rep["weighted avg"],
        "table": table,
        "mistakes": n,
    }


# ---------------------------------------------------------------------------------------------
# The page


def _table_html(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="", border=0)


def write_index(out: Path, title: str, sections: list[tuple[str, str]]) -> Path:
    style = (
        "body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;font-size:14px}td,th{padding:4px 8px;border-bottom:1px "
        "solid #ddd;text-align:right}th{background:#f4f4f4}img{max-width:100%;"
        "border:1px solid #eee;margin:6px 0}h2{border-bottom:2px solid #333;padding-top:1em}"
    )
    body = "".join(f"<h2>{html.escape(h)}</h2>\n{content}\n" for h, content in sections)
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>\n{body}</body></html>\n"
    )
    path = out / "index.html"
    atomic_write_text(path, page)
    return path


def _img(name: str, alt: str) -> str:
    return f"<p><img src='{html.escape(name)}' alt='{html.escape(alt)}'></p>"


def build_report(cfg: Config, ds=None, study_name: str | None = None, run_id: str | None = None):
    """Write ``artifacts/<competition>/report/`` and return the path of its ``index.html``."""
    from pipeline.runs import competition_dir, load_data

    ds = ds or load_data(cfg)
    comp = competition_dir(cfg, ds)
    out = comp / "report"
    out.mkdir(parents=True, exist_ok=True)
    study = None
    entries: list[dict[str, Any]] = []
    if run_id or not study_name:
        entries += run_entries(comp, run_id)
    if not run_id:
        study = _load_study(cfg, ds, study_name, required=bool(study_name))
        if study is not None:
            entries += trial_entries(study, cfg) + final_entries(comp, cfg)
    if not entries:
        raise PipelineError(
            f"{comp}: nothing to report yet; run ./run.sh train --model NAME or ./run.sh tune"
        )
    frame = pd.DataFrame([{k: e.get(k) for k in COLUMNS} for e in entries], columns=COLUMNS)
    frame = frame.sort_values("val_accuracy", ascending=False, na_position="last")
    atomic_write_text(out / "models.csv", frame.to_csv(index=False))
    atomic_write_text(out / "models.md", _markdown(frame))
    sections = [("all models", _table_html(frame))]

    ranked = sorted(entries, key=lambda e: -(e.get("val_accuracy") or -1))
    curves = []
    for e in ranked[:MAX_CURVES]:
        if e["_history"].empty:
            continue
        d = out / e["id"]
        d.mkdir(exist_ok=True)
        hist = e["_history"].copy()
        hist.insert(0, "epoch", np.arange(1, len(hist) + 1))
        atomic_write_text(d / "history.csv", hist.to_csv(index=False))
        plot_curves(hist, f"{e['id']}: {e['model']}", d / "curves.png")
        curves.append(
            f"<h3>{html.escape(e['id'])}: {html.escape(str(e['model']))}</h3>"
            f"<p><a href='{e['id']}/history.csv'>history.csv</a></p>"
            + _img(f"{e['id']}/curves.png", f"{e['id']} curves")
        )

    best = next((e for e in ranked if e["_model_path"] and Path(e["_model_path"]).exists()), None)
    if best is not None:
        b = best_model_section(best, ds, out)
        w = b["weighted"]
        summary = (
            f"<p>{html.escape(b['id'])} ({html.escape(str(b['model']))}): accuracy "
            f"{b['accuracy']:.4f} on {b['holdout_rows']} holdout images; weighted precision "
            f"{w['precision']:.4f}, recall {w['recall']:.4f}, F1 {w['f1-score']:.4f}</p>"
        )
        sections.append(
            (
                "best model on the holdout",
                summary
                + _table_html(b["table"].reset_index())
                + "<p><a href='classification.csv'>classification.csv</a> · "
                "<a href='confusion.csv'>confusion.csv</a></p>"
                + _img("confusion.png", "confusion matrix")
                + _img("confusion_normalized.png", "normalized confusion matrix")
                + _img("mistakes.png", "most confident mistakes"),
            )
        )
    if study is not None:
        plots = study_plots(study, out)
        trials = frame[frame["kind"] == "trial"]
        if not trials.empty:
            plot_by_architecture(trials, out / "study_architectures.png")
            plots["accuracy by architecture"] = "study_architectures.png"
        sections.append(
            (
                f"study {study.study_name}",
                "".join(f"<h3>{html.escape(t)}</h3>" + _img(f, t) for t, f in plots.items()),
            )
        )
    sections.append(("learning curves (six plots per model)", "".join(curves)))
    return write_index(out, f"{ds.competition}: models and search", sections)


def _markdown(frame: pd.DataFrame) -> str:
    def cell(v):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return ""
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(False)]
    return "\n".join(lines) + "\n"


def _load_study(cfg: Config, ds, name: str | None, required: bool):
    import optuna

    from pipeline.tune import make_storage, storage_url

    url = storage_url(cfg, ds)
    db = cfg.artifacts / ds.competition / "optuna.db"
    if not cfg.opt("storage") and not db.is_file():
        if required:
            raise PipelineError(f"{db}: no study database; run ./run.sh tune first")
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = name or ds.competition
    try:
        return optuna.load_study(study_name=name, storage=make_storage(url))
    except KeyError:
        if required:
            known = ", ".join(optuna.study.get_all_study_names(url))
            raise PipelineError(f"no study {name!r} in {url}; known: {known}") from None
        return None


def cmd_report(cfg: Config) -> int:
    path = build_report(cfg, study_name=cfg.opt("study"), run_id=cfg.opt("run"))
    print(path)
    return 0
