"""VGG: study 003 VGG-16 at 48x48, study 001 VGG-16 with BatchNorm, study 000 VGG19 transfer."""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline.models.registry import Recipe, classifier, model_input, register

VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def vgg(
    input_shape,
    num_classes,
    *,
    name,
    resize_to,
    blocks,
    dense_units,
    dropout,
    batch_norm,
    weight_decay,
    width,
):
    """Blocks of 3x3 same convolutions and 2x2 max pooling, then 2 x Dense + Dropout."""
    import keras
    from keras import layers

    reg = keras.regularizers.L2(weight_decay) if weight_decay else None
    init = "he_normal" if weight_decay else "glorot_uniform"
    inputs, x = model_input(input_shape, resize_to=resize_to)
    for b, block in enumerate(blocks, 1):
        for i, filters in enumerate(block, 1):
            # the study's ZeroPadding2D(1) + valid 3x3 conv is a "same" 3x3 conv
            x = layers.Conv2D(
                int(filters * width),
                3,
                padding="same",
                activation="relu",
                kernel_regularizer=reg,
                kernel_initializer=init,
                name=f"block{b}_conv{i}",
            )(x)
            if batch_norm:
                x = layers.BatchNormalization(name=f"block{b}_bn{i}")(x)
        x = layers.MaxPooling2D(2, strides=2, name=f"block{b}_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    for i in (1, 2):
        x = layers.Dense(
            dense_units,
            activation="relu",
            kernel_regularizer=reg,
            kernel_initializer=init,
            name=f"fc{i}",
        )(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"fc{i}_bn")(x)
        x = layers.Dropout(dropout, name=f"drop{i}")(x)
    return keras.Model(inputs, classifier(x, num_classes), name=name)


@register(
    "vgg16",
    family="vgg",
    source="003",
    study_shape=(28, 28, 1),
    study_classes=5,
    recipe=Recipe("sgd", 0.01, batch_size=64, epochs=50, note="Adam diverged in the study"),
    resize_to=(48, 48),
    defaults=dict(dense_units=4096, dropout=0.5, width=1.0),
)
def vgg16(input_shape, num_classes, **hp):
    """Study 003 VGG-16 on images resized to 48x48: 13 conv 3x3 in 5 blocks, 2 x Dense4096"""
    return vgg(
        input_shape,
        num_classes,
        name="vgg16",
        resize_to=(48, 48),
        blocks=VGG16_BLOCKS,
        batch_norm=False,
        weight_decay=0.0,
        **hp,
    )


@register(
    "vgg_bn",
    family="vgg",
    source="001",
    study_shape=(32, 32, 3),
    study_classes=10,
    recipe=Recipe("adam", 1e-4, batch_size=128, epochs=50),
    resize_to=(32, 32),
    defaults=dict(dense_units=4096, dropout=0.5, width=1.0),
)
def vgg_bn(input_shape, num_classes, **hp):
    """Study 001 VGG-16: BatchNorm after every conv and dense, L2 1e-4, he_normal"""
    return vgg(
        input_shape,
        num_classes,
        name="vgg_bn",
        resize_to=(32, 32),
        blocks=VGG16_BLOCKS,
        batch_norm=True,
        weight_decay=1e-4,
        **hp,
    )


VGG19_NOTOP = "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"


def _vgg19_weights(weights):
    """'imagenet' (download), a local .h5 file, None, or 'auto': ImageNet if cached, else none."""
    if weights != "auto":
        return weights
    cached = Path.home() / ".keras" / "models" / VGG19_NOTOP
    if cached.exists():
        return "imagenet"
    print(
        f"note: vgg19_transfer: no ImageNet weights in {cached.parent}; using random weights "
        "(pass weights='imagenet' with internet, or weights=PATH to an .h5 file)",
        file=sys.stderr,
    )
    return None


@register(
    "vgg19_transfer",
    family="vgg",
    source="000",
    study_shape=(32, 32, 3),
    study_classes=10,
    recipe=Recipe("adam", 1e-3, batch_size=32, epochs=20),
    resize_to=(32, 32),
    defaults=dict(weights="auto", trainable_base=False),
)
def vgg19_transfer(input_shape, num_classes, *, weights, trainable_base):
    """VGG19 cut after block4_conv1, frozen, GlobalAveragePooling + Dense (study 000)"""
    import keras
    from keras import layers

    inputs, x = model_input(input_shape, resize_to=(32, 32), channels=3)
    full = keras.applications.VGG19(
        include_top=False, weights=_vgg19_weights(weights), input_shape=(32, 32, 3)
    )
    base = keras.Model(full.input, full.get_layer("block4_conv1").output, name="vgg19_base")
    base.trainable = trainable_base
    x = base(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, classifier(x, num_classes), name="vgg19_transfer")
