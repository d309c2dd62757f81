"""Stage 3: model -> class probabilities (optionally averaged over test-time shifts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError

# test-time augmentation: the identity plus one-pixel shifts in four directions
TTA_SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))


def load_model(path: Path):
    """Load a saved ``model.keras`` (or a classical entry's ``.joblib``); a missing or damaged
    file is a one-line error."""
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"{path}: no such model file; train one with ./run.sh train or tune")
    from pipeline import classical

    if path.suffix == classical.SUFFIX:
        return classical.load(path)
    from pipeline.device import configure_runtime

    configure_runtime()  # first: TensorFlow's start-up messages are silenced there
    import keras

    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for a bad file
        raise PipelineError(
            f"{path}: cannot load the model ({type(exc).__name__}: {exc})"
        ) from None


def _shift(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Shift uint8 images by whole pixels, filling with zeros (the background)."""
    if dy == 0 and dx == 0:
        return x
    out = np.zeros_like(x)
    h, w = x.shape[1:3]
    ys = slice(max(dy, 0), h + min(dy, 0))
    xs = slice(max(dx, 0), w + min(dx, 0))
    yd = slice(max(-dy, 0), h + min(-dy, 0))
    xd = slice(max(-dx, 0), w + min(-dx, 0))
    out[:, ys, xs] = x[:, yd, xd]
    return out


def views(shifts: bool = False, flip: bool = False) -> list[tuple[int, int, bool]]:
    """Test-time views (dy, dx, mirrored): the identity first, then one-pixel shifts and/or the
    left-right mirror of each."""
    base = list(TTA_SHIFTS if shifts else TTA_SHIFTS[:1])
    return [(dy, dx, False) for dy, dx in base] + (
        [(dy, dx, True) for dy, dx in base] if flip else []
    )


def predict_batch(model) -> int:
    """The batch ``model`` predicts in (:func:`pipeline.memory.predict_batch`)."""
    from pipeline.memory import predict_batch as batch_for
    from pipeline.models import count_activations

    return batch_for(count_activations(model))


def view_probas(model, x: np.ndarray, which, batch_size: int | None = None) -> list[np.ndarray]:
    """Class probabilities for uint8 images under each view, so that a caller can score plain
    and augmented predictions from one set of passes (``batch_size``: by default
    :func:`predict_batch`)."""
    from pipeline import classical

    out = []
    for dy, dx, mirrored in which:
        images = _shift(x, dy, dx)
        if mirrored:
            images = images[:, :, ::-1]
        images = np.ascontiguousarray(images)
        if classical.is_classical(model):
            out.append(classical.probabilities(model, images))
            continue
        from pipeline.training import make_dataset

        ds = make_dataset(images, None, 0, batch_size or predict_batch(model))
        out.append(np.asarray(model.predict(ds, verbose=0), dtype=np.float64))
    return out


def predict_proba(
    model, x: np.ndarray, batch_size: int | None = None, tta: bool = False, flip: bool = False
) -> np.ndarray:
    """Class probabilities for uint8 images; ``tta`` averages over one-pixel shifts, ``flip``
    over the left-right mirror too."""
    return np.mean(view_probas(model, x, views(tta, flip), batch_size), axis=0).astype(np.float32)
