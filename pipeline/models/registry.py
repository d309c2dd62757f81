"""Model registry (as in timm): ``@register("cnn7", ...)`` on a pure builder.

A builder is ``(input_shape, num_classes, **hp) -> keras.Model``: uncompiled, named layers, no
Optuna. Each entry also carries the study's training recipe and the hyperparameters it exposes,
so the search (``pipeline.search_space``) can vary them without knowing any architecture. The
family modules import this one to register their entries; the package (``pipeline.models``)
imports every family, so importing it fills the registry."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import PipelineError


@dataclass(frozen=True)
class Recipe:
    """How the study trained an entry. Optimizers: adam, sgd, sgd-nesterov, rmsprop, adadelta."""

    optimizer: str = "adam"
    learning_rate: float = 1e-3
    momentum: float = 0.0
    batch_size: int = 32
    epochs: int = 50
    # ReduceLROnPlateau(monitor val_accuracy, factor 0.5, patience 3, min_lr 1e-5), as in study 003
    reduce_lr: bool = False
    # airbench's batch-norm bias rate (bench/README.md): batch norm's biases step at
    # ``bias_rate`` times the learning rate (with SGD only: Adam's steps ignore a gradient's scale)
    bias_rate: float = 1.0
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Entry:
    name: str
    builder: Callable[..., Any]
    family: str
    source: str  # the study it comes from (file prefix in shared/seeds)
    study_shape: tuple[int, int, int]
    study_classes: int
    recipe: Recipe
    defaults: dict[str, Any] = field(default_factory=dict)  # the exposed hyperparameters
    resize_to: tuple[int, int] | None = None  # designed for this H,W: resized inside the model
    description: str = ""
    kind: str = "keras"  # or "classical": a scikit-learn estimator (pipeline.models.classical)

    @property
    def classical(self) -> bool:
        return self.kind == "classical"


_REGISTRY: dict[str, Entry] = {}


def register(
    name: str,
    *,
    family: str,
    source: str,
    study_shape: tuple[int, int, int],
    study_classes: int,
    recipe: Recipe,
    defaults: dict[str, Any] | None = None,
    resize_to: tuple[int, int] | None = None,
    kind: str = "keras",
):
    """Register a builder under ``name`` with its study recipe and exposed hyperparameters."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = Entry(
            name=name,
            builder=fn,
            family=family,
            source=source,
            study_shape=study_shape,
            study_classes=study_classes,
            recipe=recipe,
            defaults=dict(defaults or {}),
            resize_to=resize_to,
            description=(fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else "",
            kind=kind,
        )
        return fn

    return wrap


def get_entry(name: str) -> Entry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise PipelineError(
            f"unknown model {name!r}; choose one of: {', '.join(list_models())} (./run.sh models)"
        ) from None


def model_suffix(name: str | None) -> str:
    """The file suffix of entry ``name``'s saved models: ``.joblib`` for a classical entry, else
    (an unknown name too) ``.keras``."""
    try:
        return ".joblib" if name and get_entry(name).classical else ".keras"
    except PipelineError:
        return ".keras"


def trial_file(number: int, name: str | None) -> str:
    """The file name of trial ``number``'s kept model of entry ``name``."""
    return f"trial-{number}{model_suffix(name)}"


def list_models() -> list[str]:
    """Every registered entry name, in registration order."""
    return list(_REGISTRY)


def build_model(name: str, input_shape, num_classes: int, **hp: Any):
    """Build entry ``name`` for the data's native ``input_shape``; ``hp`` overrides its defaults
    (a Keras model, or for a classical entry an unfitted scikit-learn estimator)."""
    entry = get_entry(name)
    unknown = set(hp) - set(entry.defaults)
    if unknown:
        raise PipelineError(
            f"model {name!r} has no hyperparameter(s) {sorted(unknown)}; "
            f"it exposes {sorted(entry.defaults)}"
        )
    params = {**entry.defaults, **hp}
    if entry.classical:  # scikit-learn: no TensorFlow
        return entry.builder(tuple(input_shape), int(num_classes), **params)
    from pipeline.device import configure_runtime

    configure_runtime()  # TensorFlow imported quietly, once, before any builder imports Keras
    return entry.builder(tuple(input_shape), int(num_classes), **params)


# ---------------------------------------------------------------------------------------------
# Helpers shared by the builders (TensorFlow is imported only when a model is built)


def model_input(input_shape, resize_to=None, channels=None, name="input"):
    """The Input layer plus the in-model adaptation to the size and channels a net was built for.

    Returns ``(inputs, x)``; the rest of the pipeline always feeds the data's native shape.
    """
    import keras

    inputs = keras.Input(shape=tuple(input_shape), name=name)
    x = inputs
    h, w, c = input_shape
    if resize_to is not None and (h, w) != tuple(resize_to):
        x = keras.layers.Resizing(*resize_to, interpolation="bilinear", name="resize")(x)
    if channels is not None and c != channels:
        if c == 1:
            x = keras.layers.Concatenate(axis=-1, name="channel_repeat")([x] * channels)
        else:
            raise PipelineError(
                f"this model needs {channels}-channel input and the data has {c} channels"
            )
    return inputs, x


def classifier(x, num_classes: int, name: str = "predictions"):
    import keras

    # float32 output keeps softmax stable under a mixed-precision policy
    return keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name=name)(x)


def count_params(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    total = trainable + sum(math.prod(w.shape) for w in model.non_trainable_weights)
    return int(trainable), int(total)


def count_activations(model) -> int:
    """Values one forward pass of one image produces (every layer's output, nested models
    walked): what a training step keeps per image for its backward pass."""
    import keras

    def walk(m) -> int:
        total = 0
        for layer in m.layers:
            if isinstance(layer, keras.Model):
                total += walk(layer)
            elif not isinstance(layer, keras.layers.InputLayer):
                total += math.prod(layer.output.shape[1:])
        return total

    return int(walk(model))


def count_macs(model) -> int:
    """Multiply-accumulates of one forward pass on one image (convolutions and dense layers)."""
    import keras

    total = 0

    def walk(m) -> None:
        nonlocal total
        for layer in m.layers:
            if isinstance(layer, keras.Model):
                walk(layer)
                continue
            kind = type(layer).__name__
            if kind in ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Dense"):
                out = layer.output.shape
                if kind == "Dense":
                    k = layer.kernel.shape
                    total += math.prod(out[1:-1] or (1,)) * k[0] * k[1]
                elif kind == "Conv2D":
                    kh, kw, cin, cout = layer.kernel.shape
                    total += out[1] * out[2] * kh * kw * cin * cout
                elif kind == "DepthwiseConv2D":
                    kh, kw, cin, mult = layer.kernel.shape
                    total += out[1] * out[2] * kh * kw * cin * mult
                else:
                    dk = layer.depthwise_kernel.shape
                    pk = layer.pointwise_kernel.shape
                    total += out[1] * out[2] * (dk[0] * dk[1] * dk[2] + pk[2] * pk[3])

    walk(model)
    return int(total)
