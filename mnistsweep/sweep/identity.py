"""Run identity: which run folders belong to a sweep. The one owner of that rule.

A run folder counts only when four things agree: its name is the folder name of a cell of the
spec recorded in `sweep.json`, and its records (`result.json`, `state.json`) name that very cell,
with that cell's config. Anything else — a folder copied from another sweep, a copy of one of
the sweep's own runs under another cell's name or a made-up one, a result whose config was edited,
a record whose cell id differs from its folder — is *foreign*: callers name it in one warning and
never count, delete or overwrite it. A record that cannot be read is not foreign but damaged,
which the readers already report.
"""

from __future__ import annotations

import functools
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from mnistsweep.errors import MnistsweepError
from mnistsweep.sweep import records
from mnistsweep.sweep.layout import RunLayout, SweepLayout
from mnistsweep.sweep.spec import Cell, parse_spec
from mnistsweep.sweep.state import CellState, CellView

R = TypeVar("R", bound=records.Record)
SHOWN = 3  # foreign folders named in the one warning line
FOREIGN_DETAIL = "its folder holds another cell's records (foreign, left as it is)"


@dataclass(frozen=True)
class Foreign:
    """A run folder that does not belong to the sweep, and the first disagreement found."""

    name: str  # the folder's name under runs/
    reason: str


@dataclass(frozen=True)
class SweepIdentity:
    """The cells of the spec recorded in `sweep.json`, by folder name."""

    cells: dict[str, Cell]  # cell.dirname -> cell

    @classmethod
    def of(cls, record: records.SweepRecord, origin: Path | None = None) -> SweepIdentity:
        """The record's cells; `origin` (the sweep.json read) names the file in an error."""
        return _identity(record.model_dump_json(), str(origin or "sweep.json"))

    def check(self, run_dir: Path) -> Foreign | None:
        """None when `run_dir` (a run folder, or an archive's extracted member) is a cell's own
        folder holding only that cell's records."""
        name = run_dir.name
        cell = self.cells.get(name)
        if cell is None:
            return Foreign(name, "not the folder of a cell of this sweep's spec")
        reason = foreign_records(RunLayout(run_dir), cell)
        return None if reason is None else Foreign(name, reason)


def foreign_records(run: RunLayout, cell: Cell) -> str | None:
    """Why the records in `run` are not `cell`'s (None when they are, or there are none)."""
    state = readable(records.RunState, run.state)
    if state is not None and state.cell_id != cell.id:
        return f"state.json is of cell {state.cell_id}"
    result = readable(records.RunResult, run.result)
    if result is None:
        return None
    if result.cell_id != cell.id:
        return f"result.json is of cell {result.cell_id}"
    if result.cell_name != cell.name:
        return f"result.json names cell {result.cell_name}"
    if not same_config(result.config, cell):
        return "result.json: its config is not the cell's"
    return None


def readable(kind: type[R], path: Path) -> R | None:
    """The record, or None when there is none or it is damaged (damaged is not foreign: the
    readers of the run report it as damaged)."""
    try:
        return records.read(kind, path)
    except records.DamagedRecord:
        return None


def same_config(config: dict[str, records.JsonScalar], cell: Cell) -> bool:
    """The config as the cell's id hashes it: 1 and 1.0, or a key more or less, differ."""
    return Cell(config, cell.axes).id == cell.id


@functools.lru_cache(maxsize=8)
def _identity(record_json: str, origin: str) -> SweepIdentity:
    """Cells from the record's own grid and train settings (never from an editable spec.yaml),
    computed once per record: an archive checks each of its members against the same one."""
    record = records.SweepRecord.model_validate_json(record_json)
    document = {"name": "recorded", "grid": record.grid, "train": record.train}  # name: no cell
    try:
        spec = parse_spec(document, Path(origin), allow_large=True)
    except MnistsweepError as error:
        raise MnistsweepError(f"{error}; this sweep folder's record is damaged") from None
    if spec.results_fingerprint() != record.fingerprint:
        raise MnistsweepError(
            f"{origin}: grid/train do not match its fingerprint (edited by hand?), so which run "
            "folders are this sweep's cannot be told; put back the sweep.json its launch wrote"
        )
    return SweepIdentity({cell.dirname: cell for cell in spec.cells()})


def foreign_runs(record: records.SweepRecord, sweep_dir: Path) -> list[Foreign]:
    """Every run folder under `sweep_dir/runs/` that does not belong to the sweep."""
    layout = SweepLayout(sweep_dir)
    identity = SweepIdentity.of(record, layout.record)
    found = (identity.check(run.root) for run in layout.run_folders())
    return [foreign for foreign in found if foreign is not None]


def unless_foreign(view: CellView, cell: Cell, foreign_names: AbstractSet[str]) -> CellView:
    """`view`, unless the cell's folder is among the foreign ones (see `foreign_view`)."""
    return foreign_view(view) if cell.dirname in foreign_names else view


def checked_view(view: CellView, run: RunLayout, cell: Cell) -> CellView:
    """`view`, unless the cell's folder holds another cell's records (see `foreign_view`)."""
    return view if foreign_records(run, cell) is None else foreign_view(view)


def foreign_view(view: CellView) -> CellView:
    """A cell whose own folder holds another cell's records is not what they say: damaged, and
    left as it is (never trained there: that would delete or overwrite someone's results)."""
    return CellView(CellState.DAMAGED, 0, view.job_id, FOREIGN_DETAIL)


def is_foreign(view: CellView) -> bool:
    return view.state is CellState.DAMAGED and view.detail == FOREIGN_DETAIL


def warning(foreign: list[Foreign]) -> str:
    """The one line naming the foreign folders: how many, the first few, why for the first."""
    first, *others = foreign[:SHOWN]
    shown = "; ".join([f"{first.name} ({first.reason})", *(item.name for item in others)])
    more = f"; and {len(foreign) - SHOWN} more" if len(foreign) > SHOWN else ""
    return (
        f"{len(foreign)} foreign run folder(s), not counted and left as they are "
        f"(not this sweep's cell, or records of another cell): {shown}{more}"
    )


# --- jobs: bound to the folder that submitted them -----------------------------------------------


def jobs_owner(sweep_dir: Path) -> str:
    """What a job record names as the folder that submitted it: absolute, links resolved."""
    return str(sweep_dir.resolve())


def own_jobs(
    jobs: list[records.JobRecord], sweep_dir: Path
) -> tuple[list[records.JobRecord], list[str]]:
    """The jobs `sweep_dir` itself submitted, and one warning line when jobs.jsonl names jobs
    of another folder (this one is a copy, or was moved): those are never cancelled, followed
    or counted as covering a cell from here."""
    owner = jobs_owner(sweep_dir)
    own = [job for job in jobs if job.sweep_dir == owner]
    others = [job for job in jobs if job.sweep_dir != owner]
    if not others:
        return own, []
    where = others[0].sweep_dir
    origin = (
        f"submitted from {where} (this folder is a copy or was moved)"
        if where
        else "recorded without the folder that submitted them (an older mnistsweep)"
    )
    return own, [
        f"{SweepLayout(sweep_dir).jobs}: {len(others)} job(s) {origin}, e.g. job "
        f"{others[0].job_id}: ignored here, never cancelled from here"
    ]
