"""The progress of a launch's cells on the console: a live bar on a terminal, a line per change
in a log."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mnistsweep.cli.common import console

if TYPE_CHECKING:
    from mnistsweep.sweep.spec import Cell


def progress_bar(sweep_dir: Path, cells: Sequence[Cell]) -> Callable[[], bool]:
    """A callable that shows progress from the result files of the cells to train (a live bar on
    a terminal, a line per change in a log) and says whether all of them have finished."""
    from mnistsweep.sweep import state as cell_state
    from mnistsweep.sweep.layout import SweepLayout

    layout = SweepLayout(sweep_dir)
    todo_runs = [layout.run(cell) for cell in cells]
    progress = Progress(
        TextColumn("training"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    )
    task = progress.add_task("cells", total=len(todo_runs), failed=0)
    progress.start()
    last_shown = [-1]

    def refresh() -> bool:
        states = [cell_state.derive(run).state for run in todo_runs]
        finished = sum(1 for state in states if state.is_final or state.is_ended_badly)
        failed = sum(1 for state in states if state.is_ended_badly)
        progress.update(task, completed=finished, failed=failed)
        if not console.is_terminal and finished != last_shown[0]:
            console.print(f"{finished}/{len(todo_runs)} cells finished, {failed} failed")
            last_shown[0] = finished
        if finished == len(todo_runs):
            progress.stop()
        return finished == len(todo_runs)

    return refresh
