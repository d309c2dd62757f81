"""AlexNet: the core study's at 48x48 (003) and the BatchNorm one of study 001."""

from __future__ import annotations

from pipeline.models.registry import Recipe, classifier, model_input, register


def alexnet(
    input_shape,
    num_classes,
    *,
    name,
    resize_to,
    kernel1,
    stride1,
    pool,
    pool_stride,
    batch_norm,
    dense_units,
    dropout,
):
    """Conv96, pool, Conv256 5x5, pool, Conv384, Conv384, Conv256, pool, 2 x Dense + Dropout."""
    import keras
    from keras import layers

    inputs, x = model_input(input_shape, resize_to=resize_to)

    def conv(x, filters, kernel, tag, strides=1, padding="same", bn=False):
        x = layers.Conv2D(
            filters, kernel, strides=strides, padding=padding, activation="relu", name=tag
        )(x)
        return layers.BatchNormalization(name=f"{tag}_bn")(x) if bn else x

    x = conv(x, 96, kernel1, "conv1", strides=stride1, padding="valid", bn=batch_norm)
    x = layers.MaxPooling2D(pool, strides=pool_stride, name="pool1")(x)
    x = conv(x, 256, 5, "conv2", bn=batch_norm)
    x = layers.MaxPooling2D(pool, strides=pool_stride, name="pool2")(x)
    x = conv(x, 384, 3, "conv3")
    x = conv(x, 384, 3, "conv4")
    x = conv(x, 256, 3, "conv5")
    x = layers.MaxPooling2D(pool, strides=pool_stride, name="pool3")(x)
    x = layers.Flatten(name="flatten")(x)
    for i in (1, 2):
        x = layers.Dense(dense_units, activation="relu", name=f"fc{i}")(x)
        x = layers.Dropout(dropout, name=f"drop{i}")(x)
    return keras.Model(inputs, classifier(x, num_classes), name=name)


@register(
    "alexnet",
    family="alexnet",
    source="003",
    study_shape=(28, 28, 1),
    study_classes=5,
    recipe=Recipe("sgd", 0.01, batch_size=64, epochs=50),
    resize_to=(48, 48),
    defaults=dict(dense_units=4096, dropout=0.5),
)
def alexnet48(input_shape, num_classes, **hp):
    """Study 003 AlexNet on images resized to 48x48 (96 11x11 valid, ..., 2 x Dense4096)"""
    return alexnet(
        input_shape,
        num_classes,
        name="alexnet",
        resize_to=(48, 48),
        kernel1=11,
        stride1=1,
        pool=3,
        pool_stride=2,
        batch_norm=False,
        **hp,
    )


@register(
    "alexnet_bn",
    family="alexnet",
    source="001",
    study_shape=(32, 32, 3),
    study_classes=10,
    recipe=Recipe("adam", 1e-4, batch_size=128, epochs=25),
    # stride 4 then three 2x2 pools need at least 32x32: smaller images are resized inside
    resize_to=(32, 32),
    defaults=dict(dense_units=4096, dropout=0.4),
)
def alexnet_bn(input_shape, num_classes, **hp):
    """Study 001 AlexNet: 96 3x3 stride 4, BatchNorm after conv 1-2, Dropout 0.4"""
    return alexnet(
        input_shape,
        num_classes,
        name="alexnet_bn",
        resize_to=(32, 32),
        kernel1=3,
        stride1=4,
        pool=2,
        pool_stride=2,
        batch_norm=True,
        **hp,
    )
