"""Residual networks: the core study's ResNet (003), Keras' ResNet50 (001), and the concatenating
ResNet of study 000."""

from __future__ import annotations

from pipeline.models.registry import Recipe, classifier, model_input, register


def basic_resnet(
    input_shape,
    num_classes,
    *,
    name,
    filters,
    stages,
    blocks_per_stage,
    dropout,
    weight_decay,
    stem_kernel,
    stem_stride,
):
    """Conv stem + BN, stages of basic blocks (filters doubling, 1x1 stride-2 shortcuts)."""
    import keras
    from keras import layers

    def conv(x, f, k, s, tag):
        return layers.Conv2D(
            f,
            k,
            strides=s,
            padding="same",
            kernel_initializer="he_normal",
            kernel_regularizer=keras.regularizers.L2(weight_decay),
            name=tag,
        )(x)

    inputs, x = model_input(input_shape)
    x = conv(x, filters, stem_kernel, stem_stride, "stem_conv")
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.Activation("relu", name="stem_relu")(x)
    f = filters
    for s in range(stages):
        for b in range(blocks_per_stage):
            tag = f"stage{s + 1}_block{b + 1}"
            stride = 2 if (s > 0 and b == 0) else 1
            y = conv(x, f, 3, stride, f"{tag}_conv1")
            y = layers.BatchNormalization(name=f"{tag}_bn1")(y)
            y = layers.Activation("relu", name=f"{tag}_relu1")(y)
            y = layers.Dropout(dropout, name=f"{tag}_drop1")(y)
            y = conv(y, f, 3, 1, f"{tag}_conv2")
            y = layers.BatchNormalization(name=f"{tag}_bn2")(y)
            shortcut = conv(x, f, 1, stride, f"{tag}_shortcut") if stride != 1 else x
            x = layers.Add(name=f"{tag}_add")([shortcut, y])
            x = layers.Activation("relu", name=f"{tag}_relu2")(x)
            x = layers.Dropout(dropout, name=f"{tag}_drop2")(x)
        f *= 2
    # the study's AveragePooling2D covers the whole 2x2 map: a global average
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, classifier(x, num_classes), name=name)


@register(
    "resnet",
    family="resnet",
    source="003",
    study_shape=(28, 28, 1),
    study_classes=5,
    recipe=Recipe("adam", 1e-3, batch_size=64, epochs=50),
    defaults=dict(filters=64, stages=4, blocks_per_stage=2, dropout=0.2, weight_decay=1e-4),
)
def resnet(input_shape, num_classes, **hp):
    """Study 003 ResNet: Conv64 7x7/2, 4 stages x 2 basic blocks, 1x1 stride-2 shortcuts"""
    return basic_resnet(input_shape, num_classes, name="resnet", stem_kernel=7, stem_stride=2, **hp)


@register(
    "resnet50",
    family="resnet",
    source="001",
    study_shape=(32, 32, 3),
    study_classes=10,
    recipe=Recipe("adam", 1e-4, batch_size=128, epochs=50),
    resize_to=(32, 32),
)
def resnet50(input_shape, num_classes):
    """ResNet50 (Keras Applications, random init) + Dense, as study 001's bottleneck ResNet"""
    import keras

    inputs, x = model_input(input_shape, resize_to=(32, 32))
    base = keras.applications.ResNet50(
        include_top=False, weights=None, pooling="avg", input_shape=(32, 32, input_shape[2])
    )
    x = base(x)
    return keras.Model(inputs, classifier(x, num_classes), name="resnet50")


@register(
    "resnet_concat",
    family="resnet",
    source="000",
    study_shape=(32, 32, 3),
    study_classes=10,
    recipe=Recipe("adam", 1e-3, batch_size=32, epochs=10),
    defaults=dict(filters=(32, 64, 128), units_per_stage=3),
)
def resnet_concat(input_shape, num_classes, *, filters, units_per_stage):
    """Study 000 ResNet whose residual units concatenate the shortcut instead of adding it"""
    import keras
    from keras import layers

    def conv_bn(x, f, k, tag):
        x = layers.Conv2D(f, k, padding="same", name=f"{tag}_conv")(x)
        return layers.BatchNormalization(name=f"{tag}_bn")(x)

    inputs, x = model_input(input_shape)
    x = layers.Activation("relu", name="stem_relu")(conv_bn(x, filters[0], 3, "stem"))
    channels = filters[0]
    for s, f in enumerate(filters, 1):
        for u in range(1, units_per_stage + 1):
            tag = f"stage{s}_unit{u}"
            y = layers.Activation("relu", name=f"{tag}_relu1")(conv_bn(x, f, 3, f"{tag}_a"))
            y = conv_bn(y, f, 3, f"{tag}_b")
            # identity shortcut when the widths match, else a 1x1 projection
            shortcut = x if channels == f else conv_bn(x, f, 1, f"{tag}_proj")
            x = layers.Concatenate(name=f"{tag}_concat")([shortcut, y])
            x = layers.Activation("relu", name=f"{tag}_relu2")(x)
            channels = 2 * f
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, classifier(x, num_classes), name="resnet_concat")
