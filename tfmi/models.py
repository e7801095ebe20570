"""Model zoo of the membership-inference literature. Every model returns logits.

- ``mlp``: the tabular network of Nasr et al. (2018) for Location30/Purchase100/Texas100:
  tanh layers 1024-512-256-128 (inputs are flattened, so it also runs on images);
- ``mlp3``: the same without the 128 layer, tanh 1024-512-256: Li et al.'s Location network (their
  MIST code, ``model/target_model.py``), which ``--preset paper`` uses;
- ``cnn``: a small CNN for 8x8 (digits) and 28x28 (Fashion-MNIST) images;
- ``alexnet``: the AlexNet-style CIFAR network used by Nasr et al. and Li et al.;
- ``resnet20``: the CIFAR ResNet-20 of He et al. (2016).

>>> model = build_model("mlp", input_shape=(446,), num_classes=30, seed=0)
>>> model.output_shape
(None, 30)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras

from tfmi.errors import TfmiError
from tfmi.model_names import MODEL_NAMES

layers = keras.layers


def _inputs(input_shape: Sequence[int]) -> keras.Input:
    return keras.Input(shape=tuple(int(d) for d in input_shape), name="features")


def _logits(x, num_classes: int, reg):
    return layers.Dense(num_classes, name="logits", kernel_regularizer=reg)(x)


def _dropout(x, rate: float):
    return layers.Dropout(rate)(x) if rate > 0 else x


def _as_image(inputs, input_shape: Sequence[int], model_name: str):
    """Accept (h, w, c) images, or (h, w) with an implied single channel."""
    if len(input_shape) == 3:
        return inputs
    if len(input_shape) == 2:
        return layers.Reshape((*input_shape, 1))(inputs)
    raise TfmiError(
        f"model {model_name!r} needs image inputs of shape (height, width[, channels]), "
        f"got feature shape {tuple(input_shape)}: use --model mlp for tabular data"
    )


def tabular_mlp(input_shape, num_classes, dropout=0.0, reg=None, units=(1024, 512, 256, 128)):
    """Fully connected tanh network (Nasr et al. 2018) ending in a logits layer."""
    inputs = _inputs(input_shape)
    x = layers.Flatten()(inputs) if len(input_shape) > 1 else inputs
    for width in units:
        x = _dropout(layers.Dense(width, activation="tanh", kernel_regularizer=reg)(x), dropout)
    return keras.Model(inputs, _logits(x, num_classes, reg), name="mlp")


def small_cnn(input_shape, num_classes, dropout=0.0, reg=None):
    """Two conv layers (32, 64 filters, 3x3), pooling down to <= 7 pixels, a 128-unit dense layer."""
    inputs = _inputs(input_shape)
    x = _as_image(inputs, input_shape, "cnn")
    side = min(int(input_shape[0]), int(input_shape[1]))
    for filters in (32, 64):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", kernel_regularizer=reg)(x)
        if side >= 8:
            x = layers.MaxPooling2D(2)(x)
            side //= 2
    x = layers.Flatten()(x)
    x = _dropout(layers.Dense(128, activation="relu", kernel_regularizer=reg)(x), dropout)
    return keras.Model(inputs, _logits(x, num_classes, reg), name="cnn")


def alexnet(input_shape, num_classes, dropout=0.0, reg=None):
    """AlexNet-style CIFAR network: five conv layers (64-192-384-256-256), three max-pools."""
    inputs = _inputs(input_shape)
    x = _as_image(inputs, input_shape, "alexnet")

    def conv(filters, size, **kwargs):
        return layers.Conv2D(filters, size, padding="same", activation="relu", kernel_regularizer=reg,
                             **kwargs)

    x = conv(64, 11, strides=4)(x)
    x = layers.MaxPooling2D(2, padding="same")(x)
    x = conv(192, 5)(x)
    x = layers.MaxPooling2D(2, padding="same")(x)
    x = conv(256, 3)(conv(256, 3)(conv(384, 3)(x)))
    x = layers.MaxPooling2D(2, padding="same")(x)
    x = _dropout(layers.Flatten()(x), dropout)
    return keras.Model(inputs, _logits(x, num_classes, reg), name="alexnet")


def _resnet_conv(filters: int, size: int, reg, stride: int = 1):
    return layers.Conv2D(filters, size, strides=stride, padding="same", use_bias=False,
                         kernel_initializer="he_normal", kernel_regularizer=reg)


def _residual_block(x, filters: int, stride: int, reg):
    shortcut = x
    y = layers.ReLU()(layers.BatchNormalization()(_resnet_conv(filters, 3, reg, stride)(x)))
    y = layers.BatchNormalization()(_resnet_conv(filters, 3, reg)(y))
    if stride != 1 or shortcut.shape[-1] != filters:
        shortcut = layers.BatchNormalization()(_resnet_conv(filters, 1, reg, stride)(shortcut))
    return layers.ReLU()(layers.Add()([y, shortcut]))


def resnet20(input_shape, num_classes, dropout=0.0, reg=None):
    """ResNet-20 for 32x32 images (He et al. 2016): 3 stages x 3 basic blocks, 16/32/64 filters."""
    inputs = _inputs(input_shape)
    x = _as_image(inputs, input_shape, "resnet20")
    x = layers.ReLU()(layers.BatchNormalization()(_resnet_conv(16, 3, reg)(x)))
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(3):
            x = _residual_block(x, filters, 2 if stage > 0 and block == 0 else 1, reg)
    x = _dropout(layers.GlobalAveragePooling2D()(x), dropout)
    return keras.Model(inputs, _logits(x, num_classes, reg), name="resnet20")


def authors_location_mlp(input_shape, num_classes, dropout=0.0, reg=None) -> keras.Model:
    """Li et al.'s tanh 1024-512-256 network for Location (MIST ``model/target_model.py``)."""
    return tabular_mlp(input_shape, num_classes, dropout, reg, units=(1024, 512, 256))


