"""The comparison with the tutorials: only runs trained with the tutorial's settings count."""

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mnistsweep.analysis import reference
from mnistsweep.analysis.runs import display_value
from mnistsweep.sweep.spec import load_spec

FULL_SPEC = Path(__file__).resolve().parent.parent / "sweeps" / "full.yaml"
TRAIN_DEFAULTS: dict[str, Any] = {
    "dropout": None,
    "seed": 0,
    "epochs": 20,
    "batch_size": 128,
    "learning_rate": 1e-3,
    "lr_schedule": "constant",
    "validation_split": 0.1,
    "augment": "none",
    "l2": 0.0,
    "train_subset": None,
}


def run_row(test_accuracy: float = 0.93, **config: Any) -> dict[str, Any]:
    values = {**TRAIN_DEFAULTS, **config}
    return {
        "status": "completed",
        "test_accuracy": test_accuracy,
        **{key: display_value(value) for key, value in values.items()},
    }


def compare(*rows: dict[str, Any]) -> tuple[pd.DataFrame, list[reference.ReferenceRow]]:
    return reference.comparison(pd.DataFrame(list(rows)))


def row_named(table: pd.DataFrame, name: str) -> pd.Series:
    return table.set_index("reference").loc[name]


def test_a_run_with_the_tutorials_settings_is_set_beside_its_figure():
    table, _ = compare(
        run_row(0.92, arch="linear", normalization="standardize", seed=0),
        run_row(0.93, arch="linear", normalization="standardize", seed=1),
    )
    linear = row_named(table, "linear, standardized")
    assert linear["status"] == "matched" and linear["runs"] == 2
    assert linear["sweep_test_acc_mean"] == pytest.approx(0.925)
    assert linear["difference"] == pytest.approx(0.925 - 0.924)
    assert linear["tutorial_epochs"] == "20" and linear["sweep_epochs"] == "20"
    assert linear["tutorial_training_images"] == "54,000"
    assert linear["sweep_training_images"] == "54,000"


def test_a_smoke_run_is_never_a_difference_in_points():
    table, _ = compare(
        run_row(0.07, arch="linear", normalization="standardize", epochs=1, train_subset=2000)
    )
    linear = row_named(table, "linear, standardized")
    assert linear["status"] == "settings differ" and linear["runs"] == 0
    assert pd.isna(linear["difference"]) and pd.isna(linear["sweep_test_acc_mean"])
    assert "training images: tutorial 54,000, sweep 2,000" in linear["differs"]
    assert "epochs: tutorial 20, sweep 1" in linear["differs"]
    assert linear["configuration_runs"] == 1


def test_the_second_tutorials_batch_of_200_is_a_setting():
    table, _ = compare(
        run_row(0.98, arch="baseline_mlp", normalization="minmax", epochs=10, batch_size=128),
        run_row(0.981, arch="simple_cnn", normalization="minmax", epochs=10, batch_size=200),
    )
    baseline = row_named(table, "baseline_mlp 784-784")
    assert baseline["status"] == "settings differ"
    assert baseline["differs"] == "batch size: tutorial 200, sweep 128"
    simple = row_named(table, "simple_cnn")
    assert simple["status"] == "matched"
    assert simple["tutorial_training_images"] == "60,000"  # it validates on the test set
    assert simple["sweep_training_images"] == "54,000"


def test_matched_runs_are_kept_apart_from_runs_trained_otherwise():
    table, _ = compare(
        run_row(0.995, arch="bn_cnn", normalization="minmax", augment="light", epochs=5),
        run_row(
            0.9964, arch="bn_cnn", normalization="minmax", augment="light", lr_schedule="cosine"
        ),
    )
    bn = row_named(table, "bn_cnn + augmentation")
    assert bn["runs"] == 1 and bn["configuration_runs"] == 2
    assert bn["sweep_test_acc_mean"] == pytest.approx(0.995)
    assert bn["sweep_lr_schedule"] == "constant" and bn["sweep_epochs"] == "5"


def test_configurations_the_sweep_lacks_are_uncovered():
    table, uncovered = compare(run_row(arch="mlp", normalization="standardize"))
    assert list(table["reference"]) == ["mlp 256-256"]
    assert len(uncovered) == len(reference.REFERENCE_ROWS) - 1
    empty, all_rows = reference.comparison(pd.DataFrame())
    assert empty.empty and len(all_rows) == len(reference.REFERENCE_ROWS)


def test_the_full_sweep_matches_every_reference_row_with_five_seeds():
    cells = load_spec(FULL_SPEC).cells()
    table, uncovered = compare(*(run_row(0.99, **cell.config) for cell in cells))
    assert uncovered == []
    assert set(table["status"]) == {"matched"}
    assert table["runs"].min() >= 5
    assert len(table) == len(reference.REFERENCE_ROWS) == 16


def test_results_without_the_settings_columns_still_compare():
    old = pd.DataFrame(
        [
            {
                "status": "completed",
                "test_accuracy": 0.97,
                "arch": "mlp",
                "normalization": "standardize",
                "dropout": "default",
                "augment": "none",
                "l2": 0.0,
                "epochs": 20,
            }
        ]
    )
    table, _ = reference.comparison(old)
    mlp = row_named(table, "mlp 256-256")
    assert mlp["status"] == "settings differ"
    assert "batch size: tutorial 128" in mlp["differs"]
    assert mlp["sweep_training_images"] == "54,000"


def test_a_smaller_training_set_than_the_tutorials_is_flagged_and_a_subset_never_matches():
    table, _ = compare(
        run_row(0.98, arch="baseline_mlp", normalization="minmax", epochs=10, batch_size=200),
        run_row(
            0.97,
            arch="simple_cnn",
            normalization="minmax",
            epochs=10,
            batch_size=200,
            validation_split=0.2,
        ),
    )
    baseline = row_named(table, "baseline_mlp 784-784")
    assert baseline["status"] == "matched"
    assert "trained on 54,000 images, the tutorial on 60,000" in baseline["flags"]
    # 48,000 images (20% held out) is neither the tutorial's count nor our 10% split
    simple = row_named(table, "simple_cnn")
    assert simple["status"] == "settings differ" and "training images" in simple["differs"]


def test_an_unstated_setting_is_shown_as_unstated():
    table, _ = compare(run_row(0.97, arch="mlp", normalization="standardize", epochs=3))
    mlp = row_named(table, "mlp 256-256")
    assert mlp["tutorial_epochs"] == reference.NOT_STATED
    assert "epochs: not stated by the tutorial" in mlp["flags"]
    linear, _ = compare(run_row(0.92, arch="linear", normalization="standardize", epochs=3))
    assert row_named(linear, "linear, standardized")["status"] == "settings differ"


@pytest.mark.parametrize(
    ("weights", "subsets", "comparable"),
    [
        ([1, 1, 1, 1], [None] * 4, True),
        ([1, 1, 1, 1], ["default"] * 4, True),
        ([1, 1, 1, 1], [None, None, None, 2000], False),
        ([1, 1, 1], [None] * 3, False),
        ([2, 1, 1], [None] * 3, False),
        ([1] * 5, [None] * 5, False),
    ],
)
def test_only_four_whole_split_models_averaged_compare_with_the_ensemble_line(
    weights, subsets, comparable
):
    assert (reference.ensemble_comparison(weights, subsets) is None) == comparable
