"""The trainer on real MNIST: artifacts, accuracy well above chance, determinism, resume, damaged
resume points, divergence; and the metrics it scores with."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mnistsweep import metrics
from mnistsweep.errors import MnistsweepError
from mnistsweep.sweep import records
from mnistsweep.sweep.layout import RunLayout
from mnistsweep.sweep.spec import parse_spec
from mnistsweep.train import checkpoint, provenance, runtime, trainer


def make_cell(tmp_path, **train_settings):
    document = {"name": "t", "train": {"train_subset": 3000, "epochs": 1, **train_settings}}
    return parse_spec(document, tmp_path / "t.yaml").cells()[0]


# --- metrics -------------------------------------------------------------------------------------

probability_rows = hnp.arrays(
    np.float32,
    st.tuples(st.integers(1, 40), st.just(10)),
    elements=st.floats(0.0, 1.0, width=32),
)


@given(probability_rows, st.data())
def test_accuracy_counts_rows_whose_top_class_is_the_label(probabilities, data):
    labels = data.draw(hnp.arrays(np.int64, len(probabilities), elements=st.integers(0, 9)))
    expected = sum(
        int(np.argmax(row) == label) for row, label in zip(probabilities, labels, strict=True)
    )
    assert metrics.accuracy(probabilities, labels) == pytest.approx(expected / len(labels))


@given(probability_rows, st.data())
def test_cross_entropy_is_the_mean_clipped_negative_log_of_the_label_probability(
    probabilities, data
):
    labels = data.draw(hnp.arrays(np.int64, len(probabilities), elements=st.integers(0, 9)))
    loss = metrics.cross_entropy(probabilities, labels)
    picked = [
        max(float(row[label]), 1e-7) for row, label in zip(probabilities, labels, strict=True)
    ]
    assert loss == pytest.approx(-np.mean(np.log(picked)), rel=1e-6)
    assert 0.0 <= loss <= -math.log(1e-7) + 1e-6  # a confident mistake stays finite


def test_metrics_refuse_mismatched_shapes():
    with pytest.raises(ValueError, match="labels"):
        metrics.accuracy(np.ones((3, 10)), np.zeros(2))


# --- divergence ----------------------------------------------------------------------------------


@given(st.floats(0.0, trainer.DIVERGED_LOSS), st.floats(0.0, 1.0), st.floats(0.0, 20.0))
def test_a_finite_loss_within_the_bound_is_never_diverged(loss, accuracy, val_loss):
    assert not trainer.is_diverged(loss, accuracy, val_loss)


@given(st.floats(trainer.DIVERGED_LOSS, 1e30, exclude_min=True), st.floats(0.2, 1.0))
def test_a_large_loss_of_a_net_that_learns_is_not_diverged(loss, accuracy):
    assert not trainer.is_diverged(loss, accuracy, 2.0)


@settings(max_examples=50)
@given(
    st.one_of(
        st.tuples(st.sampled_from([math.nan, math.inf]), st.floats(0.0, 1.0), st.just(1.0)),
        st.tuples(st.just(1.0), st.floats(0.0, 1.0), st.sampled_from([math.nan, math.inf])),
        st.tuples(
            st.floats(trainer.DIVERGED_LOSS, 1e30, exclude_min=True),
            st.floats(0.0, 0.2, exclude_max=True),
            st.floats(0.0, 20.0),
        ),
    )
)
def test_non_finite_or_absurd_loss_at_chance_is_diverged(values):
    assert trainer.is_diverged(*values)


# --- the split -----------------------------------------------------------------------------------


def test_validation_split_is_the_same_whatever_the_seed(mnist_dir):
    mnist = trainer.data.load(mnist_dir)
    first = trainer.split_data(mnist, 0.1, None)
    subset = trainer.split_data(mnist, 0.1, 1000)
    np.testing.assert_array_equal(first.y_val, mnist.y_train[-6000:])
    np.testing.assert_array_equal(subset.y_val, first.y_val)
    assert len(subset.x_train) == 1000 and len(first.x_train) == 54_000


@pytest.mark.parametrize("share", [0.000001, 0.000008])
def test_a_split_that_leaves_no_validation_image_is_refused_before_training(
    tmp_path, mnist_dir, share
):
    """Refused with the spec; and a cell that bypassed the spec (built by hand) is still refused
    by the trainer before it writes anything."""
    with pytest.raises(MnistsweepError, match=r"train\.validation_split: .* no validation image"):
        make_cell(tmp_path, validation_split=share)
    valid = make_cell(tmp_path)
    cell = dataclasses.replace(valid, config={**valid.config, "validation_split": share})
    with pytest.raises(MnistsweepError, match=r"train\.validation_split: .* 0 validation"):
        trainer.run_cell(cell, tmp_path / "run", mnist_dir)
    assert not (tmp_path / "run" / "result.json").exists()


def test_epoch_order_depends_on_seed_and_epoch_only():
    order = trainer.epoch_order(3, 1, 1000)
    np.testing.assert_array_equal(order, trainer.epoch_order(3, 1, 1000))
    assert sorted(order) == list(range(1000))
    assert not np.array_equal(order, trainer.epoch_order(3, 2, 1000))
    assert not np.array_equal(order, trainer.epoch_order(4, 1, 1000))


@settings(max_examples=25, deadline=None)
@given(images=st.integers(1, 300), batch_size=st.integers(1, 128))
def test_fit_inputs_are_the_images_in_order_in_batches_with_a_partial_last(images, batch_size):
    """What `fit` trains on each epoch: consecutive batches of the given order (the last one
    partial), as Keras batches the arrays itself; on TensorFlow with autotuning off."""
    import keras

    x = np.arange(images * 4, dtype="float32").reshape(images, 2, 2)
    y = np.arange(images, dtype="int64")
    inputs = trainer.fit_inputs(x, y, batch_size)
    if keras.backend.backend() != "tensorflow":
        assert inputs["batch_size"] == batch_size and inputs["x"] is x and inputs["y"] is y
        return
    assert set(inputs) == {"x"} and inputs["x"].options().autotune.enabled is False
    batches = [(bx.numpy(), by.numpy()) for bx, by in inputs["x"]]
    for (bx, by), start in zip(batches, range(0, images, batch_size), strict=True):
        np.testing.assert_array_equal(bx, x[start : start + batch_size])
        np.testing.assert_array_equal(by, y[start : start + batch_size])


# --- training ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_tiny_training_writes_every_artifact_and_learns(tmp_path, mnist_dir):
    cell = make_cell(tmp_path, arch="mlp", epochs=2)
    result = trainer.run_cell(cell, tmp_path / "run", mnist_dir)
    run = RunLayout(tmp_path / "run")

    assert result == json.loads(run.result.read_text())
    assert result["status"] == "completed"
    found = result["metrics"]
    assert found["test_accuracy"] > 0.85  # chance is 0.10
    assert found["best_val_accuracy"] > 0.85
    assert found["best_epoch"] in (0, 1)
    assert set(result["config"]) >= {"arch", "normalization", "dropout", "seed", "epochs", "l2"}
    timing = result["timing"]
    assert len(timing["epoch_seconds"]) == 2
    assert timing["first_epoch_seconds"] == timing["epoch_seconds"][0]
    assert timing["steady_epoch_seconds"] == timing["epoch_seconds"][1]
    assert timing["peak_rss_mb"] > 100  # TensorFlow alone takes more
    assert {"data", "model", "train", "validation", "checkpoints", "evaluate"} <= set(
        timing["stages"]
    )
    assert sum(timing["stages"].values()) >= timing["total_seconds"]
    assert result["env"]["keras_backend"] in ("tensorflow", "jax")
    assert result["params"]["trainable"] == 269_322
    assert result["warnings"] == []

    test_probs, val_probs = np.load(run.test_probs), np.load(run.val_probs)
    assert test_probs.shape == (10_000, 10) and val_probs.shape == (6_000, 10)
    np.testing.assert_allclose(test_probs.sum(axis=1), 1.0, atol=1e-4)
    labels = np.load(mnist_dir / "mnist.npz")["y_test"]
    assert math.isclose(metrics.accuracy(test_probs, labels), found["test_accuracy"])

    history = json.loads(run.history.read_text())
    assert len(history["val_accuracy"]) == 2
    assert found["best_val_loss"] == min(history["val_loss"])
    assert "command:" in run.summary.read_text()
    assert run.model.exists() and not list(run.root.glob("checkpoint-*"))
    for group in ("train", "validation"):
        assert list((run.tensorboard / group).glob("events.out.tfevents.*")), group


PLAIN_KERAS_LOAD = """
import sys
import keras
import numpy as np

