"""Synthetic sweep folders for the analysis and report tests: a recorded spec (sweep.json) and
run folders of its real cells, so that every record passes the run identity rule
(mnistsweep.sweep.identity) as a launched sweep's would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mnistsweep.sweep import records
from mnistsweep.sweep.layout import RunLayout, SweepLayout
from mnistsweep.sweep.spec import Cell, parse_spec


def record_sweep(
    sweep_dir: Path, grid: dict[str, list[Any]] | list[dict[str, list[Any]]], **train: Any
) -> list[Cell]:
    """Write the sweep.json a launch of this grid would write; the spec's cells."""
    spec = parse_spec({"name": "fake", "grid": grid, "train": train}, Path("fake.yaml"))
    records.write(
        SweepLayout(sweep_dir).record,
        records.SweepRecord(
            name=spec.name,
            axes=list(spec.axes),
            fingerprint=spec.results_fingerprint(),
            spec_path="fake.yaml",
            grid=[{axis: list(values) for axis, values in block.items()} for block in spec.grids],
            train=dict(spec.train),
            cells=spec.size,
        ),
    )
    return spec.cells()


def cell_with(cells: list[Cell], **values: Any) -> Cell:
    """The cell whose config has these values."""
    return next(c for c in cells if all(c.config[k] == v for k, v in values.items()))


def result_of(cell: Cell, **fields: Any) -> dict[str, Any]:
    """A result.json's content for `cell`: its identity, then `fields` (status, metrics...)."""
    return {
        "status": "completed",
        "cell_id": cell.id,
        "cell_name": cell.name,
        "axes": list(cell.axes),
        "config": dict(cell.config),
        **fields,
    }


def run_of(sweep_dir: Path, cell: Cell) -> RunLayout:
    return SweepLayout(sweep_dir).run(cell)
