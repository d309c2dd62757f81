"""Benchmark: training images/second of cnn7, the pipeline's way versus the study's way.

The study's way: Sequential model, float32 numpy arrays, ``fit(batch_size=32)``, stock TensorFlow
settings (oneDNN off). The pipeline's way: ``pipeline.training.fit`` (uint8 -> tf.data, oneDNN on,
batch 256). Same data slice; each measurement in a fresh process (TensorFlow reads
TF_ENABLE_ONEDNN_OPTS at import); runs alternate; the median ratio is reported.

    .venv/bin/python bench/train_speed.py [--rows 6000] [--repeats 3]
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


def child(mode: str, rows: int, batch: int) -> None:
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from pipeline.data import holdout, load_competition

    ds = load_competition(ROOT / "input" / "fashion-mnist", cache_dir=ROOT / "artifacts" / "cache")
    x_tr, y_tr, x_va, y_va = holdout(ds, 0, limit=rows)
    import keras

    if mode == "study":
        from keras import layers

        m = keras.Sequential(
            [
                keras.Input((28, 28, 1)),
                layers.Conv2D(32, 5, padding="same", activation="relu"),
                layers.BatchNormalization(),
                layers.Conv2D(32, 5, padding="same", activation="relu"),
                layers.BatchNormalization(),
                layers.MaxPooling2D(2),
                layers.Dropout(0.25),
                layers.Conv2D(64, 3, padding="same", activation="relu"),
                layers.BatchNormalization(),
                layers.Conv2D(64, 3, padding="same", activation="relu"),
                layers.MaxPooling2D(2, strides=2),
                layers.Dropout(0.25),
                layers.BatchNormalization(),
                layers.Flatten(),
                layers.Dense(256, activation="relu"),
                layers.Dropout(0.25),
                layers.Dense(ds.num_classes, activation="softmax"),
            ]
        )
        m.compile(
            optimizer=keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True),
            loss="categorical_crossentropy",
            metrics=["accuracy"],
        )
        xf, xv = x_tr.astype("float32") / 255.0, x_va.astype("float32") / 255.0
        yf = keras.utils.to_categorical(y_tr, ds.num_classes)
        yv = keras.utils.to_categorical(y_va, ds.num_classes)
        times = []

        class T(keras.callbacks.Callback):
            def on_epoch_begin(self, e, logs=None):
                self.t = time.perf_counter()

            def on_epoch_end(self, e, logs=None):
                times.append(time.perf_counter() - self.t)

        m.fit(
            xf,
            yf,
            batch_size=32,
            epochs=3,
            validation_data=(xv, yv),
            verbose=0,
            callbacks=[T()],
            shuffle=False,
        )
        secs = times[1:]
    else:
        from pipeline.models import build_model, get_entry
        from pipeline.training import fit, settings_for

        settings = settings_for(get_entry("cnn7"), seed=0, epochs=3, batch_size=batch)
        r = fit(
            build_model("cnn7", ds.image_shape, ds.num_classes),
            settings,
            (x_tr, y_tr, x_va, y_va),
            ds.num_classes,
            verbose=0,
        )
        secs = r.history["seconds"][1:]
    # epoch 1 holds graph tracing: excluded
    print(json.dumps({"mode": mode, "images_per_second": len(x_tr) / statistics.median(secs)}))
    del np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=6000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--child", choices=["study", "pipeline"])
    a = ap.parse_args()
    if a.child:
        child(a.child, a.rows, a.batch)
        return
    results: dict[str, list[float]] = {"study": [], "pipeline": []}
    ratios = []
    for i in range(a.repeats):
        pair = {}
        for mode in ("study", "pipeline") if i % 2 == 0 else ("pipeline", "study"):
            env = {
                **os.environ,
                "TF_CPP_MIN_LOG_LEVEL": "3",
                "TF_ENABLE_ONEDNN_OPTS": "0" if mode == "study" else "1",
            }
            out = (
                subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--child",
                        mode,
                        "--rows",
                        str(a.rows),
                        "--batch",
                        str(a.batch),
                    ],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            pair[mode] = json.loads(out)["images_per_second"]
            results[mode].append(pair[mode])
            print(f"run {i + 1} {mode:9s} {pair[mode]:8.0f} images/s", flush=True)
        ratios.append(pair["pipeline"] / pair["study"])
    print(
        json.dumps(
            {
                "rows": a.rows,
                "pipeline_batch": a.batch,
                "study_median": statistics.median(results["study"]),
                "pipeline_median": statistics.median(results["pipeline"]),
                "median_ratio": statistics.median(ratios),
                "ratios": ratios,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
