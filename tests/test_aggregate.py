"""Aggregation over synthetic run records: n/mean/std per configuration, broken runs skipped."""

import json
from pathlib import Path

import pandas as pd
import pytest

from mnistsweep.__main__ import main
from mnistsweep.analysis import runs as sweep_runs
from mnistsweep.analysis import tables
from mnistsweep.sweep.rundir import write_json_atomic


def fake_run(
    sweep_dir: Path,
    name: str,
    config: dict,
    test_accuracy: float,
    val_accuracy: float,
    status: str = "completed",
) -> None:
    write_json_atomic(
        sweep_dir / "runs" / name / "result.json",
        {
            "status": status,
            "cell_id": name,
            "cell_name": name,
            "axes": list(config),
            "config": config,
            "metrics": {
                "test_accuracy": test_accuracy,
                "best_val_accuracy": val_accuracy,
                "test_loss": 0.1,
                "best_val_loss": 0.1,
                "best_epoch": 1,
                "epochs_run": 2,
            },
            "timing": {"total_seconds": 10.0},
        },
    )


@pytest.fixture
def sweep(tmp_path) -> Path:
    sweep_dir = tmp_path / "s"
    accuracies = {
        ("mlp", 0): (0.97, 0.975),
        ("mlp", 1): (0.98, 0.977),
        ("mlp", 2): (0.99, 0.979),
        ("linear", 0): (0.92, 0.93),
        ("linear", 1): (0.90, 0.92),
    }
    for (arch, seed), (test, val) in accuracies.items():
        fake_run(
            sweep_dir, f"{arch}-{seed}", {"arch": arch, "seed": seed, "dropout": None}, test, val
        )
    fake_run(sweep_dir, "mlp-9", {"arch": "mlp", "seed": 9, "dropout": None}, 0.0, 0.0, "failed")
    (sweep_dir / "runs" / "broken").mkdir()
    (sweep_dir / "runs" / "broken" / "result.json").write_text('{"status": "compl')
    (sweep_dir / "runs" / "unfinished").mkdir()
    write_json_atomic(
        sweep_dir / "sweep.json",
        {
            "name": "s",
            "axes": ["arch", "seed"],
            "grid": {"arch": ["linear", "mlp"], "seed": [0, 1, 2, 9]},
            "train": {},
            "fingerprint": "x",
            "cells": 8,
        },
    )
    return sweep_dir


def test_table_groups_every_axis_but_seed_with_n_mean_std(sweep):
    runs = sweep_runs.load_runs(sweep)
    table = tables.summarize(runs.frame, ["arch", "seed"])
    assert list(table["arch"]) == ["mlp", "linear"]  # best validation mean first
    mlp = table.iloc[0]
    assert mlp["n"] == 3  # the failed run is not counted
    assert mlp["test_acc_mean"] == pytest.approx(0.98)
    assert mlp["test_acc_std"] == pytest.approx(0.01)  # sample std, ddof=1
    assert mlp["val_acc_mean"] == pytest.approx(0.977)
    linear = table.iloc[1]
    assert linear["n"] == 2 and linear["test_acc_std"] == pytest.approx(
        pd.Series([0.92, 0.90]).std()
    )


def test_broken_and_unfinished_runs_are_reported_and_skipped(sweep):
    runs = sweep_runs.load_runs(sweep)
    assert len(runs.frame) == 6
    assert any("broken: unreadable result.json" in p for p in runs.problems)
    assert any("unfinished: no result.json yet" in p for p in runs.problems)


def test_aggregate_command_prints_table_and_writes_csv(sweep, capsys):
    assert main(["aggregate", str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "| mlp" in out and "unreadable result.json" in out
    table = pd.read_csv(sweep / "summary.csv")
    assert list(table["n"]) == [3, 2]


def test_aggregate_of_a_folder_that_is_no_sweep_is_a_clear_error(tmp_path, capsys):
    assert main(["aggregate", str(tmp_path)]) == 2
    assert "not a sweep folder" in capsys.readouterr().err
    assert main(["aggregate", str(tmp_path / "missing")]) == 2


def test_the_record_is_json(sweep):
    assert json.loads((sweep / "sweep.json").read_text())["axes"] == ["arch", "seed"]
