"""What was run: one :class:`ReportEntry` per saved ``train`` run, completed tune trial and
final fit, read from their records."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.artifacts import history_frame
from pipeline.errors import PipelineError
from pipeline.models.registry import model_suffix, trial_file
from pipeline.records import RunRecord, TuneResult, from_dict, load_json, read_trial
from pipeline.training import FitMetrics, TrainSettings

# the study's comparison table
COLUMNS = [
    "id", "kind", "model", "train_accuracy", "train_loss", "val_accuracy", "val_loss", "scored_on",
    "seconds",
    "params", "epochs", "optimizer", "batch_size", "learning_rate", "augment",
]  # fmt: skip


# the rows behind each kind's val_accuracy
SCORED_ON = {
    "run": "validation (chose the kept epoch)",
    "trial": "validation (the trials' own rows)",
    "final": "holdout (chose nothing)",
}


@dataclass
class ReportEntry:
    """One trained model as the report shows it; the rows it was scored on (``SCORED_ON``) are
    fixed by (seed, limit)."""

    id: str
    kind: str  # run, trial or final
    model: str | None
    metrics: dict[str, Any]
    settings: TrainSettings | None
    history: pd.DataFrame = field(default_factory=pd.DataFrame)  # without the epoch column
    model_path: Path | None = None
    seed: int = 42
    limit: int | None = None

    @property
    def val_accuracy(self) -> float | None:
        return self.metrics.get("val_accuracy")

    def row(self) -> dict[str, Any]:
        s = self.settings
        m = self.metrics
        return {
            "id": self.id,
            "kind": self.kind,
            "model": self.model,
            "train_accuracy": m.get("train_accuracy"),
            "train_loss": m.get("train_loss"),
            "val_accuracy": m.get("val_accuracy"),
            "val_loss": m.get("val_loss"),
            "scored_on": SCORED_ON.get(self.kind),
            "seconds": m.get("seconds"),
            "params": m.get("params"),
            "epochs": m.get("epochs_run"),
            "optimizer": s.optimizer if s else None,
            "batch_size": s.batch_size if s else None,
            "learning_rate": s.learning_rate if s else None,
            "augment": s.augment if s else None,
        }


def _metrics(m: FitMetrics | None) -> dict[str, Any]:
    return dict(m.__dict__) if m else {}


def run_entries(comp_dir: Path, run_id: str | None = None) -> list[ReportEntry]:
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
        if not (d / "metrics.json").is_file():
            continue
        record = load_json(RunRecord, d / "metrics.json")
        cfg = json.loads((d / "config.json").read_text()) if (d / "config.json").is_file() else {}
        hist = pd.read_csv(d / "history.csv") if (d / "history.csv").is_file() else pd.DataFrame()
        settings = cfg.get("settings")
        out.append(
            ReportEntry(
                id=f"run-{d.name}",
                kind="run",
                model=record.model,
                metrics=_metrics(record.metrics),
                settings=from_dict(TrainSettings, settings) if settings else None,
                history=hist.drop(columns=["epoch"], errors="ignore"),
                model_path=d / f"model{model_suffix(record.model)}",
                seed=cfg.get("seed", 42),
                limit=cfg.get("limit"),
            )
        )
    return out


def _trial_model(recorded: str | None, local: Path) -> Path | None:
    """The trial's model on this machine: its recorded path, else the local copy of an
    artifact-store upload."""
    if recorded and Path(recorded).exists():
        return Path(recorded)
    return local if local.exists() else None


def trial_entries(study, seed: int, limit: int | None, models_dir: Path) -> list[ReportEntry]:
    """One entry per completed trial of ``study``."""
    import optuna

    out = []
    for t in study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE]):
        r = read_trial(t)
        metrics = _metrics(r.metrics) or {"val_accuracy": t.value}
        out.append(
            ReportEntry(
                id=f"trial-{t.number}",
                kind="trial",
                model=r.model or t.params.get("model"),
                metrics=metrics,
                settings=r.settings,
                history=history_frame(r.history).drop(columns=["epoch"], errors="ignore"),
                model_path=_trial_model(r.model_path, models_dir / trial_file(t.number, r.model)),
                seed=seed,
                limit=limit,
            )
        )
    return out


def final_entries(comp_dir: Path, seed: int) -> list[ReportEntry]:
    """The tune command's final fit (best configuration on the whole split), when there is one."""
    f = comp_dir / "tune" / "best.json"
    if not f.is_file():
        return []
    result = load_json(TuneResult, f)
    info = result.final_fit
    if info is None:
        return []
    hfile = comp_dir / "tune" / "final_history.csv"
    hist = pd.read_csv(hfile) if hfile.is_file() else pd.DataFrame()
    best = hist.iloc[info.best_epoch - 1] if len(hist) >= info.best_epoch > 0 else None
    metrics = {
        "val_accuracy": info.holdout_accuracy_plain,
        "seconds": info.seconds,
        "epochs_run": info.epochs_run,
    }
    if best is not None:
        metrics.update(train_accuracy=best.get("accuracy"), train_loss=best.get("loss"),
                       val_loss=best.get("val_loss"))  # fmt: skip
    options = result.options or {}
    return [
        ReportEntry(
            id="tune-final",
            kind="final",
            model=info.model,
            metrics=metrics,
            settings=info.settings,
            history=hist.drop(columns=["epoch"], errors="ignore"),
            model_path=Path(info.model_path) if info.model_path else None,
            seed=options.get("seed", seed),
            limit=options.get("limit"),
        )
    ]
