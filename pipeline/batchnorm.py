"""Batch normalization's moving statistics: their momentum fitted to the epoch length, and
their re-estimation for averaged weights."""

from __future__ import annotations

import math

import numpy as np


def _all_layers(layer):
    for sub in getattr(layer, "layers", []):
        yield sub
        yield from _all_layers(sub)


def adapt_batch_norm(model, steps_per_epoch: int) -> float | None:
    """Match BatchNormalization's moving-average momentum to the epoch length.

    Keras' 0.99 averages over ~100 steps: fine for the study's 1,500 steps per epoch, but with a
    few dozen large batches per epoch the moving statistics still hold their initial values when
    the holdout is scored (measured: cnn7, 6,000 rows, batch 256, 3 epochs: holdout accuracy
    0.10/0.10/0.16 with 0.99 versus 0.17/0.76/0.80 with 0.9, train accuracy alike). The average
    should span at most a fifth of an epoch: momentum = 1 - 5/steps, within [0.5, 0.99] (0.9 as
    the floor still left resnet9s at chance after 2 epochs of 8 steps in ``tune --quick``).
    """
    import keras

    bns = [
        layer
        for layer in _all_layers(model)
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
    ]
    if not bns:
        return None
    momentum = float(min(0.99, max(0.5, 1.0 - 5.0 / max(steps_per_epoch, 1))))
    for layer in bns:
        layer.momentum = momentum
    return momentum


# Batches of training images whose statistics replace the moving ones after the weights are
# averaged (--ema). Keras averages the trainable weights only, so the averaged model kept the
# last step's batch-norm statistics: at 900 s on the demo, `--ema 2` lost 1.5 points on the
# sealed rows, and re-estimating over 40 batches of 256 gave back 1.1-1.2 of them (seed 1; 0.2-0.4
# on seed 2) and moved models that were not averaged by -0.2..0.0 (bench/bn_refresh.py).
REFRESH_BATCHES = 40
REFRESH_BATCH_SIZE = 256


def refresh_batch_norm(model, x: np.ndarray, batches: int = REFRESH_BATCHES,
                       batch_size: int = REFRESH_BATCH_SIZE, seed: int = 0) -> int:  # fmt: skip
    """Recompute every batch-norm layer's moving mean and variance as the plain average over
    ``batches`` random batches of ``x`` (uint8 images, no augmentation) in training mode; the
    weights stay. Returns the images used (0 without batch norm)."""
    import keras

    bns = [layer for layer in _all_layers(model)
           if isinstance(layer, keras.layers.BatchNormalization)]  # fmt: skip
    if not bns or len(x) == 0:
        return 0
    kept = [layer.momentum for layer in bns]
    order = np.random.default_rng(seed).permutation(len(x))
    n = min(batches, math.ceil(len(x) / batch_size))
    for i in range(n):
        for layer in bns:  # a running mean of the batches: batch i weighs 1 / (i + 1)
            layer.momentum = 1.0 - 1.0 / (i + 1)
        rows = np.sort(order[i * batch_size : (i + 1) * batch_size])
        model(x[rows].astype(np.float32) / 255.0, training=True)
    for layer, momentum in zip(bns, kept, strict=True):
        layer.momentum = momentum
    return min(len(x), n * batch_size)
