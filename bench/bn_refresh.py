"""Benchmark: does a final model gain when its batch-norm statistics are re-estimated?

Diagnoses the weights' moving average (``tune --ema``): the averaged weights are submitted with
the moving batch-norm statistics of the last step's weights. For each run folder of
bench/ablate.py, the final model (``final.keras``) is scored on its run's holdout and on the
sealed rows, with the views its run used (plain + mirror on the demo), before and after its
batch-norm statistics are recomputed as the plain mean over ``--batches`` batches of 256 of its
training rows (no augmentation; ``pipeline.batchnorm.refresh_batch_norm``, as ``--ema`` does now),
the weights unchanged.

    .venv/bin/python bench/bn_refresh.py bench/results/ablate-STAMP-*
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from views import run_data  # noqa: E402


def score(model, x, y, which) -> float:
    from pipeline.predict import view_probas

    return float((np.mean(view_probas(model, x, which), axis=0).argmax(1) == y).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--batches", type=int, default=40)
    args = ap.parse_args()
    from pipeline.batchnorm import refresh_batch_norm
    from pipeline.predict import load_model, views

    which = views(False, True)
    for run in args.runs:
        tune, ds, (x_tr, _, x_ho, y_ho), truth = run_data(run)
        model = load_model(tune / "models" / "final.keras")
        before = (score(model, x_ho, y_ho, which), score(model, ds.x_test, truth, which))
        refresh_batch_norm(model, x_tr, args.batches)
        after = (score(model, x_ho, y_ho, which), score(model, ds.x_test, truth, which))
        print(f"| {run.name} | {before[0]:.4f} | {after[0]:.4f} | {before[1]:.4f} | "
              f"{after[1]:.4f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
