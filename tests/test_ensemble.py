"""Top-k ensemble on synthetic run folders: chosen on validation, scored by hand-checkable sums."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mnistsweep.analysis import ensemble, runs
from mnistsweep.sweep.rundir import write_json_atomic

# Four training labels (the last two are the validation split) and three test labels.
LABELS = ensemble.Labels(train=np.array([5, 5, 0, 1]), test=np.array([0, 1, 2]))


def probabilities(rows: list[list[float]]) -> np.ndarray:
    """Rows over 3 named classes, padded to MNIST's 10 with zeros."""
    padded = np.zeros((len(rows), 10), dtype=np.float32)
    padded[:, :3] = rows
    return padded


def write_run(
    sweep_dir: Path,
    name: str,
    val: list[list[float]] | None,
    test: list[list[float]] | None,
    *,
    val_accuracy: float,
    test_accuracy: float,
    arch: str = "mlp",
    status: str = "completed",
) -> Path:
    root = sweep_dir / "runs" / name
    write_json_atomic(
        root / "result.json",
        {
            "status": status,
            "cell_id": name,
            "cell_name": name,
            "config": {"arch": arch, "seed": 0},
            "metrics": {
                "test_accuracy": test_accuracy,
                "best_val_accuracy": val_accuracy,
                "best_val_loss": 0.1,
                "test_loss": 0.1,
                "best_epoch": 0,
                "epochs_run": 1,
            },
            "timing": {"total_seconds": 1.0},
        },
    )
    if val is not None and test is not None:
        np.save(root / "probs_val.npy", probabilities(val))
        np.save(root / "probs_test.npy", probabilities(test))
    return root


RIGHT_VAL = [[1, 0, 0], [0, 1, 0]]  # validation labels 0, 1: both right
WRONG_VAL = [[0, 0, 1], [0, 0, 1]]
RIGHT_TEST = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]  # test labels 0, 1, 2: all right
WRONG_TEST = [[0, 1, 0], [0, 0, 1], [1, 0, 0]]


def runs_of(sweep_dir: Path) -> pd.DataFrame:
    return runs.load_runs(sweep_dir).frame


def test_members_are_chosen_on_validation_never_on_test(tmp_path):
    write_run(tmp_path, "val-best", RIGHT_VAL, WRONG_TEST, val_accuracy=0.99, test_accuracy=0.0)
    write_run(tmp_path, "test-best", WRONG_VAL, RIGHT_TEST, val_accuracy=0.5, test_accuracy=1.0)
    chosen = ensemble.build(runs_of(tmp_path), 1, LABELS)
    assert [member.cell_name for member in chosen.members] == ["val-best"]
    assert chosen.final["test_accuracy"] == 0.0  # the honest score of the honest choice
    assert chosen.final["val_accuracy"] == 1.0


def test_accuracy_and_loss_match_a_hand_computation(tmp_path):
    first_val = [[0.6, 0.4, 0.0], [0.2, 0.7, 0.1]]
    first_test = [[0.5, 0.3, 0.2], [0.6, 0.4, 0.0], [0.0, 0.0, 1.0]]
    second_val = [[0.2, 0.8, 0.0], [0.0, 0.9, 0.1]]
    second_test = [[0.2, 0.5, 0.3], [0.0, 1.0, 0.0], [0.1, 0.1, 0.8]]
    write_run(tmp_path, "a", first_val, first_test, val_accuracy=1.0, test_accuracy=2 / 3)
    write_run(tmp_path, "b", second_val, second_test, val_accuracy=0.5, test_accuracy=2 / 3)
    write_run(tmp_path, "c", WRONG_VAL, WRONG_TEST, val_accuracy=0.1, test_accuracy=0.0)
    chosen = ensemble.build(runs_of(tmp_path), 2, LABELS)

    # Means of a and b on the test set: [.35 .4 .25] → 1 (label 0: wrong),
    # [.3 .7 0] → 1 (label 1: right), [.05 .05 .9] → 2 (label 2: right).
    assert chosen.final["test_accuracy"] == pytest.approx(2 / 3)
    expected_loss = -(math.log(0.35) + math.log(0.7) + math.log(0.9)) / 3
    assert chosen.final["test_loss"] == pytest.approx(expected_loss, rel=1e-6)
    # Validation means [.4 .6 0] → 1 (label 0: wrong), [.1 .8 .1] → 1 (label 1: right).
    assert chosen.final["val_accuracy"] == pytest.approx(0.5)
    np.testing.assert_allclose(chosen.test_probabilities[0, :3], [0.35, 0.4, 0.25], rtol=1e-6)
    # k = 1 is run a alone: test predictions 0 (right), 0 (wrong), 2 (right).
    assert list(chosen.curve["k"]) == [1, 2]
    assert chosen.curve["test_accuracy"].iloc[0] == pytest.approx(2 / 3)


