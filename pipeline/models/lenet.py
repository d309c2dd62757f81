"""LeNet-5 and the study's variants (003: classic and widened; 001: on CIFAR)."""

from __future__ import annotations

from pipeline.models.registry import Recipe, classifier, model_input, register


def lenet(
    input_shape,
    num_classes,
    *,
    name,
    filters1,
    filters2,
    dense1,
    dense2,
    activation,
    pooling,
    padding1,
    pool1_stride,
    dropout,
):
    """Conv 5x5, pool, Conv 5x5 valid, pool, Dense, Dense, softmax."""
    import keras
    from keras import layers

    pool = layers.AveragePooling2D if pooling == "avg" else layers.MaxPooling2D
    inputs, x = model_input(input_shape)
    x = layers.Conv2D(filters1, 5, padding=padding1, activation=activation, name="conv1")(x)
    x = pool(2, strides=pool1_stride, name="pool1")(x)
    x = layers.Conv2D(filters2, 5, padding="valid", activation=activation, name="conv2")(x)
    x = pool(2, strides=2, name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(dense1, activation=activation, name="dense1")(x)
    if dropout:
        x = layers.Dropout(dropout, name="drop1")(x)
    x = layers.Dense(dense2, activation=activation, name="dense2")(x)
    return keras.Model(inputs, classifier(x, num_classes), name=name)


BASE = dict(dropout=0.0)


@register(
    "lenet5",
    family="lenet",
    source="003",
    study_shape=(28, 28, 1),
    study_classes=5,
    recipe=Recipe("adam", 1e-3, batch_size=64, epochs=80),
    # The study's code pools with stride 1 after conv1 (28 -> 27), and its summary (245,601
    # parameters) confirms it; the text's "stride 2" describes the 1998 paper, not the code.
    defaults=dict(
        BASE,
        filters1=6,
        filters2=16,
        dense1=120,
        dense2=84,
        activation="tanh",
        pooling="avg",
        padding1="same",
        pool1_stride=1,
    ),
)
def lenet5(input_shape, num_classes, **hp):
    """LeNet-5 as in study 003 model 1: tanh, average pooling, 6/16 filters, 120/84 dense"""
    return lenet(input_shape, num_classes, name="lenet5", **hp)


@register(
    "lenet5_wide",
    family="lenet",
    source="003",
    study_shape=(28, 28, 1),
    study_classes=5,
    recipe=Recipe("adam", 5e-4, batch_size=64, epochs=80),
    defaults=dict(
        BASE,
        filters1=32,
        filters2=48,
        dense1=256,
        dense2=84,
        activation="relu",
        pooling="max",
        padding1="same",
        pool1_stride=2,
    ),
)
def lenet5_wide(input_shape, num_classes, **hp):
    """The study's tweaked LeNet: 32/48 filters, relu, max pooling, 256/84 dense, Adam(5e-4)"""
    return lenet(input_shape, num_classes, name="lenet5_wide", **hp)


@register(
    "lenet_cifar",
    family="lenet",
    source="001",
    study_shape=(32, 32, 3),
    study_classes=10,
    recipe=Recipe("adam", 1e-3, batch_size=128, epochs=100),
    defaults=dict(
        BASE,
        filters1=6,
        filters2=16,
        dense1=120,
        dense2=84,
        activation="relu",
        pooling="max",
        padding1="valid",
        pool1_stride=2,
    ),
)
def lenet_cifar(input_shape, num_classes, **hp):
    """LeNet of study 001 (valid convolutions, max pooling) on CIFAR-10"""
    return lenet(input_shape, num_classes, name="lenet_cifar", **hp)
