"""Benchmark: the final fit's recipe in epochs to a target, as airbench measures, so that the
machine's speed drops out.

Trains resnet9s from scratch with the final fit's recipe (SGD-Nesterov 0.1, batch 256,
pad-and-crop and mirror, label smoothing 0.1, one warmup epoch, a cosine over the epochs asked)
on the demo less its sealed rows (bench/leaderboard.py's 10,000), for each epoch count and seed,
and reports per variant and epoch count: accuracy on VALIDATION_ROWS of the labelled rows kept
out of training (the rows a change is chosen on), the sealed accuracy (plain and with the mirror
as a test-time view: what the final fit submits; reported, never chosen on), seconds per epoch.

    .venv/bin/python bench/speedrun.py [--variants baseline] [--epochs 4,8,16] [--seeds 3]
        [--limit N]

Each run goes to bench/results/speedrun-<stamp>.jsonl; the table (mean, min..max over seeds)
is printed at the end. A variant is a change to the recipe or the network, each added to the
one before (VARIANTS); the baseline is today's recipe.
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


def whiten_stem(model, x_train, eps: float = 5e-4) -> None:
    """Airbench's whitening initialisation, on resnet9s's 3x3 stem: its first filters are the
    eigenvectors of the training images' 3x3 patches scaled by 1/sqrt(eigenvalue), each with its
    negative (the rest keep their initialisation)."""
    conv = model.get_layer("stem_conv")
    kernel = conv.get_weights()[0]  # (3, 3, channels, filters)
    x = x_train[:5000].astype(np.float32) / 255.0
    patches = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(1, 2))
    patches = patches.transpose(0, 1, 2, 4, 5, 3).reshape(-1, 9 * x.shape[-1])
    patches = patches - patches.mean(axis=0)
    values, vectors = np.linalg.eigh(np.cov(patches, rowvar=False))
    order = np.argsort(values)[::-1]
    n = min(len(values), kernel.shape[-1] // 2)
    for i, j in enumerate(order[:n]):
        w = (vectors[:, j] / np.sqrt(values[j] + eps)).reshape(kernel.shape[:3])
        kernel[..., 2 * i], kernel[..., 2 * i + 1] = w, -w
    conv.set_weights([kernel])


def dirac_convs(model, x_train=None) -> None:
    """Airbench's identity initialisation: each 3x3 convolution after the stem passes its input
    through on its first ``in`` output channels (a dirac kernel), the others keep theirs."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D) and layer.name != "stem_conv":
            kernel = layer.get_weights()[0]
            cin, cout = kernel.shape[2], kernel.shape[3]
            k = min(cin, cout)
            kernel[..., :k] = 0.0
            kernel[1, 1, np.arange(k), np.arange(k)] = 1.0
            layer.set_weights([kernel])


def lookahead(total_steps: int, every: int = 5, bn_momentum: float = 0.6):
    """Airbench's lookahead: every ``every`` steps the slow weights move toward the network's
    by 1 - decay (decay rising as 0.95**5 * (step / total)**3) and the network restarts from
    them; at the end the network takes the slow weights. Batch norm's moving averages get the
    fast momentum airbench pairs it with (its PyTorch 0.4 is Keras's 0.6): our earlier EMA with
    slow statistics lost 1.5 points."""
    import keras

    class Lookahead(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            for layer in self.model.layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.momentum = bn_momentum
            self.slow = [np.array(v) for v in self.model.trainable_variables]
            self.step = 0

        def on_train_batch_end(self, batch, logs=None):
            self.step += 1
            if self.step % every == 0:
                self.update(0.95**5 * (self.step / total_steps) ** 3)

        def on_train_end(self, logs=None):
            self.update(1.0)

        def update(self, decay: float) -> None:
            for v, s in zip(self.model.trainable_variables, self.slow, strict=True):
                s += (1.0 - decay) * (np.array(v) - s)
                v.assign(s)

    return [Lookahead()]


def bn_bias_rate(total_steps: int, multiple: float = 64.0):
    """Airbench's learning rate on batch norm's biases (beta): ``multiple`` times the others'
    (their gradients scaled: with SGD and momentum the same step as the rate scaled)."""
    import keras

    class BiasRate(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            opt = self.model.optimizer
            apply = opt.apply

            def scaled(grads, variables=None):
                variables = variables or self.model.trainable_variables
                grads = [g * multiple if v.path.endswith("beta") else g
                         for g, v in zip(grads, variables, strict=True)]  # fmt: skip
                return apply(grads, variables)

            opt.apply = scaled

    return [BiasRate()]


def callbacks_of(factories, steps: int) -> list:
    """The callbacks of a variant's factories, each given the steps in all."""
    return [cb for make in factories for cb in make(steps)]


# name -> (what it changes, changes to the final fit's settings, changes to the built model,
# the callbacks' factories, given the steps in all). Each later entry adds to the one before
# it, as in airbench's table.
BOTH = [whiten_stem, dirac_convs]
VARIANTS = {
    "baseline": ("today's final-fit recipe", {}, [], []),
    "whiten": ("+ whitening initialisation of the stem", {}, [whiten_stem], []),
    "dirac": ("+ identity initialisation of the convolutions", {}, BOTH, []),
    "bnbias": ("+ 64x learning rate on batch norm's biases", {}, BOTH, [bn_bias_rate]),
    "lookahead": (
        "+ lookahead every 5 steps, batch-norm momentum 0.6",
        {},
        BOTH,
        [bn_bias_rate, lookahead],
    ),
    # not in the chain: the bias rate without the identity initialisation (dirac alone read
    # within its seeds' spread)
    "nodirac": ("whitening + 64x bias rate, no identity initialisation", {}, [whiten_stem],
                [bn_bias_rate]),  # fmt: skip
}


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
    model = build_model("resnet9s", x_tr.shape[1:], len(classes))
    _, changes, prepare, extra = VARIANTS[variant]
    for step in prepare:
        step(model, x_tr)
    s = settings(epochs, seed, changes)
    steps = epochs * -(-len(y_tr) // s.batch_size)
    result = fit(model, s, (x_tr, y_tr, x_va, y_va), len(classes), verbose=0, keep_best=False,
                 callbacks=callbacks_of(extra, steps))  # fmt: skip
    plain = predict_proba(model, x_se)
    mirrored = predict_proba(model, x_se, flip=True)
    shifted = predict_proba(model, x_se, tta=True, flip=True)  # airbench's multi-crop views
    m = result.metrics
    return {"variant": variant, "epochs": epochs, "seed": seed, "train_rows": len(y_tr),
            "validation": round(float(result.history["val_accuracy"][-1]), 4),
            "sealed": round(float((plain.argmax(1) == y_se).mean()), 4),
            "sealed_mirror": round(float((mirrored.argmax(1) == y_se).mean()), 4),
            "sealed_views": round(float((shifted.argmax(1) == y_se).mean()), 4),
            "s_per_epoch": round(m.seconds / max(m.epochs_run, 1), 1)}  # fmt: skip


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
    ap.add_argument("--variants", default="baseline")
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
