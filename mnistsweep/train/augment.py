"""The augmentation of the tutorials: random rotation, shift, shear and zoom, as one Keras layer.

Only `keras.ops` and `keras.random` are used, so the layer runs under the TensorFlow and the JAX
backends, and under JAX it compiles with XLA.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import keras
from keras import layers


@dataclasses.dataclass(frozen=True)
class AffineRanges:
    """How far each distortion may go, in the units of the tutorials' Keras 2 ImageDataGenerator.

    Rotation in degrees, shift as a fraction of the image size, zoom factors drawn from
    [1 - zoom, 1 + zoom] per axis, and shear as an angle in radians (what `shear_range` meant
    in the Keras of the tutorials; later Keras read it as degrees, making 0.3 almost nothing).
    """

    rotation_degrees: float = 0.0
    shift: float = 0.0
    shear_radians: float = 0.0
    zoom: float = 0.0

    @property
    def is_identity(self) -> bool:
        return self == AffineRanges()


AUGMENTATIONS: dict[str, AffineRanges] = {
    "none": AffineRanges(),
    "standard": AffineRanges(rotation_degrees=10.0, shear_radians=0.3, zoom=0.1),
    "light": AffineRanges(rotation_degrees=8.0, shift=0.08, shear_radians=0.3, zoom=0.08),
    "vgg": AffineRanges(rotation_degrees=10.0, shear_radians=0.1, zoom=0.1),
}


def affine_transforms(
    rotation: Any,
    shear: Any,
    zoom_x: Any,
    zoom_y: Any,
    shift_x: Any,
    shift_y: Any,
    *,
    height: int,
    width: int,
) -> Any:
    """Rows [a0, a1, a2, b0, b1, b2, 0, 0] for `keras.ops.image.affine_transform`.

    Each row maps an output pixel (x, y) to the input point it samples: rotation (radians),
    shear (radians) and zoom turn about the image centre, as in ImageDataGenerator, and the
    shifts are in pixels. Arguments are 1-D tensors, one value per image.
    """
    ops = keras.ops
    center_x, center_y = (width - 1) / 2, (height - 1) / 2
    # Matrix = rotation @ shear @ zoom, with shear [[1, -sin s], [0, cos s]].
    a0 = ops.cos(rotation) * zoom_x
    a1 = -ops.sin(rotation + shear) * zoom_y
    b0 = ops.sin(rotation) * zoom_x
    b1 = ops.cos(rotation + shear) * zoom_y
    a2 = center_x - a0 * center_x - a1 * center_y + shift_x
    b2 = center_y - b0 * center_x - b1 * center_y + shift_y
    zeros = ops.zeros_like(a0)
    return ops.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


@keras.saving.register_keras_serializable(package="mnistsweep")
class RandomAffine(layers.Layer):
    """Random rotation, shift, shear and zoom in one resampling, active only in training.

    Why not Keras 3's RandomRotation/RandomZoom/RandomTranslation/RandomShear: chained they
    resample (and blur) a 28x28 digit four times, RandomShear shears about the corner (so it
    also shifts the digit), and each marks itself unfit for XLA, which turns jit off for the
    whole model: under JAX, training would then run op by op. This layer follows the tutorials'
    ImageDataGenerator instead. Empty borders are filled with 0 (black, on raw pixels).
    """

    def __init__(
        self,
        rotation_degrees: float = 0.0,
        shift: float = 0.0,
        shear_radians: float = 0.0,
        zoom: float = 0.0,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.rotation_degrees = rotation_degrees
        self.shift = shift
        self.shear_radians = shear_radians
        self.zoom = zoom
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        # TensorFlow has no XLA kernel for its image transform; JAX compiles it fine.
        self.supports_jit = keras.backend.backend() != "tensorflow"

    def call(self, images: Any, training: bool | None = None) -> Any:
        if not training:
            return images
        batch_size = keras.ops.shape(images)[0]
        height, width = images.shape[1], images.shape[2]

        def uniform(limit: float) -> Any:
            return keras.random.uniform(
                (batch_size,), minval=-limit, maxval=limit, seed=self.seed_generator
            )

        transforms = affine_transforms(
            rotation=uniform(math.radians(self.rotation_degrees)),
            shear=uniform(self.shear_radians),
            zoom_x=1.0 + uniform(self.zoom),
            zoom_y=1.0 + uniform(self.zoom),
            shift_x=uniform(self.shift) * width,
            shift_y=uniform(self.shift) * height,
            height=height,
            width=width,
        )
        return keras.ops.image.affine_transform(
            images, transforms, interpolation="bilinear", fill_mode="constant", fill_value=0.0
        )

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "rotation_degrees": self.rotation_degrees,
            "shift": self.shift,
            "shear_radians": self.shear_radians,
            "zoom": self.zoom,
            "seed": self.seed,
        }


def augmentation_layer(name: str, seed: int) -> RandomAffine | None:
    """The preset `name` as a layer seeded with `seed`, or None where it changes nothing."""
    ranges = AUGMENTATIONS[name]
    if ranges.is_identity:
        return None
    return RandomAffine(**dataclasses.asdict(ranges), seed=seed, name="augmentation")
