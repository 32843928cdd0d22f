"""The names a spec may use, importable without Keras so that validation and `--dry-run` stay fast.

`mnistsweep.train.models` and `mnistsweep.train.augment` build each of these; a test
(tests/test_models.py) checks that the lists agree.
"""

ARCHITECTURE_NAMES: tuple[str, ...] = (
    "linear",
    "mlp",
    "vanilla_cnn",
    "fancy_cnn",
    "baseline_mlp",
    "simple_cnn",
    "larger_cnn",
    "fcn_512",
    "bn_cnn",
    "mlp_sigmoid",
    "vgg",
    "vgg_dropout",
    "vgg_bn",
)
NORMALIZATION_NAMES: tuple[str, ...] = ("raw", "minmax", "standardize", "standardize_global")
AUGMENTATION_NAMES: tuple[str, ...] = ("none", "standard", "light", "vgg")