model_file, data_file, probabilities = sys.argv[1:]
model = keras.models.load_model(model_file)
x_test = np.load(data_file)["x_test"].astype("float32")
np.testing.assert_allclose(model.predict(x_test, verbose=0), np.load(probabilities), atol=1e-5)
assert "mnistsweep" not in sys.modules, "the test imported mnistsweep"
print("loaded", [layer.__class__.__name__ for layer in model.layers])
"""


@pytest.mark.slow
def test_an_augmented_model_loads_in_plain_keras_and_gives_the_saved_probabilities(
    tmp_path, mnist_dir
):
    """A process that never imports mnistsweep loads model.keras (normalization inside, no
    augmentation layer: a class of mnistsweep) and predicts the saved test probabilities."""
    cell = make_cell(tmp_path, arch="linear", normalization="standardize", augment="standard")
    trainer.run_cell(cell, tmp_path / "run", mnist_dir)
    run = RunLayout(tmp_path / "run")
    arguments = [str(run.model), str(mnist_dir / "mnist.npz"), str(run.test_probs)]
    loaded = subprocess.run(
        [sys.executable, "-c", PLAIN_KERAS_LOAD, *arguments],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={key: value for key, value in os.environ.items() if key != "PYTHONPATH"},
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert "Normalization" in loaded.stdout and "RandomAffine" not in loaded.stdout


@pytest.mark.slow
def test_saved_model_takes_raw_pixels_and_reproduces_test_probabilities(tmp_path, mnist_dir):
    import keras

    cell = make_cell(tmp_path, arch="linear", normalization="standardize")
    trainer.run_cell(cell, tmp_path / "run", mnist_dir)
    run = RunLayout(tmp_path / "run")
    model = keras.models.load_model(run.model)
    x_test = np.load(mnist_dir / "mnist.npz")["x_test"][:500].astype("float32")
    np.testing.assert_allclose(
        model.predict(x_test, verbose=0), np.load(run.test_probs)[:500], atol=1e-5
    )


# One net on each TensorFlow path of the measured table, and one the augmentation puts on the
# kernels; the tests below train each.
XLA_NET = next(arch for arch, path in runtime.TENSORFLOW_PATHS.items() if path == "tensorflow-xla")
KERNELS_CNN = "simple_cnn"  # a CNN with dropout (0.2, the tutorial's)
PATH_CASES = [
    pytest.param({"arch": XLA_NET}, id=f"{XLA_NET} (its table path)"),
    pytest.param({"arch": KERNELS_CNN}, id=f"{KERNELS_CNN} with dropout (its table path)"),
    pytest.param({"arch": "linear", "augment": "standard"}, id="augmented: kernels"),
]


def expected_path(settings: dict[str, str]) -> str:
    import keras

    if keras.backend.backend() == "jax":
        return "jax-xla"
    if settings.get("augment", "none") != "none":
        return "tensorflow-kernels"
    return runtime.TENSORFLOW_PATHS[settings["arch"]]


@pytest.mark.slow
@pytest.mark.parametrize("settings", PATH_CASES)
def test_same_seed_same_result_other_seed_differs(tmp_path, mnist_dir, settings):
    runs = {}
    for label, seed in (("a", 3), ("b", 3), ("c", 4)):
        cell = make_cell(tmp_path, seed=seed, **settings)
        runs[label] = trainer.run_cell(cell, tmp_path / label, mnist_dir)
    first, again, other = (runs[label]["metrics"] for label in "abc")
    assert first["test_accuracy"] == again["test_accuracy"]
    assert first["best_val_loss"] == again["best_val_loss"]
    assert first["best_val_loss"] != other["best_val_loss"]
    assert runs["a"]["timing"]["training_path"] == expected_path(settings)


def test_the_kernels_cnn_of_these_tests_is_on_the_kernels_path():
    """The tests above mean one net per path only while the table says so."""
    assert runtime.TENSORFLOW_PATHS[KERNELS_CNN] == "tensorflow-kernels"
    assert runtime.training_path("tensorflow", "mlp", jit_possible=False) == "tensorflow-kernels"
    assert runtime.training_path("jax", KERNELS_CNN, jit_possible=True) == "jax-xla"


@pytest.mark.slow
@pytest.mark.parametrize(
    "settings",
    [{"arch": "mlp", "dropout": 0.2}, {"arch": KERNELS_CNN, "train_subset": 1000}],
    ids=["mlp with dropout", f"{KERNELS_CNN} with dropout"],
)
def test_a_reused_compiled_model_gives_the_bytes_of_a_fresh_one(tmp_path, mnist_dir, settings):
    """A cell trained on the compiled model of the cell before it (same net, other seed) ends
    exactly as the same cell trained on a model compiled for it alone."""
    first, second = (make_cell(tmp_path, seed=s, **settings) for s in (0, 1))
    runtime.COMPILED = runtime.CompiledModels()
    trainer.run_cell(first, tmp_path / "first", mnist_dir)
    trainer.run_cell(second, tmp_path / "reused", mnist_dir)
    assert len(runtime.COMPILED) == 1, "the second cell compiled a model of its own"
    runtime.COMPILED = runtime.CompiledModels()
    trainer.run_cell(second, tmp_path / "fresh", mnist_dir)
    for name in ("probs_test.npy", "probs_val.npy"):
        assert (tmp_path / "reused" / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes()


def interrupt_after_committing(monkeypatch, epochs: int) -> None:
    original = checkpoint.Checkpoints.commit_epoch

    def commit_then_die(self, state, model, validation_loss):
        original(self, state, model, validation_loss)
        if state.epochs_done == epochs:
            raise KeyboardInterrupt  # as if the job were killed right after the commit

    monkeypatch.setattr(checkpoint.Checkpoints, "commit_epoch", commit_then_die)


@pytest.mark.slow
def test_interrupted_run_resumes_from_its_last_epoch(tmp_path, mnist_dir, monkeypatch):
    cell = make_cell(tmp_path, arch="linear", epochs=3)
    with monkeypatch.context() as patch:
        interrupt_after_committing(patch, epochs=2)
        with pytest.raises(KeyboardInterrupt):
            trainer.run_cell(cell, tmp_path / "run", mnist_dir)
    run = RunLayout(tmp_path / "run")
    state = records.read(records.RunState, run.state)
    assert not run.result.exists() and state is not None and state.epochs_done == 2
    assert run.named(state.checkpoint).exists()

    result = trainer.run_cell(cell, tmp_path / "run", mnist_dir)
    assert result["resumed_at_epochs"] == [2]
    assert result["metrics"]["epochs_run"] == 3
    assert len(result["timing"]["epoch_seconds"]) == 3


@pytest.mark.slow
@pytest.mark.parametrize(
    "damage",
    ["truncated checkpoint", "checkpoint of another net", "missing checkpoint", "bad state"],
)
def test_an_unusable_resume_point_is_reported_and_the_cell_trains_again(
    tmp_path, mnist_dir, monkeypatch, capsys, damage
):
    cell = make_cell(tmp_path, arch="linear", epochs=2, train_subset=500)
    with monkeypatch.context() as patch:
        interrupt_after_committing(patch, epochs=1)
        with pytest.raises(KeyboardInterrupt):
            trainer.run_cell(cell, tmp_path / "run", mnist_dir)
    run = RunLayout(tmp_path / "run")
    state = records.read(records.RunState, run.state)
    assert state is not None
    named = run.named(state.checkpoint)
    if damage == "truncated checkpoint":
        named.write_bytes(named.read_bytes()[: named.stat().st_size // 2])
    elif damage == "checkpoint of another net":
        np.savez(named, v0000=np.zeros(3))
    elif damage == "missing checkpoint":
        named.unlink()
    else:
        run.state.write_text('{"cell_id": "' + cell.id + '", "epochs_done": "two"')

    result = trainer.run_cell(cell, tmp_path / "run", mnist_dir)
    assert result["status"] == "completed"
    assert result["resumed_at_epochs"] == [] and result["metrics"]["epochs_run"] == 2
    assert len(result["warnings"]) == 1 and "training again" in result["warnings"][0]
    assert "warning: resume point unusable" in run.summary.read_text()
    assert capsys.readouterr().err.count("warning:") == 1


@pytest.mark.slow
def test_nan_loss_stops_early_as_diverged(tmp_path, mnist_dir, monkeypatch):
    original = trainer.split_data

    def poisoned(*args):
        split = original(*args)
        split.x_train[:, 0, 0] = np.nan  # every batch's loss becomes NaN
        return split

    monkeypatch.setattr(trainer, "split_data", poisoned)
    monkeypatch.setattr(runtime, "SPLITS", runtime.LastValue())
    cell = make_cell(tmp_path, arch="mlp", normalization="raw", epochs=3)
    result = trainer.run_cell(cell, tmp_path / "run", mnist_dir)
    assert result["status"] == "diverged"
    assert result["diverged_at_epoch"] == 0
    assert result["metrics"]["epochs_run"] == 1
    assert records.read(records.RunResult, tmp_path / "run" / "result.json").status == "diverged"


@pytest.mark.slow
def test_a_finite_but_absurd_loss_at_chance_is_diverged_not_completed(tmp_path, mnist_dir):
    """An MLP on raw pixels at learning_rate=1 ends its first epoch near loss 3e6, at chance."""
    cell = make_cell(tmp_path, arch="mlp", normalization="raw", learning_rate=1.0, epochs=2)
    result = trainer.run_cell(cell, tmp_path / "run", mnist_dir)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert math.isfinite(history["loss"][0]) and history["loss"][0] > trainer.DIVERGED_LOSS
    assert result["status"] == "diverged" and result["diverged_at_epoch"] == 0


# --- provenance ----------------------------------------------------------------------------------


def git(checkout, *arguments):
    return subprocess.run(
        ["git", "-C", str(checkout), *arguments], capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.mark.slow
def test_a_result_records_the_code_data_and_libraries_it_came_from(tmp_path, mnist_dir):
    cell = make_cell(tmp_path, arch="linear", train_subset=500)
    result = records.RunResult.model_validate(trainer.run_cell(cell, tmp_path / "run", mnist_dir))
    origin = result.provenance
    assert origin is not None
    data_file = mnist_dir / "mnist.npz"
    assert origin.data_sha256 == hashlib.sha256(data_file.read_bytes()).hexdigest()
    assert origin.code_sha256 == provenance.code_sha256(provenance.PACKAGE_DIR)
    assert origin.versions["keras"] == __import__("keras").__version__
    checkout = provenance.PACKAGE_DIR.parent
    if (checkout / ".git").exists():
        assert origin.git_commit == git(checkout, "rev-parse", "HEAD")
        assert origin.git_dirty == bool(git(checkout, "status", "--porcelain", "--", "mnistsweep"))
    assert records.read(records.RunResult, tmp_path / "run" / "result.json") == result


def copy_package(target):
    shutil.copytree(
        provenance.PACKAGE_DIR, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    return target


def test_the_code_hash_changes_with_any_file_of_the_package(tmp_path):
    package = copy_package(tmp_path / "mnistsweep")
    before = provenance.code_sha256(package)
    assert before == provenance.code_sha256(copy_package(tmp_path / "again" / "mnistsweep"))
    (package / "report" / "templates" / "extra.txt").write_text("x")
    assert provenance.code_sha256(package) != before


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_version_is_the_packages_own_checkout_and_never_a_folder_above_a_snapshot(tmp_path):
    checkout = tmp_path / "checkout"
    package = copy_package(checkout / "mnistsweep")
    snapshot = copy_package(checkout / "results" / "quick" / "code" / "t1" / "mnistsweep")
    git(checkout, "init", "-q")
    git(checkout, "add", "mnistsweep")
    identity = ["-c", "user.name=t", "-c", "user.email=t@t"]
    git(checkout, *identity, "commit", "-q", "-m", "code")
    commit = git(checkout, "rev-parse", "HEAD")
    assert provenance.git_version(package) == (commit, False)
    assert provenance.git_version(snapshot) == (None, None)  # results/ is not committed code
    (package / "metrics.py").write_text("# edited\n")
    assert provenance.git_version(package) == (commit, True)


def test_results_written_before_provenance_and_paths_still_read(tmp_path):
    old = {
        "status": "completed",
        "cell_id": "abc",
        "cell_name": "arch=mlp",
        "config": {"arch": "mlp"},
        "metrics": {"test_accuracy": 0.9, "best_val_accuracy": 0.9},
        "timing": {"epoch_seconds": [1.0]},
    }
    (tmp_path / "result.json").write_text(json.dumps(old))
    result = records.read(records.RunResult, tmp_path / "result.json")
    assert result is not None
    assert result.provenance is None and result.timing.training_path is None
