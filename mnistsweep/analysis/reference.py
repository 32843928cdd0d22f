"""The tutorials' published test accuracies, as data, and how a sweep's runs are matched to them.

Each row names the configuration the tutorial trained (`config`: the values a run's config takes in
`runs.load_runs`, a null dropout reading "default": the tutorial's own rates) and the settings its
figure depends on (`Settings`: training images, epochs, batch size, normalization, augmentation,
learning-rate schedule and rate). A run is compared with a row only when it has the row's
configuration AND the tutorial's settings; a configuration trained otherwise is listed with the
settings that differ, never set beside the figure (a 2,000-image smoke run is not "-85 points").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

TUTORIAL_1 = "Tutorial 1"
TUTORIAL_2 = "Tutorial 2"
TUTORIAL_3 = "Tutorial 3"
TUTORIAL_4 = "Tutorial 4"
TUTORIALS = {
    TUTORIAL_1: "linear model, MLP and CNNs on standardized pixels; its 4-model ensemble",
    TUTORIAL_2: "baseline MLP and two CNNs on pixels / 255, batch 200",
    TUTORIAL_3: "512-unit FCN and a BatchNorm CNN with augmentation",
    TUTORIAL_4: "VGG-style notebook: global standardization; it validates on the test set",
}


@dataclass(frozen=True)
class Positive:
    """Matches any number above zero: a tutorial that adds dropout without naming its rate."""

    def matches(self, column: pd.Series) -> pd.Series:
        numbers = pd.to_numeric(column, errors="coerce")
        return numbers > 0

    def __str__(self) -> str:
        return "> 0"


FULL_TRAINING_SET = 60_000
HELD_OUT = 54_000  # 10% of the training set held out for validation, as most tutorials do
NOT_STATED = "not stated"


@dataclass(frozen=True)
class Settings:
    """How a tutorial trained for its figure; None where the tutorial does not say (any value
    matches then). Normalization and augmentation come from the row's `config`."""

    training_images: int = HELD_OUT  # the tutorial's; ours is 54,000 at validation_split 0.1
    epochs: int | None = None
    batch_size: int = 128
    lr_schedule: str = "constant"
    learning_rate: float = 1e-3  # Adam's default, which every tutorial keeps


@dataclass(frozen=True)
class ReferenceRow:
    name: str
    config: Mapping[str, Any]  # column → value (or a matcher such as Positive())
    test_accuracy: float
    setting: str  # a note on what else the figure came with
    source: str
    settings: Settings = Settings()

    def matches(self, runs: pd.DataFrame) -> pd.Series:
        """Which runs have this row's configuration; none when the sweep lacks one of its keys."""
        selected = pd.Series(True, index=runs.index)
        for column, wanted in self.config.items():
            if column not in runs.columns:
                return pd.Series(False, index=runs.index)
            if isinstance(wanted, Positive):
                selected &= wanted.matches(runs[column])
            else:
                selected &= runs[column] == wanted
        return selected

    def describe(self) -> str:
        return ", ".join(f"{key}={value}" for key, value in self.config.items())


_PLAIN = {"dropout": "default", "augment": "none", "l2": 0.0}  # the tutorial as published
# The 2nd tutorial and the VGG notebook validate on the test set, so they train on all 60,000.
TUTORIAL_2_SETTINGS = Settings(training_images=FULL_TRAINING_SET, epochs=10, batch_size=200)
ONE_VGG_EPOCH = Settings(training_images=FULL_TRAINING_SET, epochs=1)

