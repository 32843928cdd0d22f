"""Aggregation over synthetic run records: n/mean/std per configuration, broken runs skipped."""

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fake_sweeps import cell_with, record_sweep, result_of, run_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnistsweep import fsio
from mnistsweep.__main__ import main
from mnistsweep.analysis import runs as sweep_runs
from mnistsweep.analysis import tables
from mnistsweep.sweep.layout import SweepLayout

GRID = {"arch": ["linear", "mlp"], "seed": [0, 1, 2, 9]}


def fake_run(
    sweep_dir: Path,
    config: dict,
    test_accuracy: float,
    val_accuracy: float,
    status: str = "completed",
) -> Path:
    """A result of the recorded sweep's cell with these config values (recorded if need be)."""
    cell = cell_with(record_sweep(sweep_dir, GRID), **config)
    metrics = {
        "test_accuracy": test_accuracy,
        "best_val_accuracy": val_accuracy,
        "test_loss": 0.1,
        "best_val_loss": 0.1,
        "best_epoch": 1,
        "epochs_run": 2,
    }
    run = run_of(sweep_dir, cell)
    fsio.write_json(
        run.result, result_of(cell, status=status, metrics=metrics, timing={"total_seconds": 10.0})
    )
    return run.root


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
        fake_run(sweep_dir, {"arch": arch, "seed": seed}, test, val)
    fake_run(sweep_dir, {"arch": "mlp", "seed": 9}, 0.0, 0.0, "failed")
    cells = record_sweep(sweep_dir, GRID)
    broken = run_of(sweep_dir, cell_with(cells, arch="linear", seed=2))
    broken.create()
    broken.result.write_text('{"status": "compl')
    run_of(sweep_dir, cell_with(cells, arch="linear", seed=9)).create()  # unfinished
    return sweep_dir


def folder(sweep_dir: Path, **config) -> Path:
    return run_of(sweep_dir, cell_with(record_sweep(sweep_dir, GRID), **config)).root


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
    broken_folder = folder(sweep, arch="linear", seed=2)
    broken = [problem for problem in runs.problems if broken_folder.name in problem]
    assert len(broken) == 1  # one line naming the file and what is wrong with it
    assert broken[0].startswith(f"{broken_folder / 'result.json'}: not JSON (")
    assert broken[0].endswith("(skipped)")
    unfinished = folder(sweep, arch="linear", seed=9).name
    assert any(f"{unfinished}: no result.json yet" in p for p in runs.problems)


def test_aggregate_command_prints_table_and_writes_csv(sweep, capsys):
    assert main(["aggregate", str(sweep)]) == 0
    out = capsys.readouterr().out
    broken = folder(sweep, arch="linear", seed=2).name
    assert "| mlp" in out and f"{broken}/result.json: not JSON" in out
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
    good = fake_run(sweep_dir, {"arch": "mlp", "seed": 0}, 0.9, 0.9)
    odd_folder = folder(sweep_dir, arch="mlp", seed=1)
    odd = SweepLayout(sweep_dir).run_named(odd_folder.name).result
    fsio.write_text(odd, json.dumps(content))
    runs = sweep_runs.load_runs(sweep_dir)
    names = [Path(str(path)).name for path in runs.frame["run_dir"]]
    assert names == [good.name]  # by chance a valid record: still not the cell's, not counted
    assert len(runs.problems) == 1 and "\n" not in runs.problems[0]
    assert runs.problems[0].startswith(f"{odd}: ") or (
        "foreign" in runs.problems[0] and odd_folder.name in runs.problems[0]
    )


def test_the_trainers_timing_fields_become_columns(tmp_path):
    result = fake_run(tmp_path, {"arch": "mlp", "seed": 0}, 0.9, 0.9) / "result.json"
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
    assert "1 foreign run folder(s)" in (out := capsys.readouterr().out)
    assert "[bold]odd[red] (not the folder of a cell" in out
