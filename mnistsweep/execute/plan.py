"""Which cells of a sweep a launch trains, and how they are packed into jobs.

Planning is separate from running (the backends: execute.local, execute.slurm_backend), so
`--dry-run` shows exactly what a real launch would do. A cell's state comes from sweep.state:
final and failed cells are kept, cells that a queued or running job (or another process) covers
are left to it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from mnistsweep.errors import MnistsweepError
from mnistsweep.execute.backend import Backend
from mnistsweep.sweep import guard, identity
from mnistsweep.sweep import state as cell_state
from mnistsweep.sweep.layout import SweepLayout
from mnistsweep.sweep.spec import Cell, Spec


class Decision(str, Enum):
    """What a launch does with a cell that no one has finished or holds (those keep their
    CellState in the plan)."""

    TODO = "todo"  # trained (or submitted) by this launch
    NOT_SELECTED = "not selected"  # left out by --only, for a later launch

    def __str__(self) -> str:
        return self.value


PlannedState = cell_state.CellState | Decision


@dataclass(frozen=True)
class Plan:
    spec: Spec
    backend: Backend
    sweep_dir: Path
    # cell id -> its CellState when kept (final, failed, or live), else this launch's Decision
    statuses: dict[str, PlannedState]
    batches: list[list[Cell]]  # what each job trains
    # ids of todo cells whose last attempt failed or left a damaged result: kept aside first
    retried: frozenset[str] = frozenset()
    covering: Mapping[str, str] = field(default_factory=dict)  # live cell id -> its job id or ""
    peak_rss_mb: Mapping[str, float] = field(default_factory=dict)  # arch -> most seen a cell

    @property
    def todo(self) -> list[Cell]:
        return [cell for batch in self.batches for cell in batch]

    def count(self, status: str) -> int:
        return sum(1 for value in self.statuses.values() if value == status)

    def covering_jobs(self) -> dict[str, int]:
        """job id ("" for a process on this machine) -> how many of its cells it still covers."""
        jobs: dict[str, int] = {}
        for job_id in self.covering.values():
            jobs[job_id] = jobs.get(job_id, 0) + 1
        return jobs


def parse_only(spec: Spec, selections: Sequence[str]) -> dict[str, list[Any]]:
    """`--only KEY=V1,V2` (repeatable) -> {KEY: [V1, V2]}, each value one the sweep's axis takes,
    so a typo cannot silently select nothing."""
    from mnistsweep.sweep.spec import TRAIN_SETTINGS
    from mnistsweep.sweep.yaml_loader import YamlError, parse_yaml, printable

    values = spec.axis_values

    def axis_value(key: str, text: str) -> Any:
        """The value as the axis holds it (`1` is 1.0 on a number axis), read with the safe YAML
        loader; a value of another type never matches (`true` is not seed 1, though True == 1)."""
        try:
            value = TRAIN_SETTINGS[key].check(parse_yaml(text, "--only"))
        except (YamlError, ValueError):  # not YAML, or not a value the axis could take
            pass
        else:
            if any(type(taken) is type(value) and taken == value for taken in values[key]):
                return value
        shown = [printable("null" if v is None else str(v)) for v in values[key]]
        more = f", ... ({len(shown)} in all)" if len(shown) > 12 else ""
        raise MnistsweepError(
            f"{spec.path}: --only {key}={printable(text)}: the sweep has no such value; "
            f"allowed: {', '.join(shown[:12])}{more}"
        )

    chosen: dict[str, list[Any]] = {}
    for selection in selections:
        key, separator, listed = selection.partition("=")
        if not separator or not listed:
            raise MnistsweepError(f"--only {printable(selection)}: expected AXIS=VALUE[,VALUE...]")
        if key not in values:
            raise MnistsweepError(
                f"{spec.path}: --only {printable(key)}: not an axis of this sweep; "
                f"axes: {', '.join(values)}"
            )
        for text in listed.split(","):
            chosen.setdefault(key, []).append(axis_value(key, text))
    return chosen


def plan_launch(
    spec: Spec,
    results_dir: Path,
    backend: Backend | str,
    retry_failed: bool = False,
    only: Mapping[str, Sequence[Any]] | None = None,
) -> Plan:
    """Which cells need training ("todo"); with `only`, the other cells are left out of this
    launch ("not selected") and stay for a later one. Cells with a live job are left to it."""
    if isinstance(backend, str):
        from mnistsweep.execute.backends import resolve

        backend = resolve(backend)
    layout = SweepLayout.of(results_dir, spec.name)
    guard.check_same_spec(layout, spec)
    cells = spec.cells()
    views = cell_views(layout, cells)
    statuses: dict[str, PlannedState] = {}
    todo: list[Cell] = []
    retried: set[str] = set()
    covering: dict[str, str] = {}
    for cell in cells:
        view = views.get(cell.id)
        state = view.state if view else cell_state.CellState.NOT_STARTED
        failed = state is cell_state.CellState.FAILED
        if state.is_final or (failed and not retry_failed) or (view and identity.is_foreign(view)):
            statuses[cell.id] = state
        elif view and state.is_live:
            statuses[cell.id] = state
            covering[cell.id] = view.job_id or ""
        elif only and any(cell.config[key] not in chosen for key, chosen in only.items()):
            statuses[cell.id] = Decision.NOT_SELECTED
        else:
            statuses[cell.id] = Decision.TODO
            todo.append(cell)
            if view and (view.result or state is cell_state.CellState.DAMAGED):  # kept aside
                retried.add(cell.id)
    batches = pack(todo, backend.cells_per_job(spec, len(todo)))
    peaks = peak_rss_by_arch(views.values())
    return Plan(spec, backend, layout.root, statuses, batches, frozenset(retried), covering, peaks)


def cell_views(layout: SweepLayout, cells: Sequence[Cell]) -> dict[str, cell_state.CellView]:
    """The state of every cell that has a run folder or a job, from one listing of the run
    folders, jobs.jsonl and one scheduler round: a fresh sweep of 1,000 cells costs no opens."""
    from mnistsweep.execute import scheduler

    started = run_folders(layout)
    jobs = scheduler.load_jobs(layout.root)  # status reports damaged lines
    owners = jobs.owners
    scheduled = scheduler.observe(owners.values(), jobs.cancelled)
    views = {}
    for cell in cells:
        job_id = owners.get(cell.id)
        if cell.dirname not in started and job_id is None:
            continue
        job = scheduled.job(job_id) if job_id else None
        run = layout.run(cell)
        views[cell.id] = identity.checked_view(cell_state.derive(run, job), run, cell)
    return views


def peak_rss_by_arch(views: Iterable[cell_state.CellView]) -> dict[str, float]:
    """The largest resident memory (MB) a cell of each architecture used in this sweep."""
    peaks: dict[str, float] = {}
    for view in views:
        if view.result is None:
            continue
        peak = getattr(view.result.timing, "peak_rss_mb", None)
        arch = view.result.config.get("arch")
        if isinstance(peak, int | float) and isinstance(arch, str):
            peaks[arch] = max(peaks.get(arch, 0.0), float(peak))
    return peaks


def archive_failure(plan: Plan, cell: Cell) -> list[tuple[Path, Path]]:
    """Before a retry: keep the failed attempt's record aside, so the new attempt's result is
    the only result.json and the old error stays readable. Returns (kept aside, original)."""
    run = SweepLayout(plan.sweep_dir).run(cell)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    moved = []
    for path in (run.result, run.error):
        if path.exists() and not path.is_symlink():
            aside = run.failed_attempt(path, stamp)
            os.replace(path, aside)
            moved.append((aside, path))
    return moved


def restore_failures(moved: Iterable[tuple[Path, Path]]) -> None:
    """Undo archive_failure when the retry could not be submitted."""
    for aside, original in moved:
        if aside.exists() and not original.exists():
            os.replace(aside, original)


def run_folders(layout: SweepLayout) -> set[str]:
    """The run folders' names, listed once (round trips on a shared filesystem are slow)."""
    try:
        return set(os.listdir(layout.runs))
    except (FileNotFoundError, NotADirectoryError):
        return set()


def pack(cells: Sequence[Cell], size: int) -> list[list[Cell]]:
    return [list(cells[start : start + size]) for start in range(0, len(cells), size)]