REFERENCE_ROWS: tuple[ReferenceRow, ...] = (
    ReferenceRow(
        "linear, standardized",
        {"arch": "linear", "normalization": "standardize", **_PLAIN},
        0.924,
        "20 epochs (val ~93.6%); raw pixels: 50-85%, unstable",
        TUTORIAL_1,
        Settings(epochs=20),
    ),
    ReferenceRow(
        "mlp 256-256",
        {"arch": "mlp", "normalization": "standardize", **_PLAIN},
        0.9737,
        "overfits: train 99.6%, val 97.6%",
        TUTORIAL_1,
    ),
    ReferenceRow(
        "vanilla_cnn",
        {"arch": "vanilla_cnn", "normalization": "standardize", **_PLAIN},
        0.989,
        "",
        TUTORIAL_1,
    ),
    ReferenceRow(
        "vanilla_cnn + dropout",
        {
            "arch": "vanilla_cnn",
            "normalization": "standardize",
            "dropout": Positive(),
            "augment": "none",
            "l2": 0.0,
        },
        0.992,
        "dropout after the standardizing layer and before the dense layers",
        TUTORIAL_1,
    ),
    ReferenceRow(
        "fancy_cnn",
        {"arch": "fancy_cnn", "normalization": "standardize", **_PLAIN},
        0.992,
        "",
        TUTORIAL_1,
    ),
    ReferenceRow(
        "fancy_cnn + augmentation",
        {"arch": "fancy_cnn", "normalization": "standardize", **_PLAIN, "augment": "standard"},
        0.995,
        "rotation 10°, zoom 0.1, shear 0.3",
        TUTORIAL_1,
    ),
    ReferenceRow(
        "baseline_mlp 784-784",
        {"arch": "baseline_mlp", "normalization": "minmax", **_PLAIN},
        0.9826,
        "10 epochs, batch 200",
        TUTORIAL_2,
        TUTORIAL_2_SETTINGS,
    ),
    ReferenceRow(
        "simple_cnn",
        {"arch": "simple_cnn", "normalization": "minmax", **_PLAIN},
        0.9890,
        "10 epochs, batch 200",
        TUTORIAL_2,
        TUTORIAL_2_SETTINGS,
    ),
    ReferenceRow(
        "larger_cnn",
        {"arch": "larger_cnn", "normalization": "minmax", **_PLAIN},
        0.9911,
        "10 epochs, batch 200",
        TUTORIAL_2,
        TUTORIAL_2_SETTINGS,
    ),
    ReferenceRow(
        "fcn_512",
        {"arch": "fcn_512", "normalization": "minmax", **_PLAIN},
        0.98,
        "5 epochs",
        TUTORIAL_3,
        Settings(epochs=5),
    ),
    ReferenceRow(
        "bn_cnn + augmentation",
        {"arch": "bn_cnn", "normalization": "minmax", **_PLAIN, "augment": "light"},
        0.99,
        "'> 99%'; rotation 8°, shifts 0.08, shear 0.3, zoom 0.08",
        TUTORIAL_3,
        Settings(epochs=5),
    ),
    ReferenceRow(
        "linear, global standardization",
        {"arch": "linear", "normalization": "standardize_global", **_PLAIN},
        0.9231,
        "",
        TUTORIAL_4,
        Settings(training_images=FULL_TRAINING_SET, epochs=10),
    ),
    ReferenceRow(
        "mlp_sigmoid 784-100",
        {"arch": "mlp_sigmoid", "normalization": "standardize_global", **_PLAIN},
        0.9756,
        "10 epochs",
        TUTORIAL_4,
        Settings(training_images=FULL_TRAINING_SET, epochs=10),
    ),
    ReferenceRow(
        "vgg",
        {"arch": "vgg", "normalization": "standardize_global", **_PLAIN},
        0.9684,
        "1 epoch",
        TUTORIAL_4,
        ONE_VGG_EPOCH,
    ),
    ReferenceRow(
        "vgg_dropout + augmentation",
        {"arch": "vgg_dropout", "normalization": "standardize_global", **_PLAIN, "augment": "vgg"},
        0.9849,
        "1 epoch",
        TUTORIAL_4,
        ONE_VGG_EPOCH,
    ),
    ReferenceRow(
        "vgg_bn + augmentation",
        {"arch": "vgg_bn", "normalization": "standardize_global", **_PLAIN, "augment": "vgg"},
        0.9814,
        "1 epoch (99.17% after one more at learning rate 1e-4)",
        TUTORIAL_4,
        ONE_VGG_EPOCH,
    ),
)

# Tutorial 1's ensemble: the predicted probabilities of 4 models averaged.
ENSEMBLE_REFERENCE = {"members": 4, "test_accuracy": 0.9968, "test_loss": 0.0105}


def ensemble_comparison(weights: list[int], subsets: list[Any]) -> str | None:
    """Why an ensemble cannot be set beside Tutorial 1's 4-model figure, or None when it can:
    exactly 4 models' probabilities averaged, as the tutorial builds it (`weights`), each
    trained on the whole training split (`subsets`: the members' train_subset, null for all)."""
    wanted = int(ENSEMBLE_REFERENCE["members"])
    if len(weights) != wanted or any(weight != 1 for weight in weights):
        return f"{len(weights)} runs weighted {weights}, not {wanted} models averaged"
    partial = [subset for subset in subsets if subset is not None and subset != "default"]
    if partial:
        return f"members trained on subsets of {_distinct(pd.DataFrame({'s': partial}), 's')}"
    return None


SETTING_COLUMNS = (
    "training_images",
    "epochs",
    "batch_size",
    "normalization",
    "augment",
    "lr_schedule",
    "learning_rate",
)


def comparison(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[ReferenceRow]]:
    """One row per reference row the sweep has runs of the configuration for, and the rows it has
    none for.

    Columns: `reference`, `source`, `configuration` (the matched config keys), `note`;
    `tutorial_<s>` and `sweep_<s>` for each setting s of `SETTING_COLUMNS` (the sweep side lists
    the distinct values of the runs shown: the matched ones, else all runs of the configuration);
    `status` ("matched": runs with every setting the tutorial states exist; "settings differ":
    only runs trained otherwise); `flags` (settings the tutorial leaves unstated, and a smaller
    training set than the tutorial's); `differs` (for "settings differ", e.g. "epochs: tutorial
    10, sweep 3"); `reference_test_acc`; `runs` (matched runs), `sweep_test_acc_mean`,
    `sweep_test_acc_std` and `difference` (sweep minus tutorial; NaN unless matched);
    `configuration_runs`.
    """
    done = _with_training_images(runs[runs["status"] == "completed"] if len(runs) else runs)
    rows, uncovered = [], []
    for reference in REFERENCE_ROWS:
        configured = done[reference.matches(done)] if len(done) else done
        if configured.empty:
            uncovered.append(reference)
            continue
        rows.append(_compared(reference, configured))
    return pd.DataFrame(rows), uncovered


