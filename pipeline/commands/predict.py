"""``predict``: the test set again from a saved run or model file, written as a submission."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.options import PredictOptions


def run(opts: PredictOptions) -> int:
    from pipeline import artifacts
    from pipeline.classical import is_classical
    from pipeline.commands.train import run_estimate, run_model_path
    from pipeline.data import load
    from pipeline.errors import PipelineError
    from pipeline.predict import load_model, predict_proba
    from pipeline.records import RunRecord, load_json, to_dict
    from pipeline.submission import write_predictions

    ds = load(opts)
    meta: dict[str, Any] = {}
    if opts.run:
        run_dir = artifacts.find_run(opts.artifacts, ds.competition, opts.run)
        record = load_json(RunRecord, run_dir / "metrics.json")
        model_path = run_model_path(run_dir, record.model)
        name = record.model or opts.run
        meta = {"run_id": opts.run, "estimate": to_dict(run_estimate(record, ds))}
    else:
        model_path = Path(opts.model_path)
        name = model_path.parent.name or model_path.stem
    model = load_model(model_path)
    out_classes = int(max(model.classes_)) + 1 if is_classical(model) else model.output_shape[-1]
    if out_classes != ds.num_classes:
        raise PipelineError(
            f"{model_path}: the model predicts {out_classes} classes, {ds.competition} has "
            f"{ds.num_classes}; use a model trained on this competition"
        )
    probs = predict_proba(model, ds.x_test, tta=opts.tta)
    print(write_predictions(ds, probs, name, meta, opts.submissions, opts.submission))
    return 0
