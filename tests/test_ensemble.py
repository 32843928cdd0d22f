"""Ensemble selection on synthetic run folders: chosen on validation, scored by hand sums."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnistsweep import metrics
from mnistsweep.analysis import ensemble, runs
from mnistsweep.sweep import records
from mnistsweep.sweep.layout import SweepLayout

# Four training labels (the last two are the validation split) and three test labels.
LABELS = ensemble.Labels(train=np.array([5, 5, 0, 1]), test=np.array([0, 1, 2]))


def probabilities(rows: list[list[float]]) -> np.ndarray:
    """Rows over 3 named classes, padded to MNIST's 10 with zeros."""
    padded = np.zeros((len(rows), 10), dtype=np.float32)
    padded[:, :3] = rows
    return padded


def write_result(
    sweep_dir: Path,
    name: str,
    *,
    val_accuracy: float,
    test_accuracy: float,
    arch: str = "mlp",
    status: str = "completed",
    val_loss: float = 0.1,
) -> Path:
    run = SweepLayout(sweep_dir).run_named(name)
    result = records.RunResult(
        status=status,  # type: ignore[arg-type]
        cell_id=name,
        cell_name=name,
        config={"arch": arch, "seed": 0},
        metrics=records.RunMetrics(
            test_accuracy=test_accuracy,
            best_val_accuracy=val_accuracy,
            best_val_loss=val_loss,
            test_loss=0.1,
            best_epoch=0,
            epochs_run=1,
        ),
    )
    records.write(run.result, result)
    return run.root


def write_run(
    sweep_dir: Path,
    name: str,
    val: np.ndarray | list[list[float]] | None,
    test: np.ndarray | list[list[float]] | None,
    **result: float | str,
) -> Path:
    root = write_result(sweep_dir, name, **result)  # type: ignore[arg-type]
    if val is not None and test is not None:
        val_array = val if isinstance(val, np.ndarray) else probabilities(val)
        test_array = test if isinstance(test, np.ndarray) else probabilities(test)
        np.save(root / "probs_val.npy", val_array)
        np.save(root / "probs_test.npy", test_array)
    return root


RIGHT_VAL = [[1, 0, 0], [0, 1, 0]]  # validation labels 0, 1: both right
WRONG_VAL = [[0, 0, 1], [0, 0, 1]]
RIGHT_TEST = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]  # test labels 0, 1, 2: all right
WRONG_TEST = [[0, 1, 0], [0, 0, 1], [1, 0, 0]]


def runs_of(sweep_dir: Path) -> pd.DataFrame:
    """The ensemble's input: a row per run folder written here (these folders have no spec, so
    not `runs.load_runs`, which counts only a recorded sweep's own cells)."""
    rows = []
    for run in SweepLayout(sweep_dir).run_folders():
        result = records.read(records.RunResult, run.result)
        if result is not None:
            rows.append(runs.flatten(result, run))
    return pd.DataFrame(rows)


def find(sweep_dir: Path, top_k: int = 4, labels: ensemble.Labels = LABELS):
    found = ensemble.find_ensembles(runs_of(sweep_dir), labels, top_k)
    assert found is not None
    return found


def test_members_are_chosen_on_validation_never_on_test(tmp_path):
    write_run(tmp_path, "val-best", RIGHT_VAL, WRONG_TEST, val_accuracy=0.99, test_accuracy=0.0)
    write_run(tmp_path, "test-best", WRONG_VAL, RIGHT_TEST, val_accuracy=0.5, test_accuracy=1.0)
    found = find(tmp_path, top_k=1)
    assert [member.cell_name for member in found.best_single.members] == ["val-best"]
    assert [member.cell_name for member in found.headline.members] == ["val-best"]
    assert found.headline.test_accuracy == 0.0  # the honest score of the honest choice
    assert found.headline.val_accuracy == 1.0
    assert not found.helps and found.headline.method == "single"


