"""The study's trials as the rest of ``tune`` reads them: completed ones best first, the warm
start, the files a trial keeps beside its model, and the trials table.

The rule the search's stop and the final pick share lives here too (:data:`MARGIN`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from pipeline import storage as st
from pipeline.fsutil import atomic_write_text
from pipeline.models import trial_file
from pipeline.records import read_trial

# The search earns its share or gives it up. With a final fit, a trial's slice score must beat
# the warm start's by more than MARGIN for its configuration to replace the warm start in the
# final fit (pipeline.tune.decide); the search stops once it cannot (pipeline.tune.search). Why
# a whole point: slice scores (8 epochs on 12,000 rows) favour small nets. In the 900 s
# benchmark run lenet5_wide led resnet9s (the warm start) by 0.64 points on the slice; its final
# fit (33 epochs) scored 0.9278, where resnet9s's final fit scored 0.9168 after 4 epochs (300 s)
# and 0.9458 after 23 (1800 s). At 1800 and 3600 s the best trial was the warm start.
MARGIN = 0.01
MODEL_SUFFIXES = (".keras", ".joblib")  # a network's, a classical entry's


def completed(study) -> list:
    """The study's completed trials, best first."""
    import optuna

    done = study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])
    return sorted(done, key=lambda t: t.value, reverse=True)


def is_warm_start(trial) -> bool:
    """True for the warm-start trial: the one enqueued before the search samples (Optuna keeps
    the enqueued parameters, also on a retry of it), not the baseline enqueued after it."""
    from pipeline.search_space import BASELINE

    fixed = trial.system_attrs.get("fixed_params")
    return fixed is not None and fixed != BASELINE


def sampled_width(trial) -> float:
    """The width multiplier the trial sampled for its entry (1 where it sampled none): what
    the memory of its fits scales with (:meth:`~pipeline.tune.cost.CostModel.fit_mib`)."""
    return float(trial.params.get(f"{trial.params.get('model')}.width", 1.0))


def warm_start_trial(trials: list):
    """The completed warm-start trial, or None."""
    done = [t for t in trials if t.state.name == "COMPLETE" and is_warm_start(t)]
    return min(done, key=lambda t: t.number, default=None)


def _beside(model_path: str | Path, suffix: str) -> Path:
    p = Path(model_path)
    stem = p.name
    for s in MODEL_SUFFIXES:
        stem = stem.removesuffix(s)
    return p.with_name(stem + suffix)


def validation_probs_path(model_path: str | Path) -> Path:
    """Where a kept trial model's validation probabilities are (beside the model)."""
    return _beside(model_path, ".validation.npy")


def history_path(model_path: str | Path) -> Path:
    return _beside(model_path, ".history.csv")


def kept_files(model_path: Path) -> list[Path]:
    """Every file kept beside a trial's model (those of older runs too)."""
    old = _beside(model_path, ".holdout.npy")
    return [model_path, validation_probs_path(model_path), history_path(model_path), old]


def trial_files(trial, models_dir: Path, store=None) -> tuple[Path | None, Path | None]:
    """(model file, validation probabilities file) of a completed trial on this machine:
    downloaded from the artifact store when the record names artifacts, else the local files;
    (None, None) when neither is there."""
    r = read_trial(trial)
    local = Path(models_dir) / trial_file(trial.number, r.model)
    if r.model_artifact and store is not None:
        model = st.fetch(store, r.model_artifact, local)
        probs = validation_probs_path(local)
        if r.validation_artifact:
            st.fetch(store, r.validation_artifact, probs)
        return model, probs
    for path in (Path(r.model_path) if r.model_path else None, local):
        if path is not None and path.exists():
            probs = validation_probs_path(path)
            old = kept_files(path)[-1]  # written before the rename
            return path, probs if probs.exists() or not old.exists() else old
    return None, None


def prune_saved_models(study, keep: int, models_dir: Path, store=None) -> None:
    """Delete the saved models (and validation probabilities, and their artifacts) of completed
    trials outside the top ``keep``: a long study would otherwise fill the disk."""
    for t in completed(study)[keep:]:
        r = read_trial(t)
        for path in {Path(r.model_path) if r.model_path else None,
                     Path(models_dir) / trial_file(t.number, r.model)} - {None}:  # fmt: skip
            for f in kept_files(path):
                f.unlink(missing_ok=True)
        for artifact in (r.model_artifact, r.validation_artifact, r.history_artifact):
            st.remove(store, artifact)


def write_trials_table(study, tune_dir: Path) -> pd.DataFrame:
    """``tune/trials.csv``: the study's comparison table (returned too)."""
    frame = trials_frame(study)
    Path(tune_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(tune_dir) / "trials.csv", frame.to_csv(index=False))
    return frame


def trials_frame(study) -> pd.DataFrame:
    """One row per trial: state, model, parameters, metrics, reason (the study's table)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        r = read_trial(t)
        m, s = r.metrics, r.settings
        seconds = m.seconds if m else None
        if seconds is None and t.datetime_complete and t.datetime_start:
            seconds = (t.datetime_complete - t.datetime_start).total_seconds()
        rows.append({
            "number": t.number, "state": t.state.name, "model": r.model or t.params.get("model"),
            "params": json.dumps(dict(t.params), sort_keys=True),
            "val_accuracy": m.val_accuracy if m else None, "val_loss": m.val_loss if m else None,
            "train_accuracy": m.train_accuracy if m else None,
            "train_loss": m.train_loss if m else None,
            "epochs_run": m.epochs_run if m else (len(t.intermediate_values) or None),
            "seconds": seconds, "param_count": m.params if m else None,
            "optimizer": s.optimizer if s else None,
            "learning_rate": s.learning_rate if s else None,
            "batch_size": s.batch_size if s else None, "augment": s.augment if s else None,
            "reason": r.reason or "",
        })  # fmt: skip
    return pd.DataFrame(rows)


def print_top(frame: pd.DataFrame) -> None:
    """The ten best completed trials, as the study's comparison table."""
    if frame.empty:
        return
    done = frame[frame["state"] == "COMPLETE"].sort_values("val_accuracy", ascending=False)
    if done.empty:
        return
    cols = [
        "number", "model", "val_accuracy", "val_loss", "train_accuracy", "epochs_run", "seconds",
        "optimizer", "learning_rate", "batch_size", "augment",
    ]  # fmt: skip
    print("\ntop trials:")
    print(done[cols].head(10).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(flush=True)
