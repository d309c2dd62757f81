"""Benchmark: the final fit's recipe in epochs to a target, as airbench measures, so that the
machine's speed drops out.

Trains resnet9s from scratch with the final fit's recipe (SGD-Nesterov 0.1, batch 256,
pad-and-crop and mirror, label smoothing 0.1, one warmup epoch, a cosine over the epochs asked;
batch norm's biases at 64x the rate)
on the demo less its sealed rows (bench/leaderboard.py's 10,000), for each epoch count and seed,
and reports per variant and epoch count: accuracy on VALIDATION_ROWS of the labelled rows kept
out of training (the rows a change is chosen on), the sealed accuracy (plain and with the mirror
as a test-time view: what the final fit submits; reported, never chosen on), seconds per epoch.

    .venv/bin/python bench/speedrun.py [--variants baseline,recipe,...] [--epochs 4,8,16]
        [--seeds 3] [--limit N]

Each run goes to bench/results/speedrun-<stamp>.jsonl; the table (mean, min..max over seeds)
is printed at the end. A variant is a change to the recipe, each added to the one before
(VARIANTS); the baseline is the recipe before airbench's steps, "recipe" today's; the variants
after it change one thing in today's recipe.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
from leaderboard import OUT, sealed_competition  # noqa: E402

VALIDATION_ROWS = 5000  # of the 50,000 labelled rows: kept out of training, they choose


# name -> (what it changes, changes to the final fit's settings or resnet9s's builder). Up to
# "recipe" (today's, resnet9s's in the registry) each entry adds to the one before it, as in
# airbench's table.
# The identity (dirac) initialisation and lookahead with fast batch-norm momentum were measured
# with this script at 28a2ad3, the whitened stem at 1a79f84 (its "whiten" and "bias" variants),
# and removed (bench/README.md, *Tried and removed*).
VARIANTS = {
    "baseline": ("the final fit's recipe before airbench's steps", {"bias_rate": 1.0}),
    "recipe": ("+ 64x learning rate on batch norm's biases: today's recipe", {}),
    # off the chain: each is today's recipe with one thing changed
    "wide": ("today's recipe on resnet9s 1.41x as wide (~2x the cost per epoch)",
             {"width": 1.41}),
}  # fmt: skip
HP = ("width",)  # changes that go to the model's builder, not to the fit's settings


def load(limit: int | None):
    """(x_train, y_train, x_val, y_val, x_sealed, y_sealed, classes) from the demo less its
    sealed rows; ``limit`` trains on that many rows only (a smoke run)."""
    from sklearn.model_selection import train_test_split

    from pipeline.data import load_competition

    comp = sealed_competition(OUT / "suite-data" / "demo-42", 42, None)
    ds = load_competition(comp, cache_dir=OUT / "cache")
    idx = np.arange(len(ds.y_train))
    tr, va = train_test_split(idx, test_size=VALIDATION_ROWS, random_state=0,
                              stratify=ds.y_train)  # fmt: skip
    tr = tr[:limit] if limit else tr
    truth = pd.read_csv(comp.parent / "labels.csv")
    where = pd.Series(np.arange(len(ds.test_ids)), index=ds.test_ids.astype(str))
    rows = where.loc[truth.iloc[:, 0].astype(str)].to_numpy()
    label_of = {str(c): i for i, c in enumerate(ds.classes)}
    y_sealed = truth.iloc[:, 1].astype(str).map(label_of).to_numpy()
    return (ds.x_train[tr], ds.y_train[tr], ds.x_train[va], ds.y_train[va], ds.x_test[rows],
            y_sealed, ds.classes)  # fmt: skip


def settings(epochs: int, seed: int, changes: dict):
    """The final fit's settings for resnet9s trained ``epochs`` from scratch."""
    from pipeline.models import get_entry
    from pipeline.search_space import WARM_START
    from pipeline.training import settings_for, with_flip

    return settings_for(get_entry("resnet9s"), seed=seed, optimizer=WARM_START["optimizer"],
                        learning_rate=WARM_START["lr_sgd-nesterov"],
                        batch_size=WARM_START["batch_size"], epochs=epochs, schedule="cosine",
                        reduce_lr=False, warmup_epochs=1.0, label_smoothing=0.1,
                        augment=with_flip(WARM_START["augment"], True), **changes)  # fmt: skip


def run_one(data, variant: str, epochs: int, seed: int) -> dict:
    from pipeline.device import fresh_session
    from pipeline.models import build_model
    from pipeline.predict import predict_proba
    from pipeline.training import fit

    x_tr, y_tr, x_va, y_va, x_se, y_se, classes = data
    fresh_session()
    changes = VARIANTS[variant][1]
    hp = {k: v for k, v in changes.items() if k in HP}
    model = build_model("resnet9s", x_tr.shape[1:], len(classes), **hp)
    s = settings(epochs, seed, {k: v for k, v in changes.items() if k not in HP})
    result = fit(model, s, (x_tr, y_tr, x_va, y_va), len(classes), verbose=0, keep_best=False)
    plain = predict_proba(model, x_se)
    mirrored = predict_proba(model, x_se, flip=True)
    shifted = predict_proba(model, x_se, tta=True, flip=True)  # airbench's multi-crop views
    m = result.metrics
    return {"variant": variant, "epochs": epochs, "seed": seed, "train_rows": len(y_tr),
            "validation": round(float(result.history["val_accuracy"][-1]), 4),
            "sealed": round(float((plain.argmax(1) == y_se).mean()), 4),
            "sealed_mirror": round(float((mirrored.argmax(1) == y_se).mean()), 4),
            "sealed_views": round(float((shifted.argmax(1) == y_se).mean()), 4),
            "s_per_epoch": round(m.seconds / max(m.epochs_run, 1), 1),
            "params": m.params}  # fmt: skip


def table(rows: list[dict]) -> str:
    df = pd.DataFrame(rows)
    lines = ["| variant | epochs | seeds | validation | sealed | sealed, mirror view | "
             "sealed, shifts and mirror | s/epoch |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip

    def span(v):
        return f"{v.mean():.4f} ({v.min():.4f}-{v.max():.4f})"

    for (variant, epochs), g in df.groupby(["variant", "epochs"], sort=False):
        lines.append(f"| {variant} | {epochs} | {len(g)} | {span(g.validation)} | "
                     f"{span(g.sealed)} | {span(g.sealed_mirror)} | {span(g.sealed_views)} | "
                     f"{g.s_per_epoch.mean():.1f} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--epochs", default="4,8,16")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--limit", type=int, help="train rows (a smoke run)")
    a = ap.parse_args()
    data = load(a.limit)
    out = OUT / f"speedrun-{time.strftime('%Y%m%dT%H%M%S')}.jsonl"
    rows = []
    for variant in a.variants.split(","):
        for epochs in map(int, a.epochs.split(",")):
            for seed in range(a.seeds):
                r = run_one(data, variant, epochs, seed)
                rows.append(r)
                print(json.dumps(r), flush=True)
                with out.open("a") as fh:
                    fh.write(json.dumps(r) + "\n")
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
