"""The architecture registry: exact tutorial parameter counts, dropout, L2, normalization inside
the model, augmentation only in training, and a model that survives save/load."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
from keras import layers

from mnistsweep.train.augment import (
    AUGMENTATIONS,
    AffineRanges,
    RandomAffine,
    affine_transforms,
    augmentation_layer,
)
from mnistsweep.train.models import ARCHITECTURES, NORMALIZATIONS, build_model

# Trainable parameters of each tutorial net, from shared/reference.md.
REFERENCE_TRAINABLE = {
    "linear": 7_850,
    "mlp": 269_322,
    "vanilla_cnn": 147_274,
    "fancy_cnn": 72_890,
    "baseline_mlp": 623_290,
    "simple_cnn": 592_074,
    "larger_cnn": 59_933,
    "fcn_512": 669_706,
    "bn_cnn": 596_330,
    "mlp_sigmoid": 79_510,
    "vgg": 98_354,
    "vgg_dropout": 336_940,
    "vgg_bn": 338_820,
}

# The tutorials' own dropout rates, in layer order.
TUTORIAL_DROPOUT_RATES = {
    "simple_cnn": [0.2],
    "larger_cnn": [0.2],
    "fcn_512": [0.2, 0.2],
    "bn_cnn": [0.2],
    "vgg_dropout": [0.5, 0.6],
    "vgg_bn": [0.5, 0.6],
}

# Dropout layers when a rate is asked for, at 0.4 of it on the mlp's input (see models.py).
ASKED_DROPOUT_RATES = {
    "linear": [1.0],
    "mlp": [0.4, 1.0, 1.0],
    "vanilla_cnn": [1.0, 1.0],
    "fancy_cnn": [1.0],
    "baseline_mlp": [1.0],
    "simple_cnn": [1.0],
    "larger_cnn": [1.0],
    "fcn_512": [1.0, 1.0],
    "bn_cnn": [1.0],
    "mlp_sigmoid": [1.0],
    "vgg": [1.0],
    "vgg_dropout": [1.0, 1.0],
    "vgg_bn": [1.0, 1.0],
}


@pytest.fixture(scope="module")
def x_train() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(256, 28, 28), dtype=np.uint8)


@pytest.fixture(scope="module")
def sample() -> np.ndarray:
    """Raw pixels as the trainer feeds them: float32 0..255, with a blank border like MNIST."""
    images = np.zeros((8, 28, 28), dtype=np.float32)
    images[:, 4:24, 4:24] = np.random.default_rng(1).integers(0, 256, size=(8, 20, 20))
    return images


def trainable_count(model: keras.Model) -> int:
    return sum(math.prod(weight.shape) for weight in model.trainable_weights)


def dropout_rates(model: keras.Model) -> list[float]:
    return [layer.rate for layer in model.layers if isinstance(layer, layers.Dropout)]


def output_of(model: keras.Model, layer_name: str) -> keras.Model:
    return keras.Model(model.input, model.get_layer(layer_name).output)


def test_registry_covers_the_reference() -> None:
    assert list(ARCHITECTURES) == list(REFERENCE_TRAINABLE)
    for name, arch in ARCHITECTURES.items():
        assert arch.name == name
        assert arch.description and "\n" not in arch.description
        assert callable(arch.build)
        assert arch.default_dropout == TUTORIAL_DROPOUT_RATES.get(name, [0.0])[0]
    assert list(NORMALIZATIONS) == ["raw", "minmax", "standardize", "standardize_global"]
    assert list(AUGMENTATIONS) == ["none", "standard", "light", "vgg"]


@pytest.mark.parametrize("dropout", [None, 0.0])
@pytest.mark.parametrize("arch", list(REFERENCE_TRAINABLE))
def test_trainable_parameters_match_reference(
    arch: str, dropout: float | None, x_train: np.ndarray
) -> None:
    model = build_model(arch, normalization="standardize", x_train=x_train, dropout=dropout)
    assert trainable_count(model) == REFERENCE_TRAINABLE[arch]
    # The normalization's mean and variance are constants of its layer, not weights, so the only
    # non-trainable parameters are BatchNormalization's moving mean and variance (which equal
    # its trainable gamma and beta in size).
    batch_norm = [layer for layer in model.layers if isinstance(layer, layers.BatchNormalization)]
    moving_statistics = sum(layer.count_params() // 2 for layer in batch_norm)
    assert model.count_params() == REFERENCE_TRAINABLE[arch] + moving_statistics
    assert model.get_layer("normalization").count_params() == 0


def test_vgg_bn_total_matches_reference(x_train: np.ndarray) -> None:
    model = build_model("vgg_bn", normalization="standardize_global", x_train=x_train)
    assert model.count_params() == 340_700


def test_bn_cnn_flattens_1024_features(x_train: np.ndarray) -> None:
    model = build_model("bn_cnn", normalization="minmax", x_train=x_train)
    flatten = next(layer for layer in model.layers if isinstance(layer, layers.Flatten))
    assert flatten.output.shape[-1] == 1024


@pytest.mark.parametrize("arch", list(REFERENCE_TRAINABLE))
def test_dropout_rates(arch: str, x_train: np.ndarray) -> None:
    def build(dropout: float | None) -> keras.Model:
        return build_model(arch, normalization="minmax", x_train=x_train, dropout=dropout)

    assert dropout_rates(build(None)) == pytest.approx(TUTORIAL_DROPOUT_RATES.get(arch, []))
    assert dropout_rates(build(0.0)) == []
    expected = [0.3 * share for share in ASKED_DROPOUT_RATES[arch]]
    assert dropout_rates(build(0.3)) == pytest.approx(expected)


@pytest.mark.parametrize("arch", ["linear", "vanilla_cnn", "vgg_bn"])
def test_l2_penalizes_every_dense_and_conv_kernel(arch: str, x_train: np.ndarray) -> None:
    assert build_model(arch, normalization="minmax", x_train=x_train).losses == []
    model = build_model(arch, normalization="minmax", x_train=x_train, l2=1e-3)
    kernels = [
        layer.kernel for layer in model.layers if isinstance(layer, (layers.Dense, layers.Conv2D))
    ]
    assert len(model.losses) == len(kernels) > 0
    expected = sum(1e-3 * float(np.sum(np.square(keras.ops.convert_to_numpy(k)))) for k in kernels)
    total = sum(float(keras.ops.convert_to_numpy(loss)) for loss in model.losses)
    assert total == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("normalization", list(NORMALIZATIONS))
def test_normalization_inside_the_model(
    normalization: str, x_train: np.ndarray, sample: np.ndarray
) -> None:
    model = build_model("linear", normalization=normalization, x_train=x_train)
    normalized = output_of(model, "normalization").predict(sample, verbose=0)[..., 0]
    pixels = x_train.astype(np.float64)
    expected = {
        "raw": sample,
        "minmax": sample / 255,
        "standardize": (sample - pixels.mean(axis=0)) / (pixels.std(axis=0) + 1),
        "standardize_global": (sample - pixels.mean()) / pixels.std(),
    }[normalization]
    np.testing.assert_allclose(normalized, expected, rtol=1e-5, atol=1e-5)


def test_standardize_global_uses_scalars(x_train: np.ndarray) -> None:
    layer = build_model("linear", normalization="standardize_global", x_train=x_train).get_layer(
        "normalization"
    )
    assert np.ndim(layer.get_config()["mean"]) == 0
    assert np.ndim(layer.get_config()["variance"]) == 0


def test_bad_training_images_are_refused() -> None:
    with pytest.raises(ValueError, match="x_train"):
        build_model("linear", normalization="standardize", x_train=np.zeros((5, 784)))


@pytest.mark.parametrize("augment", [name for name in AUGMENTATIONS if name != "none"])
def test_augmentation_only_in_training(augment: str, x_train: np.ndarray, sample: np.ndarray):
    model = build_model("linear", normalization="raw", x_train=x_train, augment=augment)
    augmentation = output_of(model, "augmentation")
    images = sample[..., None]
    np.testing.assert_array_equal(augmentation(sample, training=False), images)
    augmented = keras.ops.convert_to_numpy(augmentation(sample, training=True))
    assert augmented.shape == images.shape
    assert not np.allclose(augmented, images, atol=1.0)
    # Bilinear resampling with black fill stays within the pixel range.
    assert augmented.min() >= -1e-3 and augmented.max() <= 255 + 1e-3
    # With no dropout and no BatchNorm, only augmentation tells training from inference.
    model = build_model(
        "linear", normalization="minmax", x_train=x_train, augment=augment, dropout=0.0
    )
    inference = keras.ops.convert_to_numpy(model(sample, training=False))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(sample)), inference)
    assert not np.allclose(keras.ops.convert_to_numpy(model(sample, training=True)), inference)


def test_no_augmentation_layer_for_none(x_train: np.ndarray) -> None:
    model = build_model("linear", normalization="raw", x_train=x_train, augment="none")
    assert "augmentation" not in [layer.name for layer in model.layers]
    assert augmentation_layer("none", seed=0) is None


def test_presets_are_the_tutorials_ranges() -> None:
    """ImageDataGenerator's arguments in the tutorials; shear in radians, as Keras 2 read it."""
    assert AUGMENTATIONS["standard"] == AffineRanges(10.0, 0.0, 0.3, 0.1)
    assert AUGMENTATIONS["light"] == AffineRanges(8.0, 0.08, 0.3, 0.08)
    assert AUGMENTATIONS["vgg"] == AffineRanges(10.0, 0.0, 0.1, 0.1)
    layer = augmentation_layer("light", seed=7)
    assert layer is not None and layer.get_config()["shift"] == 0.08
    assert layer.get_config()["seed"] == 7


