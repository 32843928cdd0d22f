"""The tutorials' architectures, and how one run's model is put together from them.

Every model takes raw pixels (float32 0..255, shape (28, 28)) and returns class probabilities:
augmentation (`mnistsweep.train.augment`) and normalization live inside the model, so a saved
`.keras` file needs no preprocessing code to be used. Only `keras.layers`, `keras.ops`,
`keras.random` and `keras.regularizers` are used, so the models work under the TensorFlow and the
JAX backends.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras import layers

from mnistsweep.train.augment import AUGMENTATIONS, RandomAffine, augmentation_layer

IMAGE_SIZE = 28
NUM_CLASSES = 10


@dataclass(frozen=True)
class BodyOptions:
    """What a run may change in a tutorial's body: its dropout and its weight decay."""

    dropout_rate: float | None  # None: the tutorial's own rates
    l2: float

    def dropout(
        self, x: keras.KerasTensor, tutorial_rate: float = 0.0, scale: float = 1.0
    ) -> keras.KerasTensor:
        """A Dropout layer where the tutorial has one or the run asks for one; none at rate 0.

        `scale` lets one layer use a fraction of the run's rate (the mlp's input dropout).
        """
        rate = tutorial_rate if self.dropout_rate is None else self.dropout_rate * scale
        return layers.Dropout(rate)(x) if rate > 0 else x

    def dense(self, units: int, activation: str | None = None, **kwargs: Any) -> layers.Dense:
        return layers.Dense(
            units, activation=activation, kernel_regularizer=self._regularizer(), **kwargs
        )

    def conv(
        self,
        filters: int,
        kernel_size: int,
        padding: str = "same",
        activation: str | None = None,
    ) -> layers.Conv2D:
        return layers.Conv2D(
            filters,
            kernel_size,
            padding=padding,
            activation=activation,
            kernel_regularizer=self._regularizer(),
        )

    def _regularizer(self) -> keras.regularizers.Regularizer | None:
        # A fresh instance per layer, so that each serializes on its own.
        return keras.regularizers.L2(self.l2) if self.l2 > 0 else None


Body = Callable[[keras.KerasTensor, BodyOptions], keras.KerasTensor]


@dataclass(frozen=True)
class Architecture:
    """One tutorial net. `build` adds its body (everything before the final Dense(10) softmax)."""

    name: str
    description: str
    build: Body
    default_dropout: float  # the tutorial's own rate; 0.0 where it has none


# --- Bodies. Each takes the normalized (batch, 28, 28, 1) image and returns the features that
# --- the final Dense(10, softmax) classifies. Comments say where dropout goes.


def _linear(x: keras.KerasTensor, options: BodyOptions) -> keras.KerasTensor:
    # Dropout only when asked: on the input pixels.
    x = layers.Flatten()(x)
    return options.dropout(x)


def _mlp(x: keras.KerasTensor, options: BodyOptions) -> keras.KerasTensor:
    # Dropout only when asked: after each hidden layer, and on the input at 0.4 times the rate
    # (the tutorial's suggestion of 20% on the input next to 50% on the hidden layers).
    x = layers.Flatten()(x)
    x = options.dropout(x, scale=0.4)
    for _ in range(2):
        x = options.dense(256, "relu")(x)
        x = options.dropout(x)
    return x


