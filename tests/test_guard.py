"""The guard keeps specs apart and fails closed: a damaged or missing record never lets another
spec's cells into a folder of runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mnistsweep.cli import main
from mnistsweep.sweep import guard
from mnistsweep.sweep.layout import SweepLayout
from mnistsweep.sweep.spec import load_spec


def write_spec(folder: Path, seeds: list[int]) -> Path:
    path = folder / f"spec-{len(seeds)}.yaml"
    document = {
        "name": "same",
        "grid": {"arch": ["linear"], "seed": seeds},
        "train": {"epochs": 1, "train_subset": 100},
        "executor": {"backend": "local"},
    }
    path.write_text(yaml.safe_dump(document))
    return path


def fill(results: Path, spec_path: Path) -> SweepLayout:
    """A sweep folder as a launch leaves it: the record, and a folder per cell."""
    spec = load_spec(spec_path)
    layout = SweepLayout.of(results, spec.name)
    guard.record_spec(layout, spec)
    for cell in spec.cells():
        layout.run(cell).create()
    return layout


def dry_run(spec_path: Path, results: Path) -> int:
    return main(["launch", str(spec_path), "--dry-run", "--results-dir", str(results)])


@pytest.mark.parametrize("damage", ["{not json", '{"name": 3}', "", "[]"])
def test_a_changed_spec_is_refused_when_the_record_is_damaged(tmp_path, capsys, damage):
    layout = fill(tmp_path / "results", write_spec(tmp_path, [0, 1]))
    layout.record.write_text(damage)
    changed = write_spec(tmp_path, [0, 1, 2])
    assert dry_run(changed, tmp_path / "results") == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "sweep.json" in error
    assert dry_run(write_spec(tmp_path, [0, 1]), tmp_path / "results") == 0  # its own spec: fine


def test_a_spec_whose_cells_are_not_the_runs_is_refused_when_the_record_is_gone(tmp_path, capsys):
    layout = fill(tmp_path / "results", write_spec(tmp_path, [0, 1, 2]))
    layout.record.unlink()
    assert dry_run(write_spec(tmp_path, [5]), tmp_path / "results") == 2
    assert "not cells of this spec" in capsys.readouterr().err
    assert dry_run(write_spec(tmp_path, [0, 1, 2, 3]), tmp_path / "results") == 0


def test_a_sweep_folder_or_results_dir_that_is_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "same").write_text("not a folder")
    assert dry_run(write_spec(tmp_path, [0]), tmp_path / "results") == 2
    assert capsys.readouterr().err.startswith("error: ")
    for results in (tmp_path / "results" / "same", tmp_path / "results" / "same" / "deeper"):
        assert dry_run(write_spec(tmp_path, [0]), results) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and "is a file" in error


def test_status_of_a_damaged_record_is_one_line(tmp_path, capsys):
    layout = fill(tmp_path / "results", write_spec(tmp_path, [0]))
    layout.record.write_text(json.dumps({"name": "same", "axes": "seed"}))
    assert main(["aggregate", str(layout.root)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "damaged" in error


def test_a_damaged_result_is_kept_aside_before_the_cell_trains_again(tmp_path):
    from mnistsweep.execute import plan as planning

    spec = load_spec(write_spec(tmp_path, [0]))
    layout = fill(tmp_path / "results", write_spec(tmp_path, [0]))
    run = layout.run(spec.cells()[0])
    run.result.write_text('{"status": "completed", "cell_id": ')  # half written
    plan = planning.plan_launch(spec, tmp_path / "results", "local")
    assert plan.statuses[spec.cells()[0].id] == "todo" and plan.retried
    moved = planning.archive_failure(plan, spec.cells()[0])
    assert not run.result.exists()
    assert [aside.read_text() for aside, _ in moved] == ['{"status": "completed", "cell_id": ']
