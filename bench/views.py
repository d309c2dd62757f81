"""Benchmark: which test-time views pay, measured on the final models that runs left behind.

For each run folder of bench/ablate.py (``ablate-STAMP-TAG-VARIANT-SEED``), the final fit's
model (``final.keras``) is scored under each set of views on its run's holdout (which it never
trained on) and on the sealed rows. Views: plain, mirror, one-pixel shifts, shifts with the
mirror. One row per run, then the mean gain of each view set over plain, with its min-max over
runs.

    .venv/bin/python bench/views.py bench/results/ablate-STAMP-*
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SETS = {"plain": (False, False), "mirror": (False, True), "shifts": (True, False),
        "shifts+mirror": (True, True)}  # fmt: skip


def run_data(run: Path):
    """(dataset, holdout split, sealed labels in test order) of a run folder."""
    import pandas as pd

    from pipeline.data import holdout, load_competition

    tune = next(run.glob("artifacts/*/tune"))
    tag, seed = run.name.split("-")[-3], run.name.split("-")[-1]  # ablate-STAMP-TAG-NAME-SEED
    comp = ROOT / "bench" / "results" / f"sealed-{tag}-{seed}" / "fashion-mnist"
    ds = load_competition(comp)
    sealed = pd.read_csv(comp.parent / "labels.csv", dtype={"Id": str}).set_index("Id")
    labels = sealed.loc[ds.test_ids, "Label"]
    truth = np.searchsorted(ds.classes, labels.to_numpy())
    return tune, ds, holdout(ds, 42), truth


def scores(model_path: Path, sets, x_ho, y_ho, x_te, y_te) -> dict:
    from pipeline.predict import load_model, view_probas, views

    model = load_model(model_path)
    out = {}
    for name in sets:
        which = views(*SETS[name])
        for part, x, y in (("holdout", x_ho, y_ho), ("sealed", x_te, y_te)):
            if x is None:
                continue
            p = np.mean(view_probas(model, x, which), axis=0)
            out[(name, part)] = float((p.argmax(1) == y).mean())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    args = ap.parse_args()
    rows = []
    for run in args.runs:
        tune, ds, split, truth = run_data(run)
        path = tune / "models" / "final.keras"
        if not path.exists():
            continue
        s = scores(path, SETS, split[2], split[3], ds.x_test, truth)
        rows.append((run.name, path.name, s))
        print(run.name, path.name, {f"{k[0]}/{k[1]}": round(v, 4) for k, v in s.items()},
              flush=True)  # fmt: skip
    for model in ("final.keras",):
        for part in ("holdout", "sealed"):
            got = [s for _, m, s in rows if m == model and ("plain", part) in s]
            if not got:
                continue
            print(f"\n{model} on the {part} rows, {len(got)} runs: gain over plain")
            for name in SETS:
                gains = [s[(name, part)] - s[("plain", part)] for s in got]
                mean = np.mean([s[(name, part)] for s in got])
                print(f"  {name:<14} {mean:.4f}  {np.mean(gains):+.4f} "
                      f"({min(gains):+.4f}..{max(gains):+.4f})")  # fmt: skip


if __name__ == "__main__":
    main()
