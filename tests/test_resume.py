"""Exact resume: a training process killed with SIGKILL at an epoch boundary, then relaunched,
ends bit for bit where the run left alone ends — weights, optimizer, history, probabilities.

Each case trains a net whose training draws random numbers every step (dropout; augmentation)
for 3 epochs on a few thousand images, through the `train` command as a user runs it: a CNN on
each TensorFlow path the trainer takes (runtime.TENSORFLOW_PATHS; the sigmoid MLP on XLA), and
an MLP on JAX too.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import h5py
import pytest

from mnistsweep.sweep import records
from mnistsweep.sweep.layout import RunLayout
from mnistsweep.train import runtime

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 3
CASES = {
    "mlp with dropout": ["arch=mlp_sigmoid", "dropout=0.3", "train_subset=3000"],
    "cnn with augmentation": ["arch=simple_cnn", "augment=light", "train_subset=1000"],
    "cnn with dropout": ["arch=simple_cnn", "train_subset=1000"],  # its tutorial's 0.2
    "mlp with dropout on jax": ["arch=mlp", "dropout=0.3", "train_subset=3000"],
}
BACKENDS = {"mlp with dropout on jax": "jax"}
# The path each case must take on TensorFlow: the CNN with dropout on its measured one.
PATHS = {
    "mlp with dropout": runtime.TENSORFLOW_PATHS["mlp_sigmoid"],  # XLA
    "cnn with augmentation": "tensorflow-kernels",
    "cnn with dropout": runtime.TENSORFLOW_PATHS["simple_cnn"],
    "mlp with dropout on jax": "jax-xla",
}


def train_command(case: str, out: Path, data_dir: Path) -> list[str]:
    settings = [*CASES[case], f"epochs={EPOCHS}", "validation_split=0.05"]
    flags = [part for setting in settings for part in ("--set", setting)]
    places = ["--out", str(out), "--data-dir", str(data_dir)]
    return [sys.executable, "-m", "mnistsweep", "train", *flags, *places]


def environment(case: str) -> dict[str, str]:
    backend = BACKENDS.get(case, "tensorflow")
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "KERAS_BACKEND": backend,
    }


def train_to_the_end(case: str, out: Path, data_dir: Path) -> None:
    finished = subprocess.run(
        train_command(case, out, data_dir), env=environment(case), capture_output=True, text=True
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr


def epochs_done(run: RunLayout) -> int:
    state = records.read(records.RunState, run.state)
    return state.epochs_done if state else 0


def kill_after_epochs(case: str, run: RunLayout, data_dir: Path, wanted: int) -> int:
    """SIGKILL the training process once `wanted` epochs are committed; the epochs it left."""
    process = subprocess.Popen(
        train_command(case, run.root, data_dir),
        env=environment(case),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 600
        while epochs_done(run) < wanted:
            assert process.poll() is None, "the training ended before it could be killed"
            assert time.monotonic() < deadline, f"{wanted} epochs not done within 10 minutes"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=60)
    assert not run.result.exists(), "the run finished before the kill: nothing to resume"
    return epochs_done(run)


def model_arrays(model_file: Path) -> dict[str, bytes]:
    """Every array saved in a .keras file (weights and optimizer), as raw bytes."""
    arrays: dict[str, bytes] = {}
    with zipfile.ZipFile(model_file) as archive:
        weights = h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r")
    weights.visititems(
        lambda name, item: (
            arrays.update({name: item[()].tobytes()}) if isinstance(item, h5py.Dataset) else None
        )
    )
    return arrays


def without_seconds(history: dict[str, list[float]]) -> dict[str, list[float]]:
    return {key: values for key, values in history.items() if key != "seconds"}


@pytest.fixture(scope="module")
def left_alone(tmp_path_factory, mnist_dir) -> dict[str, RunLayout]:
    """Each case trained once without interruption."""
    runs = {}
    for case in CASES:
        run = RunLayout(tmp_path_factory.mktemp("left-alone") / "run")
        train_to_the_end(case, run.root, mnist_dir)
        runs[case] = run
    return runs


@pytest.mark.parametrize("kill_at", [1, 2], ids=["after the first epoch", "after epoch 2"])
@pytest.mark.parametrize("case", list(CASES))
def test_killed_and_resumed_run_is_bit_identical(tmp_path, mnist_dir, left_alone, case, kill_at):
    reference, run = left_alone[case], RunLayout(tmp_path / "run")
    epochs_at_kill = kill_after_epochs(case, run, mnist_dir, kill_at)
    assert kill_at <= epochs_at_kill < EPOCHS
    train_to_the_end(case, run.root, mnist_dir)

    result = records.read(records.RunResult, run.result)
    expected = records.read(records.RunResult, reference.result)
    assert result is not None and expected is not None
    assert result.status == "completed" and result.resumed_at_epochs == [epochs_at_kill]
    assert result.timing.training_path == expected.timing.training_path == PATHS[case]
    assert result.env is not None and result.env["keras_backend"] == BACKENDS.get(
        case, "tensorflow"
    )
    assert result.metrics == expected.metrics
    for probabilities in (run.test_probs, run.val_probs):
        reference_file = reference.root / probabilities.name
        assert probabilities.read_bytes() == reference_file.read_bytes(), probabilities.name
    history = json.loads(run.history.read_text())
    assert without_seconds(history) == without_seconds(json.loads(reference.history.read_text()))
    assert model_arrays(run.model) == model_arrays(reference.model)
    assert not list(run.root.glob("checkpoint-*")), "training files left after the result"


def test_another_seed_gives_other_bytes_so_the_comparison_can_fail(
    tmp_path, mnist_dir, left_alone, monkeypatch
):
    """The byte comparison above means something only if another seed gives other bytes."""
    case = "mlp with dropout"
    monkeypatch.setitem(CASES, case, [*CASES[case], "seed=1"])
    train_to_the_end(case, tmp_path / "run", mnist_dir)
    other, reference = RunLayout(tmp_path / "run"), left_alone[case]
    assert other.test_probs.read_bytes() != reference.test_probs.read_bytes()
    assert model_arrays(other.model) != model_arrays(reference.model)