def tutorial_settings(reference: ReferenceRow) -> dict[str, Any]:
    """The tutorial's side of each setting, as shown."""
    settings = reference.settings
    return {
        "training_images": settings.training_images,
        "epochs": NOT_STATED if settings.epochs is None else settings.epochs,
        "batch_size": settings.batch_size,
        "normalization": reference.config.get("normalization", NOT_STATED),
        "augment": reference.config.get("augment", "none"),
        "lr_schedule": settings.lr_schedule,
        "learning_rate": settings.learning_rate,
    }


def setting_matches(reference: ReferenceRow, runs: pd.DataFrame) -> dict[str, pd.Series]:
    """Per setting, which runs trained as the tutorial did. Training images match when the run
    used the whole training split, never a subset: the tutorial's count, or 54,000 where the
    tutorial trained on all 60,000 (we hold 6,000 out for validation; `flags` says so)."""
    settings = reference.settings
    every = pd.Series(True, index=runs.index)
    subset = _column(runs, "train_subset")
    whole = subset.isna() | (subset == "default")
    images = _column(runs, "training_images")
    return {
        "training_images": whole & images.isin({settings.training_images, HELD_OUT}),
        "epochs": every if settings.epochs is None else _equal(runs, "epochs", settings.epochs),
        "batch_size": _equal(runs, "batch_size", settings.batch_size),
        "normalization": every,  # part of the configuration: already matched
        "augment": every,
        "lr_schedule": _equal(runs, "lr_schedule", settings.lr_schedule),
        "learning_rate": _equal(runs, "learning_rate", settings.learning_rate),
    }


def _compared(reference: ReferenceRow, configured: pd.DataFrame) -> dict[str, Any]:
    matches = setting_matches(reference, configured)
    same = pd.concat(matches.values(), axis=1).all(axis=1)
    matched = configured[same]
    shown = matched if len(matched) else configured
    tutorial = tutorial_settings(reference)
    differs = [
        f"{setting.replace('_', ' ')}: tutorial {_text(tutorial[setting])}, "
        f"sweep {_distinct(configured[~matches[setting]], setting)}"
        for setting in SETTING_COLUMNS
        if not matches[setting].any()
    ]
    mean = float(matched["test_accuracy"].mean()) if len(matched) else float("nan")
    flags = [
        f"{setting.replace('_', ' ')}: not stated by the tutorial"
        for setting, value in tutorial.items()
        if value == NOT_STATED
    ]
    fewer = matched[matched["training_images"] < reference.settings.training_images]
    if len(fewer):
        flags.append(
            f"trained on {_distinct(fewer, 'training_images')} images, the tutorial on "
            f"{reference.settings.training_images:,}"
        )
    return {
        "reference": reference.name,
        "source": reference.source,
        "configuration": reference.describe(),
        "note": reference.setting,
        **{f"tutorial_{key}": _text(value) for key, value in tutorial.items()},
        **{f"sweep_{key}": _distinct(shown, key) for key in SETTING_COLUMNS},
        "status": "matched" if len(matched) else "settings differ",
        "flags": "; ".join(flags),
        "differs": "; ".join(differs) if not len(matched) else "",
        "reference_test_acc": reference.test_accuracy,
        "runs": len(matched),
        "sweep_test_acc_mean": mean,
        "sweep_test_acc_std": float(matched["test_accuracy"].std()) if len(matched) > 1 else None,
        "difference": mean - reference.test_accuracy,
        "configuration_runs": len(configured),
    }


def _with_training_images(runs: pd.DataFrame) -> pd.DataFrame:
    """The images each run trained on: its subset, else the split left after validation."""
    if runs.empty:
        return runs
    split = pd.to_numeric(_column(runs, "validation_split"), errors="coerce").fillna(0.1)
    full = (FULL_TRAINING_SET * (1 - split)).round().astype(int)
    subset = pd.to_numeric(_column(runs, "train_subset"), errors="coerce")
    return runs.assign(training_images=subset.fillna(full).astype(int))


def _column(runs: pd.DataFrame, column: str) -> pd.Series:
    """A config column, or one of missing values for results written before it existed."""
    return runs[column] if column in runs.columns else pd.Series(None, index=runs.index)


def _equal(runs: pd.DataFrame, column: str, wanted: Any) -> pd.Series:
    if column not in runs.columns:
        return pd.Series(False, index=runs.index)
    return runs[column] == wanted


def _text(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1000:
        return f"{value:,}"
    return str(value)


def _distinct(runs: pd.DataFrame, column: str) -> str:
    if column not in runs.columns:
        return ""
    values = sorted(runs[column].dropna().unique(), key=str)
    return ", ".join(_text(value.item() if hasattr(value, "item") else value) for value in values)
