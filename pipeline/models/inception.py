"""GoogLeNet (Inception v1) with its two auxiliary heads, as in study 001."""

from __future__ import annotations

from pipeline.models.registry import Recipe, model_input, register

# (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj) per module, as in the study's code
# (which differs from the paper's table in 4c's 5x5 and 4e's 3x3 reduce: the code wins)
STAGE3 = ((64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64))
STAGE4 = (
    (192, 96, 208, 16, 48, 64),
    (160, 112, 224, 24, 64, 64),
    (128, 128, 256, 24, 24, 64),
    (112, 144, 288, 32, 64, 64),
    (256, 120, 320, 32, 128, 128),
)
STAGE5 = ((256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128))


@register(
    "googlenet",
    family="inception",
    source="001",
    study_shape=(32, 32, 3),
    study_classes=10,
    recipe=Recipe("adam", 1e-4, batch_size=128, epochs=50),
    resize_to=(32, 32),
    defaults=dict(dropout=0.4, aux_weight=0.3),
)
def googlenet(input_shape, num_classes, *, dropout, aux_weight):
    """GoogLeNet of study 001: 9 Inception modules, two auxiliary softmax heads"""
    import keras
    from keras import layers

    def module(x, spec, tag):
        f1, f3r, f3, f5r, f5, fp = spec
        b1 = layers.Conv2D(f1, 1, padding="same", activation="relu", name=f"{tag}_1x1")(x)
        b3 = layers.Conv2D(f3r, 1, padding="same", activation="relu", name=f"{tag}_3x3_reduce")(x)
        b3 = layers.Conv2D(f3, 3, padding="same", activation="relu", name=f"{tag}_3x3")(b3)
        b5 = layers.Conv2D(f5r, 1, padding="same", activation="relu", name=f"{tag}_5x5_reduce")(x)
        b5 = layers.Conv2D(f5, 5, padding="same", activation="relu", name=f"{tag}_5x5")(b5)
        bp = layers.MaxPooling2D(3, strides=1, padding="same", name=f"{tag}_pool")(x)
        bp = layers.Conv2D(fp, 1, padding="same", activation="relu", name=f"{tag}_pool_proj")(bp)
        return layers.Concatenate(name=f"{tag}_concat")([b1, b3, b5, bp])

    def auxiliary(x, tag):
        y = layers.AveragePooling2D(5, strides=3, name=f"{tag}_pool")(x)
        y = layers.Conv2D(128, 1, padding="same", activation="relu", name=f"{tag}_conv")(y)
        y = layers.Flatten(name=f"{tag}_flatten")(y)
        y = layers.Dense(256, activation="relu", name=f"{tag}_fc")(y)
        y = layers.Dropout(0.4, name=f"{tag}_drop")(y)
        return layers.Dense(num_classes, activation="softmax", dtype="float32", name=tag)(y)

    inputs, x = model_input(input_shape, resize_to=(32, 32))
    x = layers.ZeroPadding2D(3, name="pad")(x)
    x = layers.Conv2D(32, 3, strides=2, name="pre_conv1")(x)
    x = layers.BatchNormalization(name="pre_bn1")(x)
    x = layers.Activation("relu", name="pre_relu1")(x)
    x = layers.MaxPooling2D(2, strides=1, name="pre_pool1")(x)
    for i in (2, 3):
        x = layers.Conv2D(192, 3, name=f"pre_conv{i}")(x)
        x = layers.BatchNormalization(name=f"pre_bn{i}")(x)
        x = layers.Activation("relu", name=f"pre_relu{i}")(x)
    x = layers.MaxPooling2D(2, strides=1, name="pre_pool2")(x)
    for spec, tag in zip(STAGE3, "ab", strict=True):
        x = module(x, spec, f"inception3{tag}")
    x = layers.MaxPooling2D(2, strides=1, name="pool3")(x)
    aux = []
    for spec, tag in zip(STAGE4, "abcde", strict=True):
        if tag == "e":
            aux.append(auxiliary(x, "aux2"))
        x = module(x, spec, f"inception4{tag}")
        if tag == "a":
            aux.append(auxiliary(x, "aux1"))
    x = layers.MaxPooling2D(2, strides=1, name="pool4")(x)
    for spec, tag in zip(STAGE5, "ab", strict=True):
        x = module(x, spec, f"inception5{tag}")
    x = layers.AveragePooling2D(7, strides=1, name="avg_pool")(x)
    x = layers.Dropout(dropout, name="drop")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(1000, activation="relu", name="fc")(x)
    main = layers.Dense(num_classes, activation="softmax", dtype="float32", name="main")(x)
    # The study adds 0.3*aux1 + 0.3*aux2 + main, which sums to 1.6. Dividing by 1 + 2*aux_weight
    # keeps the heads' weighting and makes the output a probability distribution again.
    total = layers.Add(name="heads_add")(
        [
            layers.Rescaling(aux_weight, name="aux1_weight")(aux[0]),
            layers.Rescaling(aux_weight, name="aux2_weight")(aux[1]),
            main,
        ]
    )
    out = layers.Rescaling(1.0 / (1.0 + 2.0 * aux_weight), name="predictions", dtype="float32")(
        total
    )
    return keras.Model(inputs, out, name="googlenet")
