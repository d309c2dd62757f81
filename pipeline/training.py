"""Stage 2: arrays -> trained model.

Compiles a registry model with a recipe (:class:`TrainSettings`), feeds uint8 images through
``tf.data`` (cast and scale per batch, shuffle, prefetch), validates on the holdout every epoch,
and keeps the weights of the best epoch by val_accuracy. Returns the model, its history and
:class:`FitMetrics`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.batchnorm import adapt_batch_norm, bias_variables
from pipeline.errors import PipelineError
from pipeline.optimizers import OPTIMIZERS, SGD_FAMILY, make_optimizer

# a deadline: ``time.monotonic()`` seconds, or a function returning them (re-read every epoch)
When = float | Callable[[], float]


# Augmentation, as "+"-joined parts (e.g. "crop+flip+erase"; "off" for none). "light" and "strong"
# are the study's geometric ones: (rotation in degrees, shift fraction, zoom fraction); "strong" is
# study 000's (rotation up to 15 degrees, width/height shifts) plus a small zoom. "crop": random
# whole-pixel shifts of up to 1/14 of the side (2 px at 28x28, zero-filled: pad-and-crop); "flip":
# left-right mirror (only for data whose labels survive it: tune decides); "erase": random erasing
# of a patch in half of the images.
GEOMETRIC = {"light": (8.0, 0.08, 0.05), "strong": (15.0, 0.1, 0.1)}
AUGMENT_PARTS = ("off", *GEOMETRIC, "crop", "flip", "erase")


def augment_parts(augment: str) -> list[str]:
    """The parts of an augmentation string; an unknown part is a one-line error."""
    parts = [p for p in augment.split("+") if p and p != "off"]
    bad = [p for p in parts if p not in AUGMENT_PARTS]
    if bad:
        raise PipelineError(
            f"unknown augmentation {bad[0]!r}; use {', '.join(AUGMENT_PARTS)} joined by '+'"
        )
    return parts


def with_flip(augment: str, flip: bool) -> str:
    """``augment`` with the left-right flip added (or removed)."""
    parts = [p for p in augment_parts(augment) if p != "flip"] + (["flip"] if flip else [])
    return "+".join(parts) or "off"


@dataclass(frozen=True)
class TrainSettings:
    """The recipe actually used for one fit (the entry's recipe with overrides applied)."""

    optimizer: str
    learning_rate: float
    momentum: float
    batch_size: int
    epochs: int
    reduce_lr: bool
    augment: str = "off"
    label_smoothing: float = 0.0
    # "cosine": anneal the learning rate to 1% over the planned epochs instead of waiting for a
    # plateau (better when only a few epochs fit in the budget)
    schedule: str = "plateau"
    seed: int = 42
    # the learning rate rises linearly from ~0 over this many epochs (batch-norm nets at a high
    # rate otherwise start from a few bad steps, and pruning judged them on those)
    warmup_epochs: float = 0.0
    # the entry's recipe (pipeline.models.registry.Recipe): batch norm's biases step at this
    # multiple of the rate
    bias_rate: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainSettings:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class FitMetrics:
    """What one fit measured; accuracy and loss are those of the kept (best) epoch."""

    val_accuracy: float
    val_loss: float
    train_accuracy: float
    train_loss: float
    best_epoch: int  # 1-based
    epochs_run: int
    seconds: float
    train_images_per_second: float
    params: int
    trainable_params: int
    stopped_by_deadline: bool = False
    device: str = "CPU"
    bn_momentum: float | None = None


@dataclass
class FitResult:
    model: Any
    history: dict[str, list[float]]
    metrics: FitMetrics
    resumed_from: int = 0  # epochs restored from the checkpoint


def read_checkpoint(folder: Path | None) -> dict[str, Any] | None:
    """The state a checkpointed fit saved (see ``callbacks.Checkpoint``), or None."""
    if folder is None:
        return None
    try:
        state = json.loads((Path(folder) / "state.json").read_text())
    except (OSError, ValueError):
        return None
    if not (Path(folder) / str(state.get("weights", ""))).is_file():
        return None
    return state


def airbench_steps(recipe, optimizer: str) -> dict[str, Any]:
    """The recipe's airbench step (the batch-norm bias rate) for a fit with ``optimizer``: the
    rate only with SGD (measured with SGD-Nesterov; Adam's steps ignore a gradient's scale)."""
    return {"bias_rate": recipe.bias_rate if optimizer in SGD_FAMILY else 1.0}


def settings_for(entry, seed: int = 42, **overrides: Any) -> TrainSettings:
    """The entry's study recipe, with any non-None override applied."""
    r = entry.recipe
    base = dict(
        optimizer=r.optimizer,
        learning_rate=r.learning_rate,
        momentum=r.momentum,
        batch_size=r.batch_size,
        epochs=r.epochs,
        reduce_lr=r.reduce_lr,
        seed=seed,
    )
    base.update({k: v for k, v in overrides.items() if v is not None})
    if base["optimizer"] not in OPTIMIZERS:
        raise PipelineError(f"unknown optimizer {base['optimizer']!r}; choose from {OPTIMIZERS}")
    augment_parts(base.get("augment", "off"))  # an unknown part is a one-line error
    return TrainSettings(**{**airbench_steps(r, base["optimizer"]), **base})


def dataset_options(device: str):
    """``tf.data`` options for the device: on a CPU, autotuning off.

    With it on, on 2 cores, many epochs stalled 8-35 s on their first batch and the final fit's
    epochs took ~45 s or ~80 s at random (``bench/input_pipeline.py``). Likely cause: every
    epoch opens a new iterator, whose parallel maps start at the autotuner's initial
    parallelism (16 threads) and fight the training step for the cores. On a GPU the autotuner
    keeps the accelerator fed."""
    import tensorflow as tf

    options = tf.data.Options()
    if device == "CPU":
        options.autotune.enabled = False
    return options


def make_dataset(x, y, num_classes, batch_size, *, shuffle=False, seed=0, augment="off"):
    """uint8 images -> float32 [0, 1] batches (one-hot labels when ``y`` is given), prefetched."""
    from pipeline.device import configure_runtime

    device = configure_runtime()["device"]  # first: TensorFlow's messages silenced there
    import tensorflow as tf

    if y is None:
        ds = tf.data.Dataset.from_tensor_slices(x)
    else:
        ds = tf.data.Dataset.from_tensor_slices((x, y.astype(np.int32)))
    if shuffle:
        ds = ds.shuffle(min(len(x), 60_000), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)

    def scale(images):
        return tf.cast(images, tf.float32) / 255.0

    if y is None:
        ds = ds.map(scale, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(
            lambda a, b: (scale(a), tf.one_hot(b, num_classes)),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        aug = augmentation_layers(augment, seed, x.shape[1:])
        if aug is not None:
            ds = ds.map(
                lambda a, b: (aug(a, training=True), b), num_parallel_calls=tf.data.AUTOTUNE
            )
    return ds.prefetch(tf.data.AUTOTUNE).with_options(dataset_options(device))


def augmentation_layers(augment: str, seed: int = 0, image_shape=(28, 28, 1)):
    """Keras preprocessing layers for an augmentation string, or None for "off"."""
    import keras

    parts = augment_parts(augment)
    if not parts:
        return None
    layers = []
    for i, part in enumerate(parts):
        if part in GEOMETRIC:
            degrees, shift, zoom = GEOMETRIC[part]
            layers += [
                keras.layers.RandomRotation(degrees / 360.0, fill_mode="constant", seed=seed + i),
                keras.layers.RandomTranslation(
                    shift, shift, fill_mode="constant", seed=seed + 10 + i
                ),
                keras.layers.RandomZoom(zoom, fill_mode="constant", seed=seed + 20 + i),
            ]
        elif part == "crop":
            h, w = image_shape[:2]
            layers.append(
                keras.layers.RandomTranslation(
                    max(1, round(h / 14)) / h,
                    max(1, round(w / 14)) / w,
                    fill_mode="constant",
                    interpolation="nearest",
                    seed=seed + i,
                )
            )
        elif part == "flip":
            layers.append(keras.layers.RandomFlip("horizontal", seed=seed + i))
        elif part == "erase":
            layers.append(
                keras.layers.RandomErasing(
                    factor=0.5, scale=(0.02, 0.25), fill_value=0.0, value_range=(0, 1),
                    seed=seed + i,
                )
            )  # fmt: skip
    return keras.Sequential(layers, name="augment_" + "_".join(parts))


def _callbacks(settings: TrainSettings, deadline: When | None, keep_best: bool, state: dict | None):
    """(Keras callbacks, and the ones whose state fit reads afterwards)."""
    import keras

    from pipeline import callbacks

    initial = state["epoch"] if state else 0
    timer = callbacks.EpochTimer()
    cbs: list[Any] = [timer, callbacks.StopOnNaN()]
    best = None
    if keep_best:
        # never stops (patience beyond the epochs); keeps and restores the best epoch's weights
        best = keras.callbacks.EarlyStopping(
            monitor="val_accuracy",
            mode="max",
            patience=settings.epochs + 1,
            restore_best_weights=True,
        )
        cbs.append(best)
    schedule = None
    if settings.schedule == "cosine":
        planned = state.get("planned_epochs") if state else None
        schedule = callbacks.CosineToDeadline(
            settings.learning_rate, settings.epochs, deadline, planned
        )
        cbs.append(schedule)
    elif settings.reduce_lr:
        cbs.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_accuracy", factor=0.5, patience=3, min_lr=1e-5, verbose=0
            )
        )
    if settings.warmup_epochs > initial:
        # after the schedule's own callback: it scales the rate that one set for the epoch
        cbs.append(callbacks.Warmup(settings.warmup_epochs, initial))
    stopper = None
    if deadline is not None:
        stopper = callbacks.Deadline(deadline)
        cbs.append(stopper)
    return cbs, timer, best, stopper, schedule


def fit(
    model,
    settings: TrainSettings,
    data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    num_classes: int,
    *,
    callbacks: list | None = None,
    deadline: When | None = None,
    verbose: int | None = None,
    keep_best: bool = True,
    checkpoint: Path | None = None,
) -> FitResult:
    """Compile ``model`` with ``settings`` and train it on (x_train, y_train, x_val, y_val).

    ``deadline`` (``time.monotonic()`` seconds, or a function returning them, re-read after every
    epoch) stops training after the epoch that reaches it. A NaN/inf loss raises
    ``FloatingPointError``. With ``checkpoint`` (a folder; use with ``keep_best=False``) the fit
    saves its state every epoch and, when the folder holds one, resumes from it: the same
    weights, optimizer state, epoch, history and schedule. A SIGINT/SIGTERM
    (:mod:`pipeline.interrupt`) ends training after the current batch, checkpoint saved."""
    from pipeline.device import configure_runtime

    info = configure_runtime()  # first: TensorFlow's start-up messages are silenced there
    import keras

    from pipeline import callbacks as pcb
    from pipeline import interrupt

    keras.utils.set_random_seed(settings.seed)
    x_train, y_train, x_val, y_val = data
    steps = math.ceil(len(x_train) / settings.batch_size)
    bn_momentum = adapt_batch_norm(model, steps)
    _compile(model, settings, info.get("jit_compile", False))
    state = _resume(model, checkpoint)
    initial = state["epoch"] if state else 0
    cbs, timer, best, stopper, schedule = _callbacks(settings, deadline, keep_best, state)
    saver = None
    if checkpoint is not None:
        saver = pcb.Checkpoint(checkpoint, state["history"] if state else {}, schedule)
        cbs.append(saver)
    cbs.append(pcb.StopOnSignal(saver))
    train_ds = make_dataset(x_train, y_train, num_classes, settings.batch_size, shuffle=True,
                            seed=settings.seed, augment=settings.augment)  # fmt: skip
    val_ds = make_dataset(x_val, y_val, num_classes, max(256, settings.batch_size))
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    t0 = time.perf_counter()
    with interrupt.training():
        hist = model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=settings.epochs,
            initial_epoch=initial,
            callbacks=cbs + list(callbacks or []),
            verbose=verbose,
            shuffle=False,
        )  # fmt: skip (tf.data shuffles)
    seconds = time.perf_counter() - t0
    if saver is not None:  # the history from the first epoch, resumed or not
        history = {k: list(v) for k, v in saver.history.items()}
    else:
        history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    losses = history.get("loss", [])
    if losses and not np.isfinite(losses[-1]):
        raise FloatingPointError("loss became NaN/inf; lower the learning rate")
    kept = best.best_epoch if best is not None and best.best_weights is not None else None
    trained = (len(x_train) * len(timer.seconds), sum(timer.seconds))  # in this call
    metrics = _metrics(model, history, kept, seconds, trained, info["device"], bn_momentum,
                       bool(stopper and stopper.hit))  # fmt: skip
    return FitResult(model, history, metrics, resumed_from=initial)