MODEL_BUILDERS: dict[str, Callable[..., keras.Model]] = {
    "mlp": tabular_mlp,
    "mlp3": authors_location_mlp,
    "cnn": small_cnn,
    "alexnet": alexnet,
    "resnet20": resnet20,
}


def check_model_name(name: str) -> str:
    """Return ``name`` if it is a zoo model, else raise naming the valid ones.

    >>> check_model_name("mlp")
    'mlp'
    """
    if name not in MODEL_BUILDERS:
        raise TfmiError(f"unknown model {name!r}: use one of {', '.join(MODEL_NAMES)}")
    return name


def build_model(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    *,
    dropout: float = 0.0,
    l2: float = 0.0,
    seed: int | None = None,
) -> keras.Model:
    """Build zoo model ``name`` for inputs of ``input_shape`` (no batch axis); outputs logits.

    ``dropout`` adds dropout after hidden dense layers (before the logits of conv nets); ``l2``
    adds weight decay ``l2 * ||W||^2`` on every kernel to the training loss. ``seed`` makes the
    initial weights reproducible (it seeds TensorFlow's global generator).

    >>> build_model("cnn", (8, 8, 1), 10).output_shape
    (None, 10)
    """
    builder = MODEL_BUILDERS[check_model_name(name)]
    if num_classes < 2:
        raise TfmiError(f"a classifier needs at least 2 classes, got {num_classes}")
    if not 0.0 <= dropout < 1.0:
        raise TfmiError(f"dropout rate must be in [0, 1), got {dropout}")
    if not l2 >= 0.0:
        raise TfmiError(f"l2 weight decay must be >= 0, got {l2}")
    if seed is not None:
        keras.utils.set_random_seed(seed)
    reg = keras.regularizers.L2(l2) if l2 > 0 else None
    return builder(tuple(input_shape), int(num_classes), dropout=dropout, reg=reg)