def test_top_k_scores_match_a_hand_computation(tmp_path):
    first_val = [[0.6, 0.4, 0.0], [0.2, 0.7, 0.1]]
    first_test = [[0.5, 0.3, 0.2], [0.6, 0.4, 0.0], [0.0, 0.0, 1.0]]
    second_val = [[0.2, 0.8, 0.0], [0.0, 0.9, 0.1]]
    second_test = [[0.2, 0.5, 0.3], [0.0, 1.0, 0.0], [0.1, 0.1, 0.8]]
    write_run(tmp_path, "a", first_val, first_test, val_accuracy=1.0, test_accuracy=2 / 3)
    write_run(tmp_path, "b", second_val, second_test, val_accuracy=0.5, test_accuracy=2 / 3)
    write_run(tmp_path, "c", WRONG_VAL, WRONG_TEST, val_accuracy=0.1, test_accuracy=0.0)
    top = find(tmp_path, top_k=2).top_k
    assert top is not None and [member.cell_name for member in top.members] == ["a", "b"]
    # Means of a and b on the test set: [.35 .4 .25] → 1 (label 0: wrong),
    # [.3 .7 0] → 1 (label 1: right), [.05 .05 .9] → 2 (label 2: right).
    assert top.test_accuracy == pytest.approx(2 / 3)
    expected_loss = -(math.log(0.35) + math.log(0.7) + math.log(0.9)) / 3
    assert top.test_loss == pytest.approx(expected_loss, rel=1e-6)
    # Validation means [.4 .6 0] → 1 (label 0: wrong), [.1 .8 .1] → 1 (label 1: right).
    assert top.val_accuracy == pytest.approx(0.5)
    np.testing.assert_allclose(top.test_probabilities[0, :3], [0.35, 0.4, 0.25], rtol=1e-6)


def test_the_top_k_curve_has_one_point_per_k(tmp_path):
    write_run(tmp_path, "a", RIGHT_VAL, RIGHT_TEST, val_accuracy=1.0, test_accuracy=1.0)
    write_run(tmp_path, "b", WRONG_VAL, WRONG_TEST, val_accuracy=0.0, test_accuracy=0.0)
    curve = find(tmp_path, top_k=5).top_k_curve
    assert list(curve["k"]) == [1, 2]
    assert curve["test_accuracy"].iloc[0] == 1.0


def test_greedy_adds_a_run_that_lowers_validation_loss_and_reports_weights(tmp_path):
    # Each run is sure of one validation image and unsure of the other: together they are right
    # on both with a lower loss than either alone.
    write_run(
        tmp_path,
        "a",
        [[0.9, 0.1, 0.0], [0.5, 0.4, 0.1]],
        RIGHT_TEST,
        val_accuracy=0.5,
        test_accuracy=1.0,
        val_loss=0.5,
    )
    write_run(
        tmp_path,
        "b",
        [[0.4, 0.5, 0.1], [0.1, 0.9, 0.0]],
        RIGHT_TEST,
        val_accuracy=0.5,
        test_accuracy=1.0,
        val_loss=0.6,
    )
    found = find(tmp_path)
    assert found.best_single.members[0].cell_name == "a"  # ties on accuracy: the lower loss
    assert found.greedy is not None
    assert found.greedy.val_accuracy == 1.0 > found.best_single.val_accuracy
    assert sorted(member.cell_name for member in found.greedy.members) == ["a", "b"]
    assert all(member.weight >= 1 for member in found.greedy.members)
    curve = found.greedy_curve
    assert list(curve.columns) == [
        "step",
        "size",
        "val_accuracy",
        "val_loss",
        "test_accuracy",
        "test_loss",
    ]
    assert list(curve["step"]) == list(range(1, len(curve) + 1))


def test_candidate_losses_equal_metrics_cross_entropy():
    generator = np.random.default_rng(0)
    picked = generator.uniform(0, 1, size=(5, 7))
    full = np.zeros((7, 10))
    full[:, 0] = picked.mean(axis=0)
    expected = metrics.cross_entropy(full, np.zeros(7, dtype=int))
    assert ensemble._loss(picked.mean(axis=0)[None, :]).item() == pytest.approx(expected, rel=1e-6)


def test_a_probability_of_zero_on_the_truth_is_clipped_at_1e7(tmp_path):
    write_run(tmp_path, "a", RIGHT_VAL, WRONG_TEST, val_accuracy=1.0, test_accuracy=0.0)
    assert find(tmp_path).headline.test_loss == pytest.approx(-math.log(1e-7))


