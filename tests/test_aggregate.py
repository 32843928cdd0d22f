"""Aggregation over synthetic run records: n/mean/std per configuration, broken runs skipped."""

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnistsweep import fsio
from mnistsweep.__main__ import main
from mnistsweep.analysis import runs as sweep_runs
from mnistsweep.analysis import tables
from mnistsweep.sweep.layout import SweepLayout


def fake_run(
    sweep_dir: Path,
    name: str,
    config: dict,
    test_accuracy: float,
    val_accuracy: float,
    status: str = "completed",
) -> None:
    fsio.write_json(
        SweepLayout(sweep_dir).run_named(name).result,
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
    fsio.write_json(
        SweepLayout(sweep_dir).record,
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
    broken = [problem for problem in runs.problems if "broken" in problem]
    assert len(broken) == 1  # one line naming the file and what is wrong with it
    assert broken[0].startswith(f"{sweep / 'runs' / 'broken' / 'result.json'}: not JSON (")
    assert broken[0].endswith("(skipped)")
    assert any("unfinished: no result.json yet" in p for p in runs.problems)


def test_aggregate_command_prints_table_and_writes_csv(sweep, capsys):
    assert main(["aggregate", str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "| mlp" in out and "broken/result.json: not JSON" in out
    table = pd.read_csv(sweep / "summary.csv")
    assert list(table["n"]) == [3, 2]


def test_aggregate_of_a_folder_that_is_no_sweep_is_a_clear_error(tmp_path, capsys):
    assert main(["aggregate", str(tmp_path)]) == 2
    assert "not a sweep folder" in capsys.readouterr().err
    assert main(["aggregate", str(tmp_path / "missing")]) == 2


def test_the_record_is_json(sweep):
    assert json.loads((sweep / "sweep.json").read_text())["axes"] == ["arch", "seed"]


def test_a_null_config_value_reads_default_in_every_table(sweep):
    frame = sweep_runs.load_runs(sweep).frame
    assert set(frame["dropout"]) == {sweep_runs.DEFAULT}
    table = tables.configuration_table(frame, ["arch", "dropout", "seed"])
    assert set(table["dropout"]) == {"default"}
    assert "None" not in table.to_csv(index=False)


def test_rows_carry_the_run_folder_and_timing_columns(sweep):
    frame = sweep_runs.load_runs(sweep).frame
    assert all(Path(path).parent == sweep / "runs" for path in frame["run_dir"])
    for column in ("first_epoch_seconds", "steady_epoch_seconds", "peak_rss_mb"):
        assert frame[column].isna().all()  # results written before the trainer recorded them
    assert set(frame["train_seconds"]) == {10.0}


JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5)
KEYS = st.text(max_size=8) | st.just("line\nbreak")  # a key that would split a warning line
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(KEYS, children, max_size=3),
    max_leaves=12,
)
RESULT_KEYS = st.sampled_from(["status", "cell_id", "cell_name", "config", "metrics", "timing"])
WRONG_SHAPES = JSON_VALUES | st.dictionaries(RESULT_KEYS, JSON_VALUES, max_size=6)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(content=WRONG_SHAPES)
def test_a_result_of_any_wrong_shape_is_one_warning_never_a_traceback(
    tmp_path_factory: pytest.TempPathFactory, content: Any
) -> None:
    sweep_dir = tmp_path_factory.mktemp("sweep")
    fake_run(sweep_dir, "good", {"arch": "mlp", "seed": 0}, 0.9, 0.9)
    odd = SweepLayout(sweep_dir).run_named("odd").result
    fsio.write_text(odd, json.dumps(content))
    runs = sweep_runs.load_runs(sweep_dir)
    names = [Path(str(path)).name for path in runs.frame["run_dir"]]
    if "odd" in names:  # by chance a valid record: then it is a row like any other
        assert runs.problems == []
    else:
        assert names == ["good"]
        assert len(runs.problems) == 1 and runs.problems[0].startswith(f"{odd}: ")
        assert "\n" not in runs.problems[0]


def test_the_trainers_timing_fields_become_columns(tmp_path):
    fake_run(tmp_path, "timed", {"arch": "mlp", "seed": 0}, 0.9, 0.9)
    result = SweepLayout(tmp_path).run_named("timed").result
    content = json.loads(result.read_text())
    content["timing"].update(first_epoch_seconds=9.5, steady_epoch_seconds=0.7, peak_rss_mb=812.0)
    fsio.write_json(result, content)
    row = sweep_runs.load_runs(tmp_path).frame.iloc[0]
    assert (row["first_epoch_seconds"], row["steady_epoch_seconds"]) == (9.5, 0.7)
    assert row["peak_rss_mb"] == 812.0


def test_a_warning_with_brackets_is_printed_as_text(sweep, capsys):
    odd = SweepLayout(sweep).run_named("[bold]odd[red]").result
    fsio.write_text(odd, "[not json")
    assert main(["aggregate", str(sweep)]) == 0
    assert "[bold]odd[red]/result.json: not JSON" in capsys.readouterr().out
