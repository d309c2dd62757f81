"""The core study's seven CNN variants (003) and the five-block BatchNorm CNN of study 000."""

from __future__ import annotations

from pipeline.models.registry import Recipe, classifier, model_input, register

CORE = dict(
    filters1=32,
    filters2=64,
    dense_units=256,
    dropout1=0.25,
    dropout2=0.25,
    dropout3=0.25,
    activation="relu",
    batch_norm=False,
    leaky_dense=False,
)


def core_cnn(
    input_shape,
    num_classes,
    *,
    name,
    filters1,
    filters2,
    dense_units,
    dropout1,
    dropout2,
    dropout3,
    activation,
    batch_norm,
    leaky_dense,
):
    """Conv 5x5 x2, pool, drop, Conv 3x3 x2, pool, drop, Dense, drop, softmax (study 003)."""
    import keras
    from keras import layers

    inputs, x = model_input(input_shape)

    def conv(x, filters, kernel, tag, bn):
        x = layers.Conv2D(filters, kernel, padding="same", activation=activation, name=tag)(x)
        return layers.BatchNormalization(name=f"{tag}_bn")(x) if bn else x

    # cnn7 puts BatchNormalization after conv 1, 2 and 3 and before Flatten, not after conv 4
    x = conv(x, filters1, 5, "conv1", batch_norm)
    x = conv(x, filters1, 5, "conv2", batch_norm)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Dropout(dropout1, name="drop1")(x)
    x = conv(x, filters2, 3, "conv3", batch_norm)
    x = conv(x, filters2, 3, "conv4", False)
    x = layers.MaxPooling2D(2, strides=2, name="pool2")(x)
    x = layers.Dropout(dropout2, name="drop2")(x)
    if batch_norm:
        x = layers.BatchNormalization(name="pre_flatten_bn")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(dense_units, activation="relu", name="dense")(x)
    if leaky_dense:
        x = layers.LeakyReLU(negative_slope=0.1, name="dense_leaky")(x)
    x = layers.Dropout(dropout3, name="drop3")(x)
    return keras.Model(inputs, classifier(x, num_classes), name=name)


ADAM = Recipe("adam", 1e-3, batch_size=32, epochs=50)
ADAM_RLR = Recipe("adam", 1e-3, batch_size=32, epochs=50, reduce_lr=True)
# Study: SGD(lr=0.01, decay=1e-6, momentum=0.9, nesterov=True). Keras 3 has no `decay`; over
# 50 epochs of 1,500 steps it would lower the rate by 7% only, and ReduceLROnPlateau (which cannot
# drive a schedule) does the real decay, so it is left out.
SGD_RLR = Recipe("sgd-nesterov", 0.01, momentum=0.9, batch_size=32, epochs=50, reduce_lr=True)
CORE_META = dict(family="cnn", source="003", study_shape=(28, 28, 1), study_classes=5)


def _variant(name, recipe, doc, **overrides):
    def build(input_shape, num_classes, **hp):
        return core_cnn(input_shape, num_classes, name=name, **hp)

    build.__doc__ = doc
    register(name, recipe=recipe, defaults={**CORE, **overrides}, **CORE_META)(build)


_variant("cnn1", ADAM, "Model 1: the base CNN, Adam, batch 32")
_variant("cnn2", ADAM_RLR, "Model 2: cnn1 + ReduceLROnPlateau")
_variant("cnn3", ADAM_RLR, "Model 3: cnn2 with last dropout 0.5", dropout3=0.5)
_variant("cnn4", ADAM_RLR, "Model 4: cnn2 + LeakyReLU(0.1) after Dense256", leaky_dense=True)
_variant("cnn5", SGD_RLR, "Model 5: cnn2 with SGD nesterov (lr 0.01, momentum 0.9)")
_variant(
    "cnn6",
    Recipe("sgd-nesterov", 0.01, momentum=0.9, batch_size=128, epochs=50, reduce_lr=True),
    "Model 6: cnn5 with batch 128",
)
_variant("cnn7", SGD_RLR, "Model 7: cnn5 + BatchNormalization", batch_norm=True)


def conv_stack(
    input_shape, num_classes, *, name, filters, dense_units, dropout, activation, batch_norm
):
    """N x (Conv 3x3 same, BN, MaxPool same) then Dense/Dropout layers (study 000)."""
    import keras
    from keras import layers

    inputs, x = model_input(input_shape)
    for i, f in enumerate(filters, 1):
        x = layers.Conv2D(f, 3, padding="same", activation=activation, name=f"conv{i}")(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"conv{i}_bn")(x)
        # "same" pooling: 7x7 -> 4x4, as the study's summary shows
        x = layers.MaxPooling2D(2, padding="same", name=f"pool{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    for i, units in enumerate(dense_units, 1):
        x = layers.Dense(units, activation=activation, name=f"dense{i}")(x)
        x = layers.Dropout(dropout, name=f"drop{i}")(x)
    return keras.Model(inputs, classifier(x, num_classes), name=name)


@register(
    "cnn5bn",
    family="cnn",
    source="000",
    study_shape=(28, 28, 1),
    study_classes=10,
    recipe=Recipe("adam", 1e-3, batch_size=32, epochs=20),
    defaults=dict(
        filters=(32, 64, 128, 256, 512),
        dense_units=(64, 32),
        dropout=0.5,
        activation="relu",
        batch_norm=True,
    ),
)
def cnn5bn(input_shape, num_classes, **hp):
    """Five Conv-BN-Pool blocks (32..512), Dense64/Dense32 + Dropout 0.5 (study 000)"""
    return conv_stack(input_shape, num_classes, name="cnn5bn", **hp)
