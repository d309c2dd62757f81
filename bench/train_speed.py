"""Benchmark: what makes CPU training fast, one factor at a time: oneDNN on/off x batch 32/256.

Each cell trains one zoo entry with ``pipeline.training.fit`` (uint8 -> tf.data, the entry's
recipe with the batch size overridden) on the same slice of the demo, in a fresh process
(TensorFlow reads TF_ENABLE_ONEDNN_OPTS when it is imported). The cells run in a new random order
every repeat, so drift of a noisy machine spreads over all of them. Epoch 1 (graph tracing) is
left out; a cell's figure is the median of its later epochs' images/s.

    .venv/bin/python bench/train_speed.py [--model cnn7] [--rows 6000] [--epochs 3] [--repeats 3]

Prints one line per run, then per cell the median and spread over repeats, and the effect of each
factor with the other held (the ratio of medians).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BATCHES = (32, 256)
ONEDNN = ("0", "1")


def child(model: str, rows: int, batch: int, epochs: int) -> None:
    sys.path.insert(0, str(ROOT))
    from pipeline import device
    from pipeline.data import holdout, load_competition
    from pipeline.models import build_model, get_entry
    from pipeline.training import fit, settings_for

    device.quiet()
    ds = load_competition(ROOT / "input" / "fashion-mnist", cache_dir=ROOT / "artifacts" / "cache")
    x_tr, y_tr, x_va, y_va = holdout(ds, 0, limit=rows)
    settings = settings_for(get_entry(model), seed=0, epochs=epochs, batch_size=batch)
    r = fit(build_model(model, ds.image_shape, ds.num_classes), settings,
            (x_tr, y_tr, x_va, y_va), ds.num_classes, verbose=0)  # fmt: skip
    secs = r.history["seconds"][1:]
    print(json.dumps({"images_per_second": len(x_tr) / statistics.median(secs)}))


def run_cell(a, onednn: str, batch: int) -> float:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": onednn}
    cmd = [sys.executable, __file__, "--child", "--model", a.model, "--rows", str(a.rows),
           "--epochs", str(a.epochs), "--batch", str(batch)]  # fmt: skip
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["images_per_second"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="cnn7")
    ap.add_argument("--rows", type=int, default=6000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--child", action="store_true")
    a = ap.parse_args()
    if a.child:
        child(a.model, a.rows, a.batch, a.epochs)
        return
    cells = list(itertools.product(ONEDNN, BATCHES))
    got: dict[tuple[str, int], list[float]] = {c: [] for c in cells}
    rng = random.Random(0)
    for i in range(a.repeats):
        rng.shuffle(cells)
        for onednn, batch in cells:
            ips = run_cell(a, onednn, batch)
            got[(onednn, batch)].append(ips)
            print(f"run {i + 1} oneDNN {onednn} batch {batch:4d}: {ips:7.0f} images/s", flush=True)
    med = {c: statistics.median(v) for c, v in got.items()}
    print(f"\n{a.model}, {a.rows} rows, median of {a.repeats} runs (min-max):")
    for c in sorted(got):
        lo, hi = min(got[c]), max(got[c])
        print(f"  oneDNN {c[0]} batch {c[1]:4d}: {med[c]:7.0f} ({lo:.0f}-{hi:.0f})")
    for b in BATCHES:
        print(f"  oneDNN on/off at batch {b}: {med[('1', b)] / med[('0', b)]:.2f}x")
    for d in ONEDNN:
        print(f"  batch 256/32 with oneDNN {d}: {med[(d, 256)] / med[(d, 32)]:.2f}x")


if __name__ == "__main__":
    main()
