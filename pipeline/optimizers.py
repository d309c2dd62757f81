"""The optimizers a recipe names, built by Keras."""

from __future__ import annotations

import functools

from pipeline.errors import PipelineError

OPTIMIZERS = ("adam", "sgd", "sgd-nesterov", "rmsprop", "adadelta")
# the optimizers whose step is the learning rate times the gradient (with momentum), where a
# per-variable rate multiple is what airbench measured (its batch-norm bias rate)
SGD_FAMILY = ("sgd", "sgd-nesterov")


def make_optimizer(name: str, learning_rate: float, momentum: float = 0.0, *,
                   fast=(), multiple: float = 1.0):  # fmt: skip
    """The named optimizer; the variables ``fast`` step at ``multiple`` times the learning rate
    (SGD only)."""
    import keras

    if multiple != 1.0 and name not in SGD_FAMILY:
        raise PipelineError(f"a learning-rate multiple needs SGD; {name!r} has none")
    if name in SGD_FAMILY:
        nesterov = name == "sgd-nesterov"
        momentum = momentum or (0.9 if nesterov else 0.0)
        if multiple == 1.0:
            return keras.optimizers.SGD(learning_rate, momentum=momentum, nesterov=nesterov)
        return _sgd_with_multiple()(learning_rate, momentum=momentum, nesterov=nesterov,
                                    fast=fast, multiple=multiple)  # fmt: skip
    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate)
    if name == "adadelta":
        return keras.optimizers.Adadelta(learning_rate)
    raise PipelineError(f"unknown optimizer {name!r}; choose from {OPTIMIZERS}")


@functools.cache
def _sgd_with_multiple():
    """Keras's SGD, stepping some variables at a multiple of the learning rate."""
    import keras

    class SGDWithMultiple(keras.optimizers.SGD):
        def __init__(self, *args, fast=(), multiple: float = 1.0, **kwargs):
            super().__init__(*args, **kwargs)
            self.fast, self.multiple = list(fast), float(multiple)

        def build(self, variables):
            super().build(variables)
            self._fast_keys = {self._var_key(v) for v in self.fast}

        def update_step(self, gradient, variable, learning_rate):
            if self._var_key(variable) in self._fast_keys:
                learning_rate = learning_rate * self.multiple
            return super().update_step(gradient, variable, learning_rate)

    return SGDWithMultiple
