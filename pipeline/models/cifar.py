"""Study 004's CIFAR-10 models: a basic CNN, a naive Inception module, a residual block."""

from __future__ import annotations

from pipeline.models.registry import Recipe, classifier, model_input, register


def cifar_base(input_shape, num_classes, *, name, head, dropout, dense_units):
    """Conv32 3x3 valid, pool, drop, Conv64 3x3 valid, pool, drop, [head], Dense, softmax."""
    import keras
    from keras import layers

    inputs, x = model_input(input_shape)
    x = layers.Conv2D(32, 3, activation="relu", name="conv1")(x)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Dropout(dropout, name="drop1")(x)
    x = layers.Conv2D(64, 3, activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Dropout(dropout, name="drop2")(x)
    if head == "inception":
        # naive Inception: 1x1, 3x3 and 5x5 convolutions and a 3x3 max pool side by side
        b1 = layers.Conv2D(64, 1, padding="same", activation="relu", name="inc_1x1")(x)
        b3 = layers.Conv2D(128, 3, padding="same", activation="relu", name="inc_3x3")(x)
        b5 = layers.Conv2D(32, 5, padding="same", activation="relu", name="inc_5x5")(x)
        bp = layers.MaxPooling2D(3, strides=1, padding="same", name="inc_pool")(x)
        x = layers.Concatenate(name="inc_concat")([b1, b3, b5, bp])
    elif head == "residual":
        y = layers.Conv2D(64, 3, padding="same", activation="relu", name="res_conv")(x)
        x = layers.Add(name="res_add")([y, x])
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(dense_units, activation="relu", name="dense")(x)
    return keras.Model(inputs, classifier(x, num_classes), name=name)


META = dict(family="cifar", source="004", study_shape=(32, 32, 3), study_classes=10)
# RMSprop as in the study (Keras' CIFAR-10 example: lr 1e-4), 30 epochs
RMS = Recipe("rmsprop", 1e-4, batch_size=32, epochs=30)
DEFAULTS = dict(dropout=0.25, dense_units=128)


@register("cifar_cnn", recipe=RMS, defaults=DEFAULTS, **META)
def cifar_cnn(input_shape, num_classes, **hp):
    """Study 004 basic CNN: two valid 3x3 convs with pooling and dropout, Dense128"""
    return cifar_base(input_shape, num_classes, name="cifar_cnn", head=None, **hp)


@register("inception_naive", recipe=RMS, defaults=DEFAULTS, **META)
def inception_naive(input_shape, num_classes, **hp):
    """Study 004: the basic CNN + one naive Inception module (1x1, 3x3, 5x5, pool)"""
    return cifar_base(input_shape, num_classes, name="inception_naive", head="inception", **hp)


@register("residual_small", recipe=RMS, defaults=DEFAULTS, **META)
def residual_small(input_shape, num_classes, **hp):
    """Study 004: the basic CNN + one residual 3x3 block"""
    return cifar_base(input_shape, num_classes, name="residual_small", head="residual", **hp)