def test_models_saved_before_augment_moved_still_load(
    tmp_path: Path, x_train: np.ndarray, sample: np.ndarray
) -> None:
    """Older `model.keras` files name the layer's module `mnistsweep.train.models`: the
    registered name `mnistsweep>RandomAffine` still finds it."""
    model = build_model("linear", normalization="minmax", x_train=x_train, augment="standard")
    saved, older = tmp_path / "new.keras", tmp_path / "old.keras"
    model.save(saved)
    with zipfile.ZipFile(saved) as source, zipfile.ZipFile(older, "w") as target:
        for item in source.infolist():
            content = source.read(item)
            if item.filename == "config.json":
                assert b'"mnistsweep.train.augment"' in content
                content = content.replace(
                    b'"mnistsweep.train.augment"', b'"mnistsweep.train.models"'
                )
            target.writestr(item, content)
    loaded = keras.models.load_model(older)
    assert isinstance(loaded.get_layer("augmentation"), RandomAffine)
    np.testing.assert_array_equal(
        loaded.predict(sample, verbose=0), model.predict(sample, verbose=0)
    )


def test_augmentation_is_seeded(sample: np.ndarray) -> None:
    def augmented(seed: int) -> np.ndarray:
        layer = augmentation_layer("standard", seed)
        assert isinstance(layer, RandomAffine)
        return keras.ops.convert_to_numpy(layer(sample[..., None], training=True))

    np.testing.assert_array_equal(augmented(3), augmented(3))
    assert not np.allclose(augmented(3), augmented(4))