def _compile(model, settings: TrainSettings, jit_compile: bool) -> None:
    import keras

    optimizer = make_optimizer(settings.optimizer, settings.learning_rate, settings.momentum,
                               fast=bias_variables(model), multiple=settings.bias_rate)  # fmt: skip
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=settings.label_smoothing),
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )


def _resume(model, checkpoint: Path | None) -> dict | None:
    """The checkpoint's state with its weights and optimizer state loaded into ``model``, or
    None (no checkpoint, or an unreadable one: train from the start)."""
    state = read_checkpoint(checkpoint)
    if state is None:
        return None
    try:
        model.optimizer.build(model.trainable_variables)
        model.load_weights(Path(checkpoint) / state["weights"])
    except (OSError, ValueError):
        return None
    return state


def _metrics(model, history: dict, kept: int | None, seconds: float, trained: tuple,
             device: str, bn_momentum, stopped: bool) -> FitMetrics:  # fmt: skip
    """FitMetrics of the kept epoch (``kept``, 0-based; None: the last); ``trained``: (images,
    seconds) trained in this call, for its speed."""
    epochs_run = len(history.get("loss", []))
    b = max(epochs_run - 1 if kept is None else kept, 0)
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    total = trainable + sum(math.prod(w.shape) for w in model.non_trainable_weights)

    def at(key: str) -> float:
        values = history.get(key) or [float("nan")]
        return values[min(b, len(values) - 1)]

    return FitMetrics(
        val_accuracy=at("val_accuracy"), val_loss=at("val_loss"), train_accuracy=at("accuracy"),
        train_loss=at("loss"), best_epoch=b + 1, epochs_run=epochs_run,
        seconds=round(seconds, 2),
        train_images_per_second=round(trained[0] / max(trained[1], 1e-9), 1),
        params=int(total), trainable_params=int(trainable), stopped_by_deadline=stopped,
        device=device, bn_momentum=bn_momentum,
    )  # fmt: skip