def test_a_probability_of_zero_on_the_truth_is_clipped_at_1e7(tmp_path):
    write_run(tmp_path, "a", RIGHT_VAL, WRONG_TEST, val_accuracy=1.0, test_accuracy=0.0)
    chosen = ensemble.build(runs_of(tmp_path), 1, LABELS)
    assert chosen.final["test_loss"] == pytest.approx(-math.log(1e-7))


def test_runs_without_probabilities_are_skipped_and_the_next_one_takes_their_place(tmp_path):
    write_run(tmp_path, "no-files", None, None, val_accuracy=0.99, test_accuracy=0.9)
    write_run(tmp_path, "second", RIGHT_VAL, RIGHT_TEST, val_accuracy=0.9, test_accuracy=1.0)
    write_run(tmp_path, "third", WRONG_VAL, WRONG_TEST, val_accuracy=0.8, test_accuracy=0.0)
    write_run(tmp_path, "failed", None, None, val_accuracy=1.0, test_accuracy=1.0, status="failed")
    chosen = ensemble.build(runs_of(tmp_path), 5, LABELS)
    assert [member.cell_name for member in chosen.members] == ["second", "third"]
    assert any("no-files" in problem for problem in chosen.problems)


def test_no_usable_run_gives_none(tmp_path):
    write_run(tmp_path, "no-files", None, None, val_accuracy=0.99, test_accuracy=0.9)
    assert ensemble.build(runs_of(tmp_path), 3, LABELS) is None


def test_best_per_architecture_picks_k_on_validation(tmp_path):
    write_run(tmp_path, "mlp-a", RIGHT_VAL, RIGHT_TEST, val_accuracy=1.0, test_accuracy=1.0)
    write_run(tmp_path, "mlp-b", WRONG_VAL, WRONG_TEST, val_accuracy=0.0, test_accuracy=0.0)
    write_run(
        tmp_path, "lin", RIGHT_VAL, WRONG_TEST, val_accuracy=1.0, test_accuracy=0, arch="linear"
    )
    best = ensemble.best_per_architecture(runs_of(tmp_path), 2, LABELS)
    assert best["mlp"]["k"] == 1 and best["mlp"]["members"] == ["mlp-a"]
    assert best["mlp"]["test_accuracy"] == 1.0
    assert best["linear"]["k"] == 1 and best["linear"]["test_accuracy"] == 0.0


def test_summary_is_written_as_ensemble_json(tmp_path):
    write_run(tmp_path, "a", RIGHT_VAL, RIGHT_TEST, val_accuracy=1.0, test_accuracy=1.0)
    chosen = ensemble.build(runs_of(tmp_path), 4, LABELS)
    path = ensemble.write(tmp_path, ensemble.summary(chosen, 4, {}))
    content = json.loads(path.read_text())
    assert content["requested_top_k"] == 4 and content["k"] == 1
    assert content["test_accuracy"] == 1.0 and content["members"][0]["cell_name"] == "a"
    assert content["curve"][0]["k"] == 1


def test_a_top_k_below_one_is_refused(tmp_path):
    with pytest.raises(ValueError, match="top_k"):
        ensemble.build(runs_of(tmp_path), 0, LABELS)