def transform(image: np.ndarray, **parameters: float) -> np.ndarray:
    """One affine transform of one (28, 28) image; unnamed parameters are the identity."""
    values = {"rotation": 0.0, "shear": 0.0, "zoom_x": 1.0, "zoom_y": 1.0, "shift_x": 0.0}
    values |= {"shift_y": 0.0} | parameters
    rows = affine_transforms(
        **{key: keras.ops.convert_to_tensor([value], "float32") for key, value in values.items()},
        height=28,
        width=28,
    )
    out = keras.ops.image.affine_transform(
        image[None, ..., None], rows, interpolation="bilinear", fill_mode="constant"
    )
    return keras.ops.convert_to_numpy(out)[0, ..., 0]


def test_affine_transforms_turn_about_the_centre(sample: np.ndarray) -> None:
    image = sample[0]
    np.testing.assert_allclose(transform(image), image, atol=1e-3)
    # A quarter turn about the centre is exactly a rotation of the pixel grid.
    quarter_turn = transform(image, rotation=math.pi / 2)
    assert any(np.allclose(quarter_turn, np.rot90(image, k), atol=1e-2) for k in (1, 3))
    # A one-pixel shift moves the digit by one pixel and fills the border with black.
    shifted = transform(image, shift_x=1.0)
    np.testing.assert_allclose(shifted[:, :-1], image[:, 1:], atol=1e-3)
    np.testing.assert_array_equal(shifted[:, -1], 0)


