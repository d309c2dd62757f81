"""Benchmark: epoch times of the final fit's recipe with tf.data autotuning on and off (CPU).

Trains resnet9s (the 900-1800 s default's choice) with its final-fit settings (SGD-Nesterov,
batch 256, crop+flip, cosine, one warmup epoch) on ``--rows`` demo images for ``--epochs``
epochs; each run in a fresh process, the two modes alternating. Prints every epoch's seconds
and its first batch's (where the stalls were), and the median ratio of the runs' totals.

    .venv/bin/python bench/input_pipeline.py [--rows 20000] [--epochs 6] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child(mode: str, rows: int, epochs: int) -> None:
    sys.path.insert(0, str(ROOT))
    import keras

    from pipeline import training
    from pipeline.data import load_competition
    from pipeline.models import build_model, get_entry

    if mode == "autotune":  # the baseline: tf.data's default options, autotuning on
        import tensorflow as tf

        training.dataset_options = lambda device: tf.data.Options()
    ds = load_competition(ROOT / "input" / "fashion-mnist", cache_dir=ROOT / "artifacts" / "cache")
    x, y = ds.x_train[:rows], ds.y_train[:rows]
    xv, yv = ds.x_train[-2000:], ds.y_train[-2000:]
    first: list[float] = []

    class FirstBatch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            if batch == 0:
                first.append(time.perf_counter() - self.t)

    settings = training.settings_for(get_entry("resnet9s"), seed=0).replace(
        epochs=epochs,
        augment="crop+flip",
        schedule="cosine",
        warmup_epochs=1.0,
        label_smoothing=0.1,
    )
    r = training.fit(
        build_model("resnet9s", ds.image_shape, ds.num_classes),
        settings,
        (x, y, xv, yv),
        ds.num_classes,
        verbose=0,
        keep_best=False,
        callbacks=[FirstBatch()],
    )
    print(json.dumps({"mode": mode, "epochs": r.history["seconds"], "first_batch": first}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--child", choices=["autotune", "fixed"])
    a = ap.parse_args()
    if a.child:
        child(a.child, a.rows, a.epochs)
        return
    totals: dict[str, list[float]] = {"autotune": [], "fixed": []}
    ratios = []
    for i in range(a.repeats):
        pair = {}
        for mode in ("autotune", "fixed") if i % 2 == 0 else ("fixed", "autotune"):
            cmd = [sys.executable, __file__, "--child", mode, "--rows", str(a.rows)]
            cmd += ["--epochs", str(a.epochs)]
            env = {"TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "1"}
            out = subprocess.run(
                cmd, env={**os.environ, **env}, capture_output=True, text=True,
                check=True,
            ).stdout.strip().splitlines()[-1]  # fmt: skip
            r = json.loads(out)
            pair[mode] = sum(r["epochs"])
            totals[mode].append(pair[mode])
            print(
                f"run {i + 1} {mode:8s} total {pair[mode]:6.1f} s; epochs "
                + " ".join(f"{s:.1f}" for s in r["epochs"])
                + "; first batches "
                + " ".join(f"{s:.1f}" for s in r["first_batch"]),
                flush=True,
            )
        ratios.append(pair["autotune"] / pair["fixed"])
    print(
        json.dumps(
            {
                "rows": a.rows,
                "epochs": a.epochs,
                "autotune_median_s": statistics.median(totals["autotune"]),
                "fixed_median_s": statistics.median(totals["fixed"]),
                "median_ratio_autotune_over_fixed": statistics.median(ratios),
                "ratios": ratios,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
