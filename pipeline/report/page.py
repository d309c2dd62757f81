"""The report's page: the comparison table, the best model's holdout section (confusion
matrix, precision/recall/F1, most confident mistakes), the study's plots and ``index.html``; and
the ``report`` command."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.errors import PipelineError
from pipeline.fsutil import atomic_write_text
from pipeline.options import Options, ReportOptions
from pipeline.report.figures import (
    class_names,
    plot_by_architecture,
    plot_confusion,
    plot_curves,
    plot_mistakes,
    study_plots,
)
from pipeline.report.gather import COLUMNS, ReportEntry, final_entries, run_entries, trial_entries

MAX_CURVES = 20  # per-entry figures: the best 20 (a long study would otherwise take minutes)


def best_model_section(entry: ReportEntry, ds, out: Path) -> dict[str, Any]:
    """Confusion matrix, precision/recall/F1 and mistakes of one saved model on the holdout."""
    from sklearn.metrics import classification_report, confusion_matrix

    from pipeline.data import holdout
    from pipeline.predict import load_model, predict_proba

    _, _, x_va, y_va = holdout(ds, entry.seed, entry.limit)
    probs = predict_proba(load_model(entry.model_path), x_va)
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
        "id": entry.id,
        "model": entry.model,
        "accuracy": float((pred == y_va).mean()),
        "holdout_rows": len(y_va),
        "weighted": rep["weighted avg"],
        "table": table,
        "mistakes": n,
    }


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


def build_report(
    opts: Options,
    ds=None,
    study_name: str | None = None,
    run_id: str | None = None,
    storage: str | None = None,
):
    """Write ``artifacts/<competition>/report/`` and return the path of its ``index.html``."""
    from pipeline.artifacts import competition_dir
    from pipeline.data import load

    ds = ds or load(opts)
    comp = competition_dir(opts.artifacts, ds.competition)
    out = comp / "report"
    out.mkdir(parents=True, exist_ok=True)
    entries, study = gather_entries(opts, comp, ds.competition, study_name, run_id, storage)
    frame = pd.DataFrame([e.row() for e in entries], columns=COLUMNS)
    frame = frame.sort_values("val_accuracy", ascending=False, na_position="last")
    atomic_write_text(out / "models.csv", frame.to_csv(index=False))
    atomic_write_text(out / "models.md", _markdown(frame))
    sections = [("all models", _table_html(frame))]
    ranked = sorted(entries, key=lambda e: -(e.val_accuracy or -1))
    best = next((e for e in ranked if e.model_path and Path(e.model_path).exists()), None)
    if best is not None:
        sections.append(("best model on the holdout", best_section_html(best, ds, out)))
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
    sections.append(("learning curves (six plots per model)", curves_html(ranked, out)))
    return write_index(out, f"{ds.competition}: models and search", sections)


def gather_entries(opts, comp: Path, competition: str, study_name, run_id, storage):
    """(every entry to report, the study or None): train runs, completed trials, the final
    fit."""
    study = None
    entries: list[ReportEntry] = []
    if run_id or not study_name:
        entries += run_entries(comp, run_id)
    if not run_id:
        study = _load_study(comp, storage, study_name or competition, required=bool(study_name))
        if study is not None:
            # the trials were scored on the split of the tune run's seed and --limit
            saved = comp / "tune" / "config.json"
            tuned = json.loads(saved.read_text()) if saved.is_file() else {}
            seed = tuned.get("seed", opts.seed)
            limit = tuned.get("limit", getattr(opts, "limit", None))
            entries += trial_entries(study, seed, limit, comp / "tune" / "models")
            entries += final_entries(comp, seed)
    if not entries:
        raise PipelineError(
            f"{comp}: nothing to report yet; run ./run.sh train --model NAME or ./run.sh tune"
        )
    return entries, study


def curves_html(ranked: list[ReportEntry], out: Path) -> str:
    """The six plots and history.csv of the best MAX_CURVES entries."""
    curves = []
    for e in ranked[:MAX_CURVES]:
        if e.history.empty:
            continue
        d = out / e.id
        d.mkdir(exist_ok=True)
        hist = e.history.copy()
        hist.insert(0, "epoch", np.arange(1, len(hist) + 1))
        atomic_write_text(d / "history.csv", hist.to_csv(index=False))
        plot_curves(hist, f"{e.id}: {e.model}", d / "curves.png")
        curves.append(
            f"<h3>{html.escape(e.id)}: {html.escape(str(e.model))}</h3>"
            f"<p><a href='{e.id}/history.csv'>history.csv</a></p>"
            + _img(f"{e.id}/curves.png", f"{e.id} curves")
        )
    return "".join(curves)


def best_section_html(best: ReportEntry, ds, out: Path) -> str:
    b = best_model_section(best, ds, out)
    w = b["weighted"]
    summary = (
        f"<p>{html.escape(b['id'])} ({html.escape(str(b['model']))}): accuracy "
        f"{b['accuracy']:.4f} on {b['holdout_rows']} holdout images; weighted precision "
        f"{w['precision']:.4f}, recall {w['recall']:.4f}, F1 {w['f1-score']:.4f}</p>"
    )
    return (
        summary
        + _table_html(b["table"].reset_index())
        + "<p><a href='classification.csv'>classification.csv</a> · "
        "<a href='confusion.csv'>confusion.csv</a></p>"
        + _img("confusion.png", "confusion matrix")
        + _img("confusion_normalized.png", "normalized confusion matrix")
        + _img("mistakes.png", "most confident mistakes")
    )


def _markdown(frame: pd.DataFrame) -> str:
    def cell(v):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return ""
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(False)]
    return "\n".join(lines) + "\n"


def _load_study(comp_dir: Path, storage: str | None, name: str, required: bool):
    """The study to report on: from ``storage``, else the competition's SQLite file (None when
    there is none and none was asked for)."""
    from pipeline.storage import load_study, masked, storage_url

    db = comp_dir / "optuna.db"
    if not storage and not db.is_file():
        if required:
            raise PipelineError(f"{db}: no study database; run ./run.sh tune first")
        return None
    url = storage_url(storage, comp_dir)
    study = load_study(url, name)
    if study is None and required:
        import optuna

        known = ", ".join(optuna.study.get_all_study_names(url))
        raise PipelineError(f"no study {name!r} in {masked(url)}; known: {known}")
    return study


def run(opts: ReportOptions) -> int:
    print(build_report(opts, study_name=opts.study, run_id=opts.run, storage=opts.storage))
    return 0
