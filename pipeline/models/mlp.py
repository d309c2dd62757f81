"""Dense networks of study 002: the MLP baseline and the dense residual network."""

from __future__ import annotations

from pipeline.models.registry import Recipe, classifier, model_input, register


@register(
    "mlp",
    family="mlp",
    source="002",
    study_shape=(28, 28, 1),
    study_classes=10,
    recipe=Recipe("adam", 1e-3, batch_size=32, epochs=20),
    defaults=dict(units=64, layers=3, activation="relu", dropout=0.0),
)
def mlp(input_shape, num_classes, *, units, layers, activation, dropout):
    """Study 002 MLP baseline: Flatten, 3 x Dense64, softmax"""
    import keras
    from keras import layers as L

    inputs, x = model_input(input_shape)
    x = L.Flatten(name="flatten")(x)
    for i in range(1, layers + 1):
        x = L.Dense(units, activation=activation, name=f"dense{i}")(x)
        if dropout:
            x = L.Dropout(dropout, name=f"drop{i}")(x)
    return keras.Model(inputs, classifier(x, num_classes), name="mlp")


@register(
    "dense_resnet",
    family="mlp",
    source="002",
    study_shape=(28, 28, 1),
    study_classes=10,
    recipe=Recipe("adam", 1e-3, batch_size=32, epochs=20),
    # the study's "10 residual blocks" network: a dense stem plus 9 added blocks
    defaults=dict(units=128, blocks=9, dropout=0.2, activation="relu"),
)
def dense_resnet(input_shape, num_classes, *, units, blocks, dropout, activation):
    """Study 002 dense residual network: Dense stem, N x (Dense-BN-act-drop) x2 + add"""
    import keras
    from keras import layers as L

    inputs, x = model_input(input_shape)
    x = L.Flatten(name="flatten")(x)
    x = L.Dense(units, activation=activation, name="stem1")(x)
    x = L.Dense(units, activation=activation, name="stem2")(x)
    for b in range(1, blocks + 1):
        y = x
        for i in (1, 2):
            y = L.Dense(units, name=f"block{b}_dense{i}")(y)
            y = L.BatchNormalization(name=f"block{b}_bn{i}")(y)
            y = L.Activation(activation, name=f"block{b}_act{i}")(y)
            y = L.Dropout(dropout, name=f"block{b}_drop{i}")(y)
        x = L.Add(name=f"block{b}_add")([y, x])
    x = L.Dense(units, activation=activation, name="head")(x)
    x = L.Dropout(dropout, name="head_drop")(x)
    return keras.Model(inputs, classifier(x, num_classes), name="dense_resnet")
