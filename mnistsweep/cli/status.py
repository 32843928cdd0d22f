"""`status`, `cancel` and `logs`: a sweep's cells as its folder and the scheduler see them."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from mnistsweep.cli.common import add_sweep_dir, console, positive_int

if TYPE_CHECKING:
    from mnistsweep.execute.scheduler import CellRow
    from mnistsweep.sweep.spec import Cell

STATUS_HELP = """\
Each cell's state from its folder and the scheduler (one sacct call, at most one squeue):
not started, queued (with the scheduler's reason), training (epoch k of N), requeued,
interrupted and cancelled (a plain relaunch resumes them), lost, unknown (accounting down),
completed, diverged, failed (the log's line that says why), out of memory, damaged.
Exit code: 0 when no cell failed, ran out of memory, was lost, is damaged or unknown; 1 when
some did; 2 on a user error (no such sweep folder, damaged sweep.json)."""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = commands.add_parser(
        "status",
        help="state of every cell of a sweep",
        description=STATUS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_sweep_dir(status)
    status.set_defaults(func=run_status)
    cancel = commands.add_parser(
        "cancel", help="cancel a sweep's SLURM jobs (cells keep their committed epochs)"
    )
    add_sweep_dir(cancel)
    cancel.set_defaults(func=run_cancel)
    logs = commands.add_parser("logs", help="the tail of a cell's task logs")
    add_sweep_dir(logs)
    logs.add_argument("cell", help="the cell's id, name (arch=mlp,seed=0) or folder name")
    logs.add_argument(
        "--lines", type=positive_int, default=40, help="lines from the end of each log"
    )
    logs.set_defaults(func=run_logs)


def run_status(args: argparse.Namespace) -> int:
    from mnistsweep.execute import feeder, scheduler
    from mnistsweep.sweep import guard
    from mnistsweep.sweep.state import CellState

    record = guard.read_record(args.sweep_dir)
    status = scheduler.sweep_status(args.sweep_dir)
    counts = Counter(row.view.state for row in status.rows)
    totals = [f"{counts[state]} {state}" for state in CellState if counts[state]]
    console.print(
        f"sweep {record.name}: {len(status.rows)} cells: {', '.join(totals)}", markup=False
    )
    for row in status.rows:
        if row.view.state.value != "completed":
            for line in describe(args.sweep_dir, row):
                console.print(line, markup=False)
    warn(status.warnings)
    waiting = feeder.waiting_line(args.sweep_dir)  # cells the queue had no room for yet
    if waiting:
        console.print(waiting, markup=False)
    if len(counts) > 1 or not counts[CellState.COMPLETED]:
        console.print(f"a cell's task log: python -m mnistsweep logs {args.sweep_dir} CELL")
    return 1 if any(state.is_bad_news for state in counts) else 0


RESUMABLE = frozenset({"interrupted", "requeued", "cancelled", "unknown"})


def describe(sweep_dir: Path, row: CellRow) -> list[str]:
    """One line per cell (two when a log explains what went wrong)."""
    from mnistsweep.execute import scheduler
    from mnistsweep.sweep.state import CellState

    view, state = row.view, row.view.state
    width = max(len(each.value) for each in CellState)  # the columns line up
    detail = view.detail
    if state is CellState.TRAINING:
        total = row.cell.config.get("epochs")
        detail = f"epoch {view.epochs_done + 1} of {total}" if total else "training"
    elif state in RESUMABLE and view.epochs_done:
        detail = f"{detail}; {view.epochs_done} epoch(s) committed".lstrip("; ")
    if state is CellState.CANCELLED:
        detail = f"{detail}; launch again to resume".lstrip("; ")
    lines = [
        f"  {state.value:<{width}} {view.job_id or '-':<12} {row.cell.name}  {detail}".rstrip()
    ]
    if state.is_bad_news or state is CellState.INTERRUPTED:
        from mnistsweep.sweep.layout import SweepLayout

        logs = scheduler.task_logs(sweep_dir, [view.job_id] if view.job_id else [])
        error_file = SweepLayout(sweep_dir).run(row.cell).error
        shown = logs[0] if logs else (error_file if error_file.is_file() else None)
        if shown is not None:
            lines.append(f"  {'':<{width}} {'':<12} log: {shown}")
    return lines


def warn(warnings: list[str]) -> None:
    from mnistsweep.cli import one_line

    for warning in warnings:
        print(f"warning: {one_line(warning, 1000)}", file=sys.stderr)


def run_cancel(args: argparse.Namespace) -> int:
    from mnistsweep.execute import scheduler
    from mnistsweep.sweep import guard

    guard.read_record(args.sweep_dir)
    cancelled = scheduler.cancel_jobs(args.sweep_dir)
    warn(cancelled.warnings)
    console.print(
        f"cancelled {len(cancelled.arrays)} job(s): {' '.join(cancelled.arrays) or '-'}",
        markup=False,
    )
    if cancelled.arrays:
        console.print("the cells keep their committed epochs; launch again to resume them")
    return 0


def run_logs(args: argparse.Namespace) -> int:
    from mnistsweep.execute import scheduler
    from mnistsweep.sweep import guard
    from mnistsweep.sweep.layout import SweepLayout

    cell = find_cell(guard.recorded_cells(args.sweep_dir), args.cell)
    jobs = scheduler.load_jobs(args.sweep_dir)
    warn(jobs.problems)
    paths = scheduler.task_logs(args.sweep_dir, jobs.jobs_of(cell.id))
    error_file = SweepLayout(args.sweep_dir).run(cell).error
    if error_file.is_file() and not error_file.is_symlink():
        paths.append(error_file)
    if not paths:
        console.print(f"{cell.name}: no task log yet (not submitted to SLURM, or not started)")
        return 0
    for path in paths:
        console.print(f"==> {path} <==", markup=False)
        console.print(tail(path, args.lines), markup=False, end="")
    return 0


def find_cell(cells: list[Cell], wanted: str) -> Cell:
    """A cell by id, readable name or folder name."""
    from mnistsweep.errors import MnistsweepError

    wanted = wanted.rstrip("/").rsplit("/", 1)[-1]
    for cell in cells:
        if wanted in (cell.id, cell.name, cell.dirname):
            return cell
    examples = ", ".join(cell.name for cell in cells[:3])
    raise MnistsweepError(
        f"{wanted}: no such cell in this sweep; give an id, a name (e.g. {examples}) "
        "or a folder name under runs/"
    )


def tail(path: Path, lines: int) -> str:
    from mnistsweep import fsio

    text = fsio.read_text(path) or ""
    return "".join(text.splitlines(keepends=True)[-lines:])
