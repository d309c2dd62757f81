"""The ``models``, ``train`` and ``predict`` commands: one experiment of the study, end to end.

A run is saved in ``artifacts/<competition>/runs/<run-id>/`` (model.keras, history.csv,
metrics.json, config.json), so ``predict`` (or a report) can be rerun from it alone.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config import Config
from pipeline.data import Dataset, holdout_split, load_competition, resolve_data_dir
from pipeline.errors import PipelineError
from pipeline.fsutil import atomic_path, atomic_write_json, atomic_write_text


def load_data(cfg: Config) -> Dataset:
    """The competition of this config, parsed once and cached under ``artifacts/cache``."""
    return load_competition(
        resolve_data_dir(cfg.data, cfg.competition),
        cache_dir=cfg.artifacts / "cache",
        image_shape=cfg.image_shape,
        channels_first=cfg.channels_first,
        competition=cfg.competition,
    )


def holdout(ds: Dataset, seed: int, limit: int | None = None):
    """(x_train, y_train, x_val, y_val): the stratified 80/20 split, optionally on a slice."""
    y = ds.y_train
    counts = np.bincount(y, minlength=ds.num_classes)
    if counts.min() < 2:
        label = ds.classes[int(counts.argmin())]
        label = label.item() if isinstance(label, np.generic) else label
        raise PipelineError(
            f"label {label!r} has {counts.min()} labelled row(s); the stratified 80/20 holdout "
            "needs at least 2 per class: add rows of it or drop it from the train file"
        )
    idx = np.arange(len(y))
    if limit and limit < len(y):
        from sklearn.model_selection import train_test_split

        try:
            idx, _ = train_test_split(idx, train_size=limit, random_state=seed, stratify=y)
        except ValueError as exc:
            raise PipelineError(
                f"--limit {limit}: too few rows for a stratified slice of {ds.num_classes} "
                f"classes ({exc}); raise --limit"
            ) from None
        idx = np.sort(idx)
    if np.bincount(y[idx], minlength=ds.num_classes).min() < 2:
        raise PipelineError(f"--limit {limit}: some class gets fewer than 2 rows; raise --limit")
    tr, va = holdout_split(y[idx], seed)
    tr, va = idx[tr], idx[va]
    return ds.x_train[tr], y[tr], ds.x_train[va], y[va]


def competition_dir(cfg: Config, ds: Dataset) -> Path:
    return cfg.artifacts / ds.competition


def new_run_id(model: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{stamp[:15]}{stamp[-1]}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', model)}"


def save_history(path: Path, history: dict[str, list[float]]) -> None:
    n = max((len(v) for v in history.values()), default=0)
    cols = {k: list(v) + [np.nan] * (n - len(v)) for k, v in history.items()}
    df = pd.DataFrame({"epoch": np.arange(1, n + 1), **cols})
    atomic_write_text(path, df.to_csv(index=False))


def save_model(model, path: Path) -> None:
    with atomic_path(path) as tmp:
        model.save(tmp)


def models_table(cfg: Config) -> list[dict[str, Any]]:
    """Every registry entry with its parameter counts at the given (or its own study) shape."""
    from pipeline.models import build_model, count_params, get_entry, list_models

    rows = []
    shape = cfg.opt("input_shape")
    classes = cfg.opt("classes")
    for name in list_models():
        e = get_entry(name)
        s = tuple(shape) if shape else e.study_shape
        k = classes or e.study_classes
        import keras

        keras.backend.clear_session()
        model = build_model(name, s, k)
        trainable, total = count_params(model)
        rows.append(
            {
                "name": name,
                "family": e.family,
                "source": e.source,
                "input_shape": list(s),
                "classes": k,
                "params": total,
                "trainable_params": trainable,
                "study_shape": list(e.study_shape),
                "designed_for": list(e.resize_to) if e.resize_to else None,
                "recipe": e.recipe.to_dict(),
                "hyperparameters": e.defaults,
                "description": e.description,
            }
        )
    return rows


def cmd_models(cfg: Config) -> int:
    from pipeline.training import configure_runtime

    configure_runtime()
    rows = models_table(cfg)
    if cfg.opt("json"):
        print(json.dumps(rows, indent=2, default=str))
        return 0
    head = f"{'name':<16}{'family':<10}{'study':<6}{'shape':<11}{'K':>3}{'params':>13}"
    head += f"{'trainable':>13}  recipe"
    print(head)
    for r in rows:
        rc = r["recipe"]
        recipe = f"{rc['optimizer']}({rc['learning_rate']:g}) batch {rc['batch_size']}, "
        recipe += f"{rc['epochs']} epochs" + (", ReduceLROnPlateau" if rc["reduce_lr"] else "")
        shape = "x".join(map(str, r["input_shape"]))
        print(
            f"{r['name']:<16}{r['family']:<10}{r['source']:<6}{shape:<11}{r['classes']:>3}"
            f"{r['params']:>13,}{r['trainable_params']:>13,}  {recipe}"
        )
    return 0


def train_run(cfg: Config, ds: Dataset | None = None) -> tuple[Path, dict[str, Any]]:
    """Fit one registry entry on the 80% split; save the run; return (run dir, metrics)."""
    from pipeline.models import build_model, get_entry
    from pipeline.training import configure_runtime, fit, settings_for

    name = cfg.opt("model")
    entry = get_entry(name)
    ds = ds or load_data(cfg)
    settings = settings_for(
        entry,
        seed=cfg.seed,
        epochs=cfg.opt("epochs"),
        batch_size=cfg.opt("batch_size"),
        optimizer=cfg.opt("optimizer"),
        learning_rate=cfg.opt("lr"),
        augment=cfg.opt("augment"),
        label_smoothing=cfg.opt("label_smoothing"),
    )
    runtime = configure_runtime()
    data = holdout(ds, cfg.seed, cfg.opt("limit"))
    print(
        f"train: {name} on {ds.competition} ({len(data[0])} train / {len(data[2])} holdout images, "
        f"{ds.image_shape[0]}x{ds.image_shape[1]}x{ds.image_shape[2]}, {ds.num_classes} classes) "
        f"{settings.optimizer}(lr {settings.learning_rate:g}) batch {settings.batch_size}, "
        f"{settings.epochs} epochs, augment {settings.augment}, {runtime['device']}",
        flush=True,
    )
    import keras

    keras.utils.set_random_seed(cfg.seed)
    model = build_model(name, ds.image_shape, ds.num_classes)
    result = fit(model, settings, data, ds.num_classes)
    run_dir = competition_dir(cfg, ds) / "runs" / new_run_id(name)
    save_model(result.model, run_dir / "model.keras")
    save_history(run_dir / "history.csv", result.history)
    metrics = {"model": name, "run_id": run_dir.name, **result.metrics}
    atomic_write_json(run_dir / "metrics.json", metrics)
    atomic_write_json(
        run_dir / "config.json",
        {
            **cfg.to_dict(),
            "settings": settings.to_dict(),
            "layout": ds.layout.to_json(),
            "runtime": runtime,
        },
    )
    m = result.metrics
    print(
        f"train: {name} holdout accuracy {m['val_accuracy']:.4f} (loss {m['val_loss']:.4f}), "
        f"train accuracy {m['train_accuracy']:.4f} (loss {m['train_loss']:.4f}), best epoch "
        f"{m['best_epoch']}/{m['epochs_run']}, {m['seconds']:.0f} s, "
        f"{m['train_images_per_second']:.0f} images/s, run {run_dir.name}",
        flush=True,
    )
    return run_dir, metrics


def write_predictions(
    cfg: Config, ds: Dataset, probs: np.ndarray, model_name: str, meta: dict[str, Any]
) -> Path:
    """Write the submission for test-set probabilities (and copy it for Kaggle in a kernel)."""
    from pipeline import runtime
    from pipeline.submission import default_path, write_submission

    path = cfg.submission or default_path(cfg.submissions, ds.competition, model_name)
    out = write_submission(ds, probs, path, meta={"model": model_name, **meta})
    if runtime.in_kernel():
        # the file name Kaggle takes a kernel's submission from
        write_submission(ds, probs, runtime.kaggle_root() / "working" / "submission.csv")
    return out


def cmd_train(cfg: Config) -> int:
    from pipeline.predict import load_model, predict_proba

    ds = load_data(cfg)
    run_dir, metrics = train_run(cfg, ds)
    model = load_model(run_dir / "model.keras")
    probs = predict_proba(model, ds.x_test)
    np.save(run_dir / "test_proba.npy", probs)
    path = write_predictions(
        cfg,
        ds,
        probs,
        metrics["model"],
        {"run_id": run_dir.name, "holdout_accuracy": metrics["val_accuracy"]},
    )
    print(path)
    return 0


def find_run(cfg: Config, ds: Dataset, run_id: str) -> Path:
    runs = competition_dir(cfg, ds) / "runs"
    run_dir = runs / run_id
    if not run_dir.is_dir():
        known = sorted(p.name for p in runs.glob("*")) if runs.is_dir() else []
        hint = f"; known runs: {', '.join(known[-5:])}" if known else ""
        raise PipelineError(f"{run_dir}: no such run{hint}")
    return run_dir


def cmd_predict(cfg: Config) -> int:
    from pipeline.predict import load_model, predict_proba

    ds = load_data(cfg)
    run_id, model_path = cfg.opt("run"), cfg.opt("model_path")
    meta: dict[str, Any] = {}
    if run_id:
        run_dir = find_run(cfg, ds, run_id)
        model_path = run_dir / "model.keras"
        metrics = json.loads((run_dir / "metrics.json").read_text())
        name = metrics.get("model", run_id)
        meta = {"run_id": run_id, "holdout_accuracy": metrics.get("val_accuracy")}
    else:
        model_path = Path(model_path)
        name = model_path.parent.name or model_path.stem
    model = load_model(model_path)
    out_classes = model.output_shape[-1]
    if out_classes != ds.num_classes:
        raise PipelineError(
            f"{model_path}: the model predicts {out_classes} classes, {ds.competition} has "
            f"{ds.num_classes}; use a model trained on this competition"
        )
    probs = predict_proba(model, ds.x_test, tta=bool(cfg.opt("tta")))
    print(write_predictions(cfg, ds, probs, name, meta))
    return 0
