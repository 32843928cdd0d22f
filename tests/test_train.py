"""The trainer on real MNIST: artifacts, accuracy well above chance, determinism, resume."""

import json
import math

import numpy as np
import pytest

from mnistsweep.sweep.rundir import RunFiles
from mnistsweep.sweep.spec import parse_spec
from mnistsweep.train import trainer

pytestmark = pytest.mark.slow


def make_cell(tmp_path, **train_settings):
    document = {"name": "t", "train": {"train_subset": 3000, "epochs": 1, **train_settings}}
    return parse_spec(document, tmp_path / "t.yaml").cells()[0]


def test_tiny_training_writes_every_artifact_and_learns(tmp_path, mnist_dir):
    cell = make_cell(tmp_path, arch="mlp", epochs=2)
    result = trainer.run_cell(cell, tmp_path / "run", mnist_dir)
    files = RunFiles(tmp_path / "run")

    assert result == json.loads(files.result.read_text())
    assert result["status"] == "completed"
    metrics = result["metrics"]
    assert metrics["test_accuracy"] > 0.85  # chance is 0.10
    assert metrics["best_val_accuracy"] > 0.85
    assert metrics["best_epoch"] in (0, 1)
    assert set(result["config"]) >= {"arch", "normalization", "dropout", "seed", "epochs", "l2"}
    assert len(result["timing"]["epoch_seconds"]) == 2
    assert result["env"]["keras_backend"] in ("tensorflow", "jax")
    assert result["params"]["trainable"] == 269_322

    test_probs, val_probs = np.load(files.test_probs), np.load(files.val_probs)
    assert test_probs.shape == (10_000, 10) and val_probs.shape == (6_000, 10)
    np.testing.assert_allclose(test_probs.sum(axis=1), 1.0, atol=1e-4)
    labels = np.load(mnist_dir / "mnist.npz")["y_test"]
    assert math.isclose(trainer.accuracy(test_probs, labels), metrics["test_accuracy"])

    history = json.loads(files.history.read_text())
    assert len(history["val_accuracy"]) == 2
    assert "command:" in files.summary.read_text()
    assert files.model.exists() and not files.checkpoint.exists()
    for group in ("train", "validation"):
        assert list((files.tensorboard / group).glob("events.out.tfevents.*")), group


def test_saved_model_takes_raw_pixels_and_reproduces_test_probabilities(tmp_path, mnist_dir):
    import keras

    cell = make_cell(tmp_path, arch="linear", normalization="standardize")
    trainer.run_cell(cell, tmp_path / "run", mnist_dir)
    files = RunFiles(tmp_path / "run")
    model = keras.models.load_model(files.model)
    x_test = np.load(mnist_dir / "mnist.npz")["x_test"][:500].astype("float32")
    np.testing.assert_allclose(
        model.predict(x_test, verbose=0), np.load(files.test_probs)[:500], atol=1e-5
    )


@pytest.mark.parametrize(
    "arch, augment",
    [("mlp", "none"), ("linear", "standard")],  # XLA; TensorFlow's op determinism (no XLA)
)
def test_same_seed_same_result_other_seed_differs(tmp_path, mnist_dir, arch, augment):
    runs = {}
    for label, seed in (("a", 3), ("b", 3), ("c", 4)):
        cell = make_cell(tmp_path, arch=arch, seed=seed, augment=augment)
        runs[label] = trainer.run_cell(cell, tmp_path / label, mnist_dir)["metrics"]
    assert runs["a"]["test_accuracy"] == runs["b"]["test_accuracy"]
    assert runs["a"]["best_val_loss"] == runs["b"]["best_val_loss"]
    assert runs["a"]["best_val_loss"] != runs["c"]["best_val_loss"]


def test_validation_split_is_the_same_whatever_the_seed(mnist_dir):
    mnist = trainer.data.load(mnist_dir)
    first = trainer.split_data(mnist, 0.1, None)
    subset = trainer.split_data(mnist, 0.1, 1000)
    np.testing.assert_array_equal(first.y_val, mnist.y_train[-6000:])
    np.testing.assert_array_equal(subset.y_val, first.y_val)
    assert len(subset.x_train) == 1000 and len(first.x_train) == 54_000


def test_interrupted_run_resumes_from_its_last_epoch(tmp_path, mnist_dir, monkeypatch):
    cell = make_cell(tmp_path, arch="linear", epochs=3)
    original = trainer.RunRecorder.on_epoch_end

    def stop_after_second_epoch(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == 1:
            raise KeyboardInterrupt  # as if the job were killed right after epoch 2's checkpoint

    monkeypatch.setattr(trainer.RunRecorder, "on_epoch_end", stop_after_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        trainer.run_cell(cell, tmp_path / "run", mnist_dir)
    files = RunFiles(tmp_path / "run")
    assert not files.result.exists() and files.checkpoint.exists()

    monkeypatch.setattr(trainer.RunRecorder, "on_epoch_end", original)
    result = trainer.run_cell(cell, tmp_path / "run", mnist_dir)
    assert result["resumed_at_epochs"] == [2]
    assert result["metrics"]["epochs_run"] == 3
    assert len(result["timing"]["epoch_seconds"]) == 3


def test_nan_loss_stops_early_as_diverged(tmp_path, mnist_dir, monkeypatch):
    original = trainer.split_data

    def poisoned(*args):
        split = original(*args)
        split.x_train[:, 0, 0] = np.nan  # every batch's loss becomes NaN
        return split

    monkeypatch.setattr(trainer, "split_data", poisoned)
    cell = make_cell(tmp_path, arch="mlp", normalization="raw", epochs=3)
    result = trainer.run_cell(cell, tmp_path / "run", mnist_dir)
    assert result["status"] == "diverged"
    assert result["diverged_at_epoch"] == 0
    assert result["metrics"]["epochs_run"] == 1
    assert RunFiles(tmp_path / "run").status() == "diverged"