def _vanilla_cnn(x: keras.KerasTensor, options: BodyOptions) -> keras.KerasTensor:
    # Dropout only when asked: right after the standardizing layer, and before the dense layers.
    x = options.dropout(x)
    for filters in (16, 32, 64):
        x = options.conv(filters, 5, activation="relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = options.dropout(x)
    x = options.dense(128, "relu")(x)
    return options.dense(64, "relu")(x)


def _conv_bn_relu(
    x: keras.KerasTensor, options: BodyOptions, filters: int, padding: str = "same"
) -> keras.KerasTensor:
    x = options.conv(filters, 3, padding=padding)(x)
    x = layers.BatchNormalization()(x)
    return layers.ReLU()(x)


def _fancy_cnn(x: keras.KerasTensor, options: BodyOptions) -> keras.KerasTensor:
    # Dropout only when asked: after the global average pooling, before the final Dense.
    for filters in (16, 32):
        x = _conv_bn_relu(x, options, filters)
        x = _conv_bn_relu(x, options, filters)
        x = layers.MaxPooling2D()(x)
    x = _conv_bn_relu(x, options, 64)
    x = _conv_bn_relu(x, options, 64)
    x = layers.GlobalAveragePooling2D()(x)
    return options.dropout(x)


def _baseline_mlp(x: keras.KerasTensor, options: BodyOptions) -> keras.KerasTensor:
    # Dropout only when asked: after the hidden layer.
    x = layers.Flatten()(x)
    x = options.dense(IMAGE_SIZE * IMAGE_SIZE, "relu")(x)
    return options.dropout(x)


def _simple_cnn(x: keras.KerasTensor, options: BodyOptions) -> keras.KerasTensor:
    # Dropout 0.2 after the pooling, as in the tutorial.
    x = options.conv(32, 5, padding="valid", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = options.dropout(x, tutorial_rate=0.2)
    x = layers.Flatten()(x)
    return options.dense(128, "relu")(x)


def _larger_cnn(x: keras.KerasTensor, options: BodyOptions) -> keras.KerasTensor:
    # Dropout 0.2 after the second pooling, as in the tutorial.
    x = options.conv(30, 5, padding="valid", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = options.conv(15, 3, padding="valid", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = options.dropout(x, tutorial_rate=0.2)
    x = layers.Flatten()(x)
    x = options.dense(128, "relu")(x)
    return options.dense(50, "relu")(x)


def _fcn_512(x: keras.KerasTensor, options: BodyOptions) -> keras.KerasTensor:
    # Dropout 0.2 after each hidden layer, as in the tutorial.
    x = layers.Flatten()(x)
    for _ in range(2):
        x = options.dense(512, "relu")(x)
        x = options.dropout(x, tutorial_rate=0.2)
    return x


def _bn_cnn(x: keras.KerasTensor, options: BodyOptions) -> keras.KerasTensor:
    # Dropout 0.2 after the hidden dense layer, as in the tutorial. Valid convolutions leave
    # 4x4x64 = 1,024 features for the dense layer.
    for filters in (32, 64):
        x = _conv_bn_relu(x, options, filters, padding="valid")
        x = _conv_bn_relu(x, options, filters, padding="valid")
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = options.dense(512)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    return options.dropout(x, tutorial_rate=0.2)


def _mlp_sigmoid(x: keras.KerasTensor, options: BodyOptions) -> keras.KerasTensor:
    # Dropout only when asked: after the hidden layer.
    x = layers.Flatten()(x)
    x = options.dense(100, "sigmoid")(x)
    return options.dropout(x)


def _vgg_convs(
    x: keras.KerasTensor,
    options: BodyOptions,
    blocks: tuple[tuple[int, ...], ...],
    batch_norm: bool,
) -> keras.KerasTensor:
    """3x3 same-padded ReLU convs, each block closed by 2x2 max-pooling over the spatial axes.

    The notebook's Keras 1 code pooled over a mismatched axis order; this is the intended net.
    With `batch_norm`, BatchNormalization follows every conv (after its ReLU, as in the notebook).
    """
    for block in blocks:
        for filters in block:
            x = options.conv(filters, 3, activation="relu")(x)
            if batch_norm:
                x = layers.BatchNormalization()(x)
        x = layers.MaxPooling2D()(x)
    return layers.Flatten()(x)


def _vgg(x: keras.KerasTensor, options: BodyOptions) -> keras.KerasTensor:
    # Dropout only when asked: after the hidden dense layer.
    x = _vgg_convs(x, options, ((7, 7), (14, 14), (28, 28, 28), (56, 56, 56)), batch_norm=False)
    x = options.dense(100, "sigmoid")(x)
    return options.dropout(x)


def _vgg_dropout_body(
    x: keras.KerasTensor, options: BodyOptions, batch_norm: bool
) -> keras.KerasTensor:
    x = _vgg_convs(x, options, ((10, 10), (20, 20), (40, 40)), batch_norm=batch_norm)
    for tutorial_rate in (0.5, 0.6):
        x = options.dense(400, "relu")(x)
        if batch_norm:
            x = layers.BatchNormalization()(x)
        x = options.dropout(x, tutorial_rate=tutorial_rate)
    return x


def _vgg_dropout(x: keras.KerasTensor, options: BodyOptions) -> keras.KerasTensor:
    # Dropout 0.5 after the first hidden dense layer and 0.6 after the second, as in the notebook.
    return _vgg_dropout_body(x, options, batch_norm=False)


def _vgg_bn(x: keras.KerasTensor, options: BodyOptions) -> keras.KerasTensor:
    # Dropout as in vgg_dropout (0.5, 0.6), after each hidden dense layer's BatchNormalization.
    return _vgg_dropout_body(x, options, batch_norm=True)


ARCHITECTURES: dict[str, Architecture] = {
    arch.name: arch
    for arch in (
        Architecture(
            "linear", "Logistic regression: Dense(10) softmax on the pixels", _linear, 0.0
        ),
        Architecture("mlp", "MLP 784-256-256-10, ReLU", _mlp, 0.0),
        Architecture(
            "vanilla_cnn",
            "3 x [Conv 5x5 (16, 32, 64) - ReLU - MaxPool 2], Dense 128 - 64 - 10",
            _vanilla_cnn,
            0.0,
        ),
        Architecture(
            "fancy_cnn",
            "3x3 Conv-BN-ReLU pairs (16, 32, 64), max-pooling, global average pooling, Dense 10",
            _fancy_cnn,
            0.0,
        ),
        Architecture("baseline_mlp", "MLP 784-784-10, ReLU", _baseline_mlp, 0.0),
        Architecture(
            "simple_cnn",
            "Conv 32@5x5 - MaxPool 2 - Dropout 0.2 - Dense 128 - 10",
            _simple_cnn,
            0.2,
        ),
        Architecture(
            "larger_cnn",
            "Conv 30@5x5 - MaxPool - Conv 15@3x3 - MaxPool - Dropout 0.2 - Dense 128 - 50 - 10",
            _larger_cnn,
            0.2,
        ),
        Architecture("fcn_512", "MLP 784-512-512-10, ReLU, dropout 0.2", _fcn_512, 0.2),
        Architecture(
            "bn_cnn",
            "Valid 3x3 Conv-BN-ReLU (32, 32, pool, 64, 64, pool), Dense 512-BN-ReLU-Dropout 0.2",
            _bn_cnn,
            0.2,
        ),
        Architecture("mlp_sigmoid", "MLP 784-100-10, sigmoid hidden layer", _mlp_sigmoid, 0.0),
        Architecture(
            "vgg",
            "VGG-style 3x3 convs 7,7 | 14,14 | 28x3 | 56x3, Dense 100 sigmoid - 10",
            _vgg,
            0.0,
        ),
        Architecture(
            "vgg_dropout",
            "VGG-style convs 10,10 | 20,20 | 40,40, Dense 400 - Dropout 0.5 - 400 - Dropout 0.6",
            _vgg_dropout,
            0.5,  # and 0.6 on the second dense layer
        ),
        Architecture(
            "vgg_bn",
            "vgg_dropout with BatchNorm after every conv and hidden dense layer",
            _vgg_bn,
            0.5,  # and 0.6 on the second dense layer
        ),
    )
}

NORMALIZATIONS: dict[str, str] = {
    "raw": "raw pixels 0..255",
    "minmax": "x / 255",
    "standardize": "per pixel (x - mean) / (std + 1), fitted on the training images",
    "standardize_global": "(x - mean) / std with one scalar mean and std over all training pixels",
}


def _check_name(name: str, allowed: Mapping[str, Any], what: str) -> None:
    if name not in allowed:
        raise ValueError(f"unknown {what} {name!r}; allowed: {', '.join(allowed)}")


def _training_pixels(x_train: np.ndarray) -> np.ndarray:
    x_train = np.asarray(x_train)
    if x_train.ndim != 3 or x_train.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or len(x_train) == 0:
        raise ValueError(
            f"x_train must hold images of shape (n, {IMAGE_SIZE}, {IMAGE_SIZE}) with n > 0, "
            f"got {x_train.shape}"
        )
    return x_train


def _normalization_layer(normalization: str, x_train: np.ndarray) -> layers.Layer:
    """The normalization as a built-in layer, fitted on the training images.

    Its statistics are constants of the layer (saved in its config), not weights: they add
    nothing to the parameter count.
    """
    name = "normalization"
    if normalization == "raw":
        return layers.Identity(name=name)
    if normalization == "minmax":
        return layers.Rescaling(1 / 255, name=name)
    pixels = _training_pixels(x_train)
    if normalization == "standardize":
        mean = pixels.mean(axis=0, dtype=np.float64)
        std = pixels.std(axis=0, dtype=np.float64)
        # Normalization divides by sqrt(variance), so (x - mean) / (std + 1) needs (std + 1)^2.
        return layers.Normalization(
            axis=(1, 2, 3), mean=mean[..., None], variance=((std + 1) ** 2)[..., None], name=name
        )
    mean = float(pixels.mean(dtype=np.float64))
    std = float(pixels.std(dtype=np.float64)) or 1.0  # a blank training set: just centre it
    return layers.Normalization(axis=None, mean=mean, variance=std**2, name=name)


def build_model(
    arch: str,
    *,
    normalization: str,
    x_train: np.ndarray,
    dropout: float | None = None,
    l2: float = 0.0,
    augment: str = "none",
    seed: int = 0,
) -> keras.Model:
    """Input (raw pixels) -> Reshape -> augmentation -> normalization -> body -> Dense(10) softmax.

    `dropout=None` keeps the tutorial's own rates; a number sets every dropout layer's rate
    (adding dropout where the tutorial has none) and 0.0 removes them all. `l2 > 0` puts an L2
    penalty on every Dense and Conv kernel. `seed` seeds the augmentation.
    """
    _check_name(arch, ARCHITECTURES, "architecture")
    _check_name(normalization, NORMALIZATIONS, "normalization")
    _check_name(augment, AUGMENTATIONS, "augmentation")
    if dropout is not None and not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if l2 < 0:
        raise ValueError(f"l2 must be >= 0, got {l2}")

    inputs = keras.Input(shape=(IMAGE_SIZE, IMAGE_SIZE), name="pixels")
    x = layers.Reshape((IMAGE_SIZE, IMAGE_SIZE, 1), name="image")(inputs)
    augmentation = augmentation_layer(augment, seed)
    if augmentation is not None:
        x = augmentation(x)
    x = _normalization_layer(normalization, x_train)(x)
    options = BodyOptions(dropout_rate=dropout, l2=l2)
    x = ARCHITECTURES[arch].build(x, options)
    outputs = options.dense(NUM_CLASSES, "softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=arch)


def inference_model(model: keras.Model) -> keras.Model:
    """`model` as inference sees it, for saving: without its augmentation layer (the identity
    outside training, and a class of mnistsweep, so plain `keras.models.load_model` could not
    load the file without importing mnistsweep first). The same layers, weights and optimizer;
    normalization stays inside. A model without augmentation is returned as it is.
    """
    if not any(isinstance(layer, RandomAffine) for layer in model.layers):
        return model
    inputs = keras.Input(shape=(IMAGE_SIZE, IMAGE_SIZE), name="pixels")
    x = inputs
    for layer in model.layers:  # every net is a chain of layers
        if not isinstance(layer, (layers.InputLayer, RandomAffine)):
            x = layer(x)
    portable = keras.Model(inputs, x, name=model.name)
    portable.compile(optimizer=model.optimizer, loss=model.loss, metrics=["accuracy"])
    return portable
