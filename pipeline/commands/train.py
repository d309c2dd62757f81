"""``train``: one experiment of the study, end to end: fit one zoo entry on the 80% split, keep
the epoch that scores best on the other 20% (its validation rows: the score it reports chose
that epoch, so it reads a little high), save the run (``runs/<run-id>/``: model.keras,
history.csv, metrics.json, config.json, test_proba.npy), predict the test set and write the
submission."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.data import Dataset
from pipeline.options import TrainOptions
from pipeline.records import RunRecord, to_dict


def run_model_path(run_dir: Path, name: str | None) -> Path:
    """A run's saved model: ``model.keras``, or ``model.joblib`` for a classical entry."""
    from pipeline.models.registry import model_suffix

    return run_dir / f"model{model_suffix(name)}"


def train_classical(opts: TrainOptions, ds: Dataset) -> tuple[Path, RunRecord]:
    """A classical entry fit once on the 80% split and scored on the other 20% (which chose
    nothing: no epochs to pick)."""
    from pipeline import artifacts, classical
    from pipeline.data import holdout
    from pipeline.fsutil import atomic_write_json
    from pipeline.models import build_model
    from pipeline.records import save_json

    data = holdout(ds, opts.seed, opts.limit)
    print(f"train: {opts.model} on {ds.competition} ({len(data[0])} train / {len(data[2])} "
          f"validation images), one scikit-learn fit", flush=True)  # fmt: skip
    estimator = build_model(opts.model, ds.image_shape, ds.num_classes)
    result = classical.fit_classical(estimator, data, ds.num_classes, opts.seed)
    run_dir = artifacts.runs_dir(opts.artifacts, ds.competition) / artifacts.new_run_id(opts.model)
    classical.save(result.model, run_model_path(run_dir, opts.model))
    artifacts.save_history(run_dir / "history.csv", result.history)
    record = RunRecord(model=opts.model, run_id=run_dir.name, metrics=result.metrics,
                       validation_rows=len(data[3]))  # fmt: skip
    save_json(run_dir / "metrics.json", record)
    atomic_write_json(run_dir / "config.json", {**opts.to_dict(), "layout": ds.layout.to_json()})
    m = result.metrics
    print(f"train: {opts.model} validation accuracy {m.val_accuracy:.4f} (loss {m.val_loss:.4f}), "
          f"{m.seconds:.0f} s, run {run_dir.name}", flush=True)  # fmt: skip
    return run_dir, record


def train_run(opts: TrainOptions, ds: Dataset) -> tuple[Path, RunRecord]:
    """Fit one registry entry on the 80% split; save the run; return (run dir, record)."""
    from pipeline.models import build_model, get_entry

    name = opts.model
    entry = get_entry(name)
    if entry.classical:
        return train_classical(opts, ds)
    import keras

    from pipeline import artifacts
    from pipeline.data import holdout
    from pipeline.device import configure_runtime
    from pipeline.fsutil import atomic_write_json
    from pipeline.records import save_json
    from pipeline.training import fit, settings_for

    settings = settings_for(
        entry,
        seed=opts.seed,
        epochs=opts.epochs,
        batch_size=opts.batch_size,
        optimizer=opts.optimizer,
        learning_rate=opts.lr,
        augment=opts.augment,
        label_smoothing=opts.label_smoothing,
    )
    runtime = configure_runtime()
    data = holdout(ds, opts.seed, opts.limit)
    h, w, c = ds.image_shape
    print(
        f"train: {name} on {ds.competition} ({len(data[0])} train / {len(data[2])} validation "
        f"images, {h}x{w}x{c}, {ds.num_classes} classes) {settings.optimizer}"
        f"(lr {settings.learning_rate:g}) batch {settings.batch_size}, {settings.epochs} epochs, "
        f"augment {settings.augment}, {runtime['device']}",
        flush=True,
    )
    keras.utils.set_random_seed(opts.seed)
    result = fit(build_model(name, ds.image_shape, ds.num_classes), settings, data, ds.num_classes)
    run_dir = artifacts.runs_dir(opts.artifacts, ds.competition) / artifacts.new_run_id(name)
    artifacts.save_model(result.model, run_dir / "model.keras")
    artifacts.save_history(run_dir / "history.csv", result.history)
    record = RunRecord(model=name, run_id=run_dir.name, metrics=result.metrics,
                       validation_rows=len(data[3]))  # fmt: skip
    save_json(run_dir / "metrics.json", record)
    atomic_write_json(
        run_dir / "config.json",
        {
            **opts.to_dict(),
            "settings": settings.to_dict(),
            "layout": ds.layout.to_json(),
            "runtime": runtime,
        },
    )
    m = result.metrics
    print(
        f"train: {name} validation accuracy {m.val_accuracy:.4f} (loss {m.val_loss:.4f}) at "
        f"epoch {m.best_epoch}/{m.epochs_run}, the epoch chosen on these same rows (optimistic; "
        f"tune's holdout chooses nothing), train accuracy {m.train_accuracy:.4f} "
        f"(loss {m.train_loss:.4f}), {m.seconds:.0f} s, "
        f"{m.train_images_per_second:.0f} images/s, run {run_dir.name}",
        flush=True,
    )
    return run_dir, record


def run_estimate(record: RunRecord, ds: Dataset):
    """The run's validation accuracy as an estimate: on the rows that chose its epoch."""
    from pipeline.records import Estimate

    rows = record.validation_rows or len(ds.y_train) - int(0.8 * len(ds.y_train))
    return Estimate.of(record.metrics.val_accuracy, rows, "validation", len(ds.x_test))


def run(opts: TrainOptions) -> int:
    from pipeline.data import load
    from pipeline.predict import load_model, predict_proba
    from pipeline.submission import write_predictions

    ds = load(opts)
    run_dir, record = train_run(opts, ds)
    probs = predict_proba(load_model(run_model_path(run_dir, record.model)), ds.x_test)
    np.save(run_dir / "test_proba.npy", probs)
    meta = {"run_id": run_dir.name, "estimate": to_dict(run_estimate(record, ds))}
    print(write_predictions(ds, probs, record.model, meta, opts.submissions, opts.submission))
    return 0
