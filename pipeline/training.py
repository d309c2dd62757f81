"""Stage 2: arrays -> trained model.

Compiles a registry model with its study recipe (overridable), feeds uint8 images through
``tf.data`` (cast and scale per batch, shuffle, prefetch), validates on the holdout every epoch,
applies the recipe's callbacks and keeps the weights of the best epoch by val_accuracy.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.errors import PipelineError

OPTIMIZERS = ("adam", "sgd", "sgd-nesterov", "rmsprop", "adadelta")
# Augmentation strengths: (rotation in degrees, shift fraction, zoom fraction). "strong" is study
# 000's (rotation up to 15 degrees, width/height shifts) plus a small zoom.
AUGMENT = {"off": None, "light": (8.0, 0.08, 0.05), "strong": (15.0, 0.1, 0.1)}

_RUNTIME: dict[str, Any] | None = None


def configure_runtime(mixed_precision: str = "auto", quiet: bool = True) -> dict[str, Any]:
    """Set up TensorFlow once per process; returns what was chosen.

    CPU: oneDNN kernels on (2.3x faster here; must be set before TensorFlow is imported), all
    cores for intra-op work, no XLA (2x slower on CPU). GPU: memory growth, mixed precision on
    GPUs with compute capability >= 7.0 unless ``mixed_precision="off"``, XLA on.
    """
    global _RUNTIME
    if _RUNTIME is not None:
        return _RUNTIME
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    if quiet:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    info: dict[str, Any] = {"device": "GPU" if gpus else "CPU", "gpus": len(gpus)}
    if gpus:
        for gpu in gpus:
            # RuntimeError: already initialised, growth can no longer be changed
            with contextlib.suppress(RuntimeError):
                tf.config.experimental.set_memory_growth(gpu, True)
        capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability")
        use_mp = mixed_precision == "on" or (
            mixed_precision == "auto" and capability is not None and capability >= (7, 0)
        )
        if use_mp:
            keras.mixed_precision.set_global_policy("mixed_float16")
        info.update(mixed_precision=use_mp, jit_compile=True)
    else:
        cores = os.cpu_count() or 1
        with contextlib.suppress(RuntimeError):
            tf.config.threading.set_intra_op_parallelism_threads(cores)
            tf.config.threading.set_inter_op_parallelism_threads(min(2, cores))
        info.update(mixed_precision=False, jit_compile=False, threads=cores)
    info["onednn"] = os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "1"
    _RUNTIME = info
    return info


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
    patience: int | None = None  # early stopping on val_accuracy
    # "cosine": anneal the learning rate to 1% over the planned epochs instead of waiting for a
    # plateau (better when only a few epochs fit in the budget)
    schedule: str = "plateau"
    seed: int = 42
    hp: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


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
    if base.get("augment", "off") not in AUGMENT:
        raise PipelineError(
            f"unknown augmentation {base['augment']!r}; choose from {list(AUGMENT)}"
        )
    return TrainSettings(**base)


def make_optimizer(name: str, learning_rate: float, momentum: float = 0.0):
    import keras

    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=momentum)
    if name == "sgd-nesterov":
        return keras.optimizers.SGD(learning_rate, momentum=momentum or 0.9, nesterov=True)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate)
    if name == "adadelta":
        return keras.optimizers.Adadelta(learning_rate)
    raise PipelineError(f"unknown optimizer {name!r}; choose from {OPTIMIZERS}")


def make_dataset(x, y, num_classes, batch_size, *, shuffle=False, seed=0, augment="off"):
    """uint8 images -> float32 [0, 1] batches (one-hot labels when ``y`` is given), prefetched."""
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
        aug = augmentation_layers(augment, seed)
        if aug is not None:
            ds = ds.map(
                lambda a, b: (aug(a, training=True), b), num_parallel_calls=tf.data.AUTOTUNE
            )
    return ds.prefetch(tf.data.AUTOTUNE)


def augmentation_layers(strength: str, seed: int = 0):
    """Keras preprocessing layers for a strength in AUGMENT, or None for "off"."""
    import keras

    spec = AUGMENT.get(strength)
    if spec is None:
        return None
    degrees, shift, zoom = spec
    return keras.Sequential(
        [
            keras.layers.RandomRotation(degrees / 360.0, fill_mode="constant", seed=seed),
            keras.layers.RandomTranslation(shift, shift, fill_mode="constant", seed=seed + 1),
            keras.layers.RandomZoom(zoom, fill_mode="constant", seed=seed + 2),
        ],
        name=f"augment_{strength}",
    )


def _callbacks_module():
    import keras

    class BestWeights(keras.callbacks.Callback):
        """Keep the weights of the epoch with the best val_accuracy; restore them at the end."""

        def __init__(self):
            super().__init__()
            self.best = -math.inf
            self.best_epoch = -1
            self.weights = None

        def on_epoch_end(self, epoch, logs=None):
            acc = (logs or {}).get("val_accuracy")
            if acc is not None and acc > self.best:
                self.best, self.best_epoch = acc, epoch
                self.weights = self.model.get_weights()

        def on_train_end(self, logs=None):
            if self.weights is not None:
                self.model.set_weights(self.weights)

    class Deadline(keras.callbacks.Callback):
        """Stop after the epoch that reaches ``deadline`` (time.monotonic())."""

        def __init__(self, deadline):
            super().__init__()
            self.deadline = deadline
            self.hit = False

        def on_epoch_end(self, epoch, logs=None):
            if time.monotonic() >= _deadline_at(self.deadline):
                self.hit = True
                self.model.stop_training = True

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds: list[float] = []
            self._t = 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self._t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._t)

    class StopOnNaN(keras.callbacks.TerminateOnNaN):
        def on_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not np.isfinite(loss):
                raise FloatingPointError("loss became NaN/inf; lower the learning rate")

    return BestWeights, Deadline, EpochTimer, StopOnNaN


@dataclass
class FitResult:
    model: Any
    history: dict[str, list[float]]
    metrics: dict[str, Any]


def fit(
    model,
    settings: TrainSettings,
    data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    num_classes: int,
    *,
    callbacks: list | None = None,
    deadline: float | Callable[[], float] | None = None,
    verbose: int | None = None,
    keep_best: bool = True,
) -> FitResult:
    """Compile ``model`` with ``settings`` and train it on (x_train, y_train, x_val, y_val).

    ``deadline`` (``time.monotonic()`` seconds, or a function returning them, re-read after every
    epoch) stops training after the epoch that reaches it."""
    import keras

    info = configure_runtime()
    keras.utils.set_random_seed(settings.seed)
    x_train, y_train, x_val, y_val = data
    bn_momentum = adapt_batch_norm(model, math.ceil(len(x_train) / settings.batch_size))
    model.compile(
        optimizer=make_optimizer(settings.optimizer, settings.learning_rate, settings.momentum),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=settings.label_smoothing),
        metrics=["accuracy"],
        jit_compile=info.get("jit_compile", False),
    )
    BestWeights, Deadline, EpochTimer, StopOnNaN = _callbacks_module()
    best, timer = BestWeights(), EpochTimer()
    cbs = [timer, StopOnNaN()] + ([best] if keep_best else [])
    if settings.schedule == "cosine":
        cbs.append(_cosine_to_deadline(settings.learning_rate, settings.epochs, deadline))
    elif settings.reduce_lr:
        cbs.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_accuracy", factor=0.5, patience=3, min_lr=1e-5, verbose=0
            )
        )
    if settings.patience:
        cbs.append(
            keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=settings.patience)
        )
    stopper = None
    if deadline is not None:
        stopper = Deadline(deadline)
        cbs.append(stopper)
    cbs.extend(callbacks or [])
    train_ds = make_dataset(
        x_train,
        y_train,
        num_classes,
        settings.batch_size,
        shuffle=True,
        seed=settings.seed,
        augment=settings.augment,
    )
    val_ds = make_dataset(x_val, y_val, num_classes, max(256, settings.batch_size))
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    t0 = time.perf_counter()
    hist = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=settings.epochs,
        callbacks=cbs,
        verbose=verbose,
        shuffle=False,
    )  # tf.data shuffles
    seconds = time.perf_counter() - t0
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    history["seconds"] = [round(s, 3) for s in timer.seconds]
    b = best.best_epoch if best.best_epoch >= 0 else len(history.get("loss", [1])) - 1
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    total = trainable + sum(math.prod(w.shape) for w in model.non_trainable_weights)
    epochs_run = len(history.get("loss", []))
    metrics = {
        "val_accuracy": history.get("val_accuracy", [float("nan")])[b],
        "val_loss": history.get("val_loss", [float("nan")])[b],
        "train_accuracy": history.get("accuracy", [float("nan")])[b],
        "train_loss": history.get("loss", [float("nan")])[b],
        "best_epoch": b + 1,
        "epochs_run": epochs_run,
        "seconds": round(seconds, 2),
        "train_images_per_second": round(
            len(x_train) * epochs_run / max(sum(timer.seconds), 1e-9), 1
        ),
        "params": int(total),
        "trainable_params": int(trainable),
        "stopped_by_deadline": bool(stopper and stopper.hit),
        "device": info["device"],
        "bn_momentum": bn_momentum,
    }
    return FitResult(model, history, metrics)


def _deadline_at(deadline: float | Callable[[], float]) -> float:
    """A deadline given as a number or as a function that returns the current one."""
    return deadline() if callable(deadline) else deadline


def _cosine_to_deadline(lr0: float, epochs: int, deadline: float | Callable[[], float] | None):
    """Cosine decay of the learning rate to 1% over the planned epochs. With a deadline the plan
    is redone after every epoch from the measured epoch time, so the decay ends when the budget
    does (estimates made before training were 25-40% pessimistic here)."""
    import keras

    class CosineToDeadline(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.n = max(epochs, 1)
            self.started = 0.0
            self.done = 0

        def on_train_begin(self, logs=None):
            self.started = time.monotonic()

        def on_epoch_begin(self, epoch, logs=None):
            t = min(epoch / self.n, 1.0)
            self.model.optimizer.learning_rate = lr0 * (
                0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t))
            )

        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:
                logs["learning_rate"] = float(
                    keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
                )
            self.done = epoch + 1
            if deadline is not None:
                per = (time.monotonic() - self.started) / self.done
                fits = self.done + int((_deadline_at(deadline) - time.monotonic()) // per)
                self.n = max(self.done, min(epochs, fits))
            if self.done >= self.n:
                self.model.stop_training = True

    return CosineToDeadline()


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
    should span at most a fifth of an epoch: momentum = 1 - 5/steps, within [0.9, 0.99].
    """
    import keras

    bns = [
        layer
        for layer in _all_layers(model)
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
    ]
    if not bns:
        return None
    momentum = float(min(0.99, max(0.9, 1.0 - 5.0 / max(steps_per_epoch, 1))))
    for layer in bns:
        layer.momentum = momentum
    return momentum
