"""The optimizers a recipe names, built by Keras, with an optional moving average of the weights."""

from __future__ import annotations

from pipeline.errors import PipelineError

OPTIMIZERS = ("adam", "sgd", "sgd-nesterov", "rmsprop", "adadelta")


def ema_momentum(epochs: float, steps_per_epoch: int) -> float:
    """The per-step momentum of a moving average whose horizon is ``epochs`` epochs."""
    return max(0.0, 1.0 - 1.0 / max(epochs * steps_per_epoch, 1.0))


def make_optimizer(name: str, learning_rate: float, momentum: float = 0.0,
                   ema: float = 0.0):  # fmt: skip
    """The named optimizer; ``ema`` > 0: it keeps a moving average of the weights with that
    per-step momentum, which ``model.fit`` writes into the model when it ends."""
    import keras

    extra = {"use_ema": True, "ema_momentum": ema} if ema > 0 else {}
    if name == "adam":
        return keras.optimizers.Adam(learning_rate, **extra)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=momentum, **extra)
    if name == "sgd-nesterov":
        return keras.optimizers.SGD(learning_rate, momentum=momentum or 0.9, nesterov=True,
                                    **extra)  # fmt: skip
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate, **extra)
    if name == "adadelta":
        return keras.optimizers.Adadelta(learning_rate, **extra)
    raise PipelineError(f"unknown optimizer {name!r}; choose from {OPTIMIZERS}")
