"""Airbench's whitening initialisation of a network's first convolution.

The first convolution's first filters become the eigenvectors of the training images' patches
(its kernel's size) scaled by 1/sqrt(eigenvalue + eps), each followed by its negative (the ReLU
after keeps both signs); its other filters keep their initialisation. The layer starts by
decorrelating its input, which airbench found worth 35 -> 21 epochs on CIFAR-10 and
bench/speedrun.py measured here (bench/README.md; airbench's next step, identity-initialised
convolutions, did not pay here and is in its *Tried and removed*).
"""

from __future__ import annotations

import numpy as np

from pipeline.batchnorm import all_layers

# plenty for a covariance of at most 75 numbers (5x5x3); the float64 copy is ~45 MB for a 3x3
# RGB stem where a worker has ~1,900 MiB
MAX_PATCHES = 200_000
EPS = 5e-4  # airbench's: keeps the smallest eigenvalues' filters bounded


def first_conv(model):
    """The model's first Conv2D (nested models walked), or None."""
    import keras

    return next((lyr for lyr in all_layers(model) if type(lyr) is keras.layers.Conv2D), None)


def patches(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Every ``size`` patch of float images (n, h, w, c), flattened as a Conv2D kernel is
    (rows, then columns, then channels): shape (patches, kh * kw * c)."""
    kh, kw = size
    view = np.lib.stride_tricks.sliding_window_view(images, (kh, kw), axis=(1, 2))
    return view.transpose(0, 1, 2, 4, 5, 3).reshape(-1, kh * kw * images.shape[-1])


def whitening_filters(p: np.ndarray, eps: float = EPS) -> tuple[np.ndarray, np.ndarray]:
    """(eigenvalues, filters) of patches ``p``: the largest first, each filter (a row) an
    eigenvector of the patches' covariance over sqrt(eigenvalue + eps)."""
    centred = p.astype(np.float64)
    centred -= centred.mean(axis=0)
    cov = centred.T @ centred / max(len(p) - 1, 1)
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1]
    values, vectors = values[order], vectors[:, order]
    return values, (vectors / np.sqrt(np.maximum(values, 0.0) + eps)).T


def conv_input(model, conv, x_uint8: np.ndarray) -> np.ndarray:
    """What ``conv`` sees for the images: [0, 1] floats (the pipeline's scaling), passed through
    the layers before it (a resize, a channel repeat) where there are any."""
    import keras

    x = x_uint8.astype(np.float32) / 255.0
    if conv.input is model.inputs[0]:
        return x
    return np.asarray(keras.Model(model.inputs, conv.input)(x, training=False))


def whiten_first_conv(model, x_uint8: np.ndarray, eps: float = EPS) -> int:
    """Set the first convolution's first filters to the patches' whitening (see the module);
    the number of filter pairs set (0 without a convolution)."""
    conv = first_conv(model)
    if conv is None:
        return 0
    weights = conv.get_weights()
    kernel = weights[0]  # (kh, kw, channels, filters)
    kh, kw = kernel.shape[:2]
    h, w = conv.input.shape[1:3]
    per_image = max((h - kh + 1) * (w - kw + 1), 1)
    rows = max(1, min(len(x_uint8), MAX_PATCHES // per_image))
    p = patches(conv_input(model, conv, x_uint8[:rows]), (kh, kw))
    _, filters = whitening_filters(p, eps)
    n = min(len(filters), kernel.shape[-1] // 2)
    for i in range(n):
        f = filters[i].reshape(kernel.shape[:3])
        kernel[..., 2 * i], kernel[..., 2 * i + 1] = f, -f
    conv.set_weights([kernel, *weights[1:]])
    return n