@pytest.mark.parametrize(
    ("arch", "normalization", "augment", "dropout", "l2"),
    [
        ("fancy_cnn", "standardize", "standard", None, 0.0),
        ("vgg_bn", "standardize_global", "vgg", None, 1e-4),
        ("mlp", "minmax", "light", 0.5, 1e-5),
    ],
)
def test_save_and_load_keep_predictions(
    tmp_path: Path,
    x_train: np.ndarray,
    sample: np.ndarray,
    arch: str,
    normalization: str,
    augment: str,
    dropout: float | None,
    l2: float,
) -> None:
    model = build_model(
        arch,
        normalization=normalization,
        x_train=x_train,
        augment=augment,
        dropout=dropout,
        l2=l2,
    )
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(
        loaded.predict(sample, verbose=0), model.predict(sample, verbose=0)
    )
    assert loaded.get_layer("augmentation").get_config() == (
        model.get_layer("augmentation").get_config()
    )
    assert len(loaded.losses) == len(model.losses)


def test_one_training_step_with_augmentation(x_train: np.ndarray) -> None:
    model = build_model("larger_cnn", normalization="standardize", x_train=x_train, augment="light")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    labels = np.arange(64) % 10
    history = model.fit(x_train[:64].astype("float32"), labels, batch_size=32, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    probabilities = model.predict(x_train[:4].astype("float32"), verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize(
    ("keyword", "bad_name", "allowed"),
    [
        ("arch", "resnet", ARCHITECTURES),
        ("normalization", "zscore", NORMALIZATIONS),
        ("augment", "heavy", AUGMENTATIONS),
    ],
)
def test_unknown_names_list_the_allowed_ones(
    keyword: str, bad_name: str, allowed: dict, x_train: np.ndarray
) -> None:
    arguments = {"arch": "linear", "normalization": "raw", "augment": "none"} | {keyword: bad_name}
    arch = arguments.pop("arch")
    with pytest.raises(ValueError, match=bad_name) as error:
        build_model(arch, x_train=x_train, **arguments)
    assert all(name in str(error.value) for name in allowed)


@pytest.mark.parametrize("dropout", [-0.1, 1.0])
def test_out_of_range_dropout_is_refused(dropout: float, x_train: np.ndarray) -> None:
    with pytest.raises(ValueError, match="dropout"):
        build_model("mlp", normalization="raw", x_train=x_train, dropout=dropout)


JAX_SCRIPT = """
import numpy as np, keras
from mnistsweep.train.models import build_model
assert keras.backend.backend() == "jax"
x = np.random.default_rng(0).integers(0, 256, size=(64, 28, 28), dtype=np.uint8)
model = build_model("larger_cnn", normalization="standardize", x_train=x, augment="standard")
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
model.fit(x.astype("float32"), np.arange(64) % 10, batch_size=32, verbose=0)
assert model.jit_compile, "augmentation must not switch XLA off under JAX"
print("ok")
"""


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_builds_and_trains_under_jax() -> None:
    result = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT],
        env={**os.environ, "KERAS_BACKEND": "jax"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


def test_spec_vocabulary_names_exactly_what_the_registry_builds():
    from mnistsweep import vocabulary

    assert tuple(ARCHITECTURES) == vocabulary.ARCHITECTURE_NAMES
    assert tuple(NORMALIZATIONS) == vocabulary.NORMALIZATION_NAMES
    assert tuple(AUGMENTATIONS) == vocabulary.AUGMENTATION_NAMES
