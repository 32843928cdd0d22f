"""`train` in the foreground: one cell, never over another run's result."""

from __future__ import annotations

import pytest

from mnistsweep.cli import main
from mnistsweep.sweep import records, state
from mnistsweep.sweep.layout import RunLayout

SETTINGS = ["--set", "arch=linear", "--set", "epochs=1", "--set", "train_subset=500"]


@pytest.mark.slow
def test_training_twice_into_one_folder_keeps_the_first_result(tmp_path, mnist_dir, capsys):
    out = tmp_path / "run"
    command = ["train", *SETTINGS, "--out", str(out), "--data-dir", str(mnist_dir)]
    assert main(command) == 0
    first = (out / "result.json").read_bytes()
    model = (out / "model.keras").stat().st_mtime_ns
    capsys.readouterr()
    assert main(command) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "never overwritten" in error
    assert (out / "result.json").read_bytes() == first
    assert (out / "model.keras").stat().st_mtime_ns == model


def test_a_run_being_trained_elsewhere_is_left_alone(tmp_path, capsys):
    out = tmp_path / "run"
    with state.training_lock(RunLayout(out)) as acquired:
        assert acquired
        assert main(["train", *SETTINGS, "--out", str(out)]) == 2
    assert "another process is training" in capsys.readouterr().err
    assert records.read(records.RunResult, RunLayout(out).result) is None
