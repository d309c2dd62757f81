"""The optimizers a recipe names, built by Keras."""

from __future__ import annotations

from pipeline.errors import PipelineError

OPTIMIZERS = ("adam", "sgd", "sgd-nesterov", "rmsprop", "adadelta")


def make_optimizer(name: str, learning_rate: float, momentum: float = 0.0):
    """The named optimizer."""
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