def test_runs_without_probabilities_are_skipped_and_named(tmp_path):
    write_run(tmp_path, "no-files", None, None, val_accuracy=0.99, test_accuracy=0.9)
    write_run(tmp_path, "second", RIGHT_VAL, RIGHT_TEST, val_accuracy=0.9, test_accuracy=1.0)
    write_run(tmp_path, "third", WRONG_VAL, WRONG_TEST, val_accuracy=0.8, test_accuracy=0.0)
    write_run(tmp_path, "failed", None, None, val_accuracy=1.0, test_accuracy=1.0, status="failed")
    bad = write_run(tmp_path, "bad-shape", None, None, val_accuracy=0.95, test_accuracy=0.9)
    np.save(bad / "probs_val.npy", np.zeros((2, 3)))
    np.save(bad / "probs_test.npy", np.zeros((3, 10)))
    found = find(tmp_path, top_k=5)
    assert found.top_k is not None
    assert [member.cell_name for member in found.top_k.members] == ["second", "third"]
    assert found.best_single.members[0].cell_name == "second"
    assert any("no-files" in problem for problem in found.problems)
    assert any("bad-shape" in problem and "shape" in problem for problem in found.problems)


def test_no_usable_run_gives_none(tmp_path):
    write_run(tmp_path, "no-files", None, None, val_accuracy=0.99, test_accuracy=0.9)
    assert ensemble.find_ensembles(runs_of(tmp_path), LABELS, 3) is None
    assert ensemble.find_ensembles(pd.DataFrame(), LABELS, 3) is None


def test_per_architecture_headlines(tmp_path):
    write_run(tmp_path, "mlp-a", RIGHT_VAL, RIGHT_TEST, val_accuracy=1.0, test_accuracy=1.0)
    write_run(tmp_path, "mlp-b", WRONG_VAL, WRONG_TEST, val_accuracy=0.0, test_accuracy=0.0)
    write_run(
        tmp_path, "lin", RIGHT_VAL, WRONG_TEST, val_accuracy=1.0, test_accuracy=0, arch="linear"
    )
    per_arch = find(tmp_path).per_architecture
    assert per_arch["mlp"]["members"] == ["mlp-a"] and per_arch["mlp"]["test_accuracy"] == 1.0
    assert per_arch["linear"]["members"] == ["lin"] and per_arch["linear"]["test_accuracy"] == 0.0


def test_the_library_is_capped_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(ensemble, "LIBRARY_SIZE", 2)
    monkeypatch.setattr(ensemble, "PER_ARCHITECTURE", 1)
    for index in range(4):
        write_run(
            tmp_path,
            f"mlp-{index}",
            RIGHT_VAL,
            RIGHT_TEST,
            val_accuracy=0.9 - index / 10,
            test_accuracy=1.0,
        )
    write_run(
        tmp_path, "lin", RIGHT_VAL, RIGHT_TEST, val_accuracy=0.1, test_accuracy=1.0, arch="linear"
    )
    found = find(tmp_path)
    assert found.library_size == 3  # the best 2, and linear's best
    assert any("best 3 of 5" in problem for problem in found.problems)
    assert "linear" in found.per_architecture


def test_summary_is_written_as_ensemble_json(tmp_path):
    write_run(tmp_path, "a", RIGHT_VAL, RIGHT_TEST, val_accuracy=1.0, test_accuracy=1.0)
    found = find(tmp_path, top_k=4)
    path = ensemble.write(tmp_path, found)
    assert path == SweepLayout(tmp_path).ensemble
    content = json.loads(path.read_text())
    assert content["method"] == "single" and content["helps"] is False
    assert content["test_accuracy"] == 1.0 and content["members"][0]["cell_name"] == "a"
    assert content["requested_top_k"] == 4 and content["top_k_curve"][0]["k"] == 1
    assert content["greedy_curve"][0]["step"] == 1
    assert content["best_single"]["val_accuracy"] == 1.0


def test_a_top_k_below_one_is_refused(tmp_path):
    with pytest.raises(ValueError, match="top_k"):
        ensemble.find_ensembles(runs_of(tmp_path), LABELS, 0)


# --- properties over synthetic libraries -----------------------------------------------------

VAL_SIZE, TEST_SIZE = 40, 30


def random_library(sweep_dir: Path, seed: int, count: int, labels: ensemble.Labels) -> None:
    """`count` runs of varied skill; the recorded validation accuracy is the true one."""
    generator = np.random.default_rng(seed)
    val_labels = labels.validation(VAL_SIZE)
    for index in range(count):
        skill = generator.uniform(0, 4)
        val = noisy(val_labels, skill, generator)
        test = noisy(labels.test, skill, generator)
        write_run(
            sweep_dir,
            f"run-{index}",
            val,
            test,
            val_accuracy=metrics.accuracy(val, val_labels),
            test_accuracy=metrics.accuracy(test, labels.test),
            val_loss=metrics.cross_entropy(val, val_labels),
            arch=["mlp", "linear"][index % 2],
        )


def noisy(labels: np.ndarray, skill: float, generator: np.random.Generator) -> np.ndarray:
    logits = generator.normal(size=(len(labels), 10))
    logits[np.arange(len(labels)), labels] += skill
    exponentials = np.exp(logits)
    return (exponentials / exponentials.sum(axis=1, keepdims=True)).astype(np.float32)


def random_labels(seed: int) -> ensemble.Labels:
    generator = np.random.default_rng(seed + 1000)
    return ensemble.Labels(
        train=generator.integers(0, 10, 60), test=generator.integers(0, 10, TEST_SIZE)
    )


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 10_000), count=st.integers(1, 8))
def test_the_headline_is_the_rule_that_wins_on_validation_images_it_did_not_choose_on(
    tmp_path_factory, seed, count
):
    sweep_dir = tmp_path_factory.mktemp("library")
    labels = random_labels(seed)
    random_library(sweep_dir, seed, count, labels)
    found = find(sweep_dir, labels=labels, top_k=3)
    rules = {"single": found.best_single, "top-k": found.top_k, "greedy": found.greedy}
    best = max(found.held_out.values())
    winner = next(rule for rule in ensemble.RULES if found.held_out[rule] == best)
    assert found.headline is rules[winner]
    assert found.helps == (found.headline.size > 1)
    # the single-run rule by hand: the best run on one half, scored on the other, both ways
    val_labels = labels.validation(VAL_SIZE)
    library = [np.load(Path(row) / "probs_val.npy") for row in runs_of(sweep_dir)["run_dir"]]
    right = 0
    for seen, unseen in (
        (slice(0, None, 2), slice(1, None, 2)),
        (slice(1, None, 2), slice(0, None, 2)),
    ):

        def rank(p: np.ndarray, seen: slice = seen) -> tuple[float, float]:
            truth = val_labels[seen]
            hits = float((p[seen].argmax(axis=1) == truth).mean())
            loss = -np.log(np.maximum(p[seen][np.arange(len(truth)), truth], 1e-7)).mean()
            return (-hits, float(loss))

        chosen = min(library, key=rank)
        right += int((chosen[unseen].argmax(axis=1) == val_labels[unseen]).sum())
    assert found.held_out["single"] == pytest.approx(right / VAL_SIZE)


def test_runs_with_non_finite_probabilities_are_left_out_with_a_warning(tmp_path):
    write_run(tmp_path, "fine", RIGHT_VAL, RIGHT_TEST, val_accuracy=0.9, test_accuracy=1.0)
    broken = probabilities(RIGHT_VAL)
    broken[0, 0] = np.nan
    write_run(tmp_path, "nan", broken, RIGHT_TEST, val_accuracy=0.99, test_accuracy=1.0)
    found = find(tmp_path)
    assert [member.cell_name for member in found.headline.members] == ["fine"]
    assert found.library_size == 1
    assert any("nan" in problem and "non-finite" in problem for problem in found.problems)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 10_000), count=st.integers(2, 8), shuffle_seed=st.integers(0, 99))
def test_shuffling_test_labels_never_changes_the_members(
    tmp_path_factory, seed, count, shuffle_seed
):
    sweep_dir = tmp_path_factory.mktemp("library")
    labels = random_labels(seed)
    random_library(sweep_dir, seed, count, labels)
    shuffled_test = np.random.default_rng(shuffle_seed).permutation(labels.test)
    shuffled = ensemble.Labels(train=labels.train, test=shuffled_test)
    original, other = find(sweep_dir, labels=labels), find(sweep_dir, labels=shuffled)

    def chosen(found: ensemble.EnsembleFindings) -> list[tuple[str, int]]:
        return [(member.cell_name, member.weight) for member in found.headline.members]

    assert chosen(original) == chosen(other)
    assert original.greedy is not None and other.greedy is not None
    assert original.greedy.members == other.greedy.members
    assert original.headline.val_accuracy == other.headline.val_accuracy
