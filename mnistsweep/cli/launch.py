"""`launch`: train a sweep's unfinished cells, here or on SLURM; then aggregate and report."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mnistsweep.cli.common import (
    RESULTS_ENV,
    add_data_dir,
    console,
    default_results_dir,
    positive_int,
)

if TYPE_CHECKING:
    from mnistsweep.execute.plan import Plan


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    launch = commands.add_parser("launch", help="train every unfinished cell of a sweep spec")
    launch.add_argument("spec", type=Path, help="sweep spec (YAML), e.g. sweeps/quick.yaml")
    launch.add_argument(
        "--executor", choices=("auto", "local", "slurm"), help="overrides executor.backend"
    )
    launch.add_argument(
        "--results-dir",
        type=Path,
        default=None,
        help=f"default: ${RESULTS_ENV} or ./results; a sweep NAME lives in DIR/NAME",
    )
    add_data_dir(launch)
    launch.add_argument(
        "--dry-run",
        action="store_true",
        help="validate and list the cells (and the sbatch script) without running",
    )
    launch.add_argument(
        "--wait", action="store_true", help="SLURM: stay until every job ends, then aggregate"
    )
    launch.add_argument("--retry-failed", action="store_true", help="train failed cells again")
    launch.add_argument(
        "--allow-large", action="store_true", help="accept a grid above the cell limit (10,000)"
    )
    launch.add_argument(
        "--concurrent-cells",
        type=positive_int,
        metavar="N",
        help="overrides executor.concurrent_cells: cells one job trains at once "
        "(several fill a GPU; on a CPU, 1)",
    )
    launch.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="AXIS=V1[,V2]",
        help="train only the cells with these axis values (repeatable), e.g. "
        "--only arch=linear,mlp; the rest stay for a later launch",
    )
    launch.set_defaults(
        func=run,
        interrupted_message="interrupted: finished runs are kept; launch again to resume the rest",
    )


def run(args: argparse.Namespace) -> int:
    from mnistsweep.execute import plan as planning
    from mnistsweep.sweep import guard
    from mnistsweep.sweep.layout import SweepLayout
    from mnistsweep.sweep.spec import load_spec

    spec = load_spec(args.spec, allow_large=args.allow_large)
    if args.concurrent_cells is not None:  # e.g. a spec made for GPU nodes, run on a CPU
        executor = replace(spec.executor, concurrent_cells=args.concurrent_cells)
        spec = replace(spec, executor=executor)
    plan = planning.plan_launch(
        spec,
        args.results_dir or default_results_dir(),
        args.executor or spec.executor.backend,
        args.retry_failed,
        planning.parse_only(spec, args.only),
    )
    describe_plan(plan)
    if args.dry_run:
        list_cells(plan)
        if plan.backend == "slurm":
            from mnistsweep.execute import slurm

            console.print("\nsbatch script of the first array:\n")
            console.print(slurm.preview_script(plan), markup=False)
        return 0
    if not plan.todo:
        console.print("nothing to train: every selected cell has a result")
        if plan.count("completed"):
            from mnistsweep.cli.results import aggregate

            return aggregate(plan.sweep_dir)
        return 0
    from mnistsweep.train import data

    data.load(args.data_dir)  # fail here, not in every job, when the data is missing
    guard.record_spec(SweepLayout(plan.sweep_dir), spec)
    for cell in plan.todo:
        if cell.id in plan.retried:
            planning.archive_failure(plan, cell)
    if plan.backend == "slurm":
        from mnistsweep.execute import scheduler, slurm

        jobs = slurm.submit(plan, args.data_dir)
        arrays = slurm.array_ids(jobs)
        console.print(
            f"submitted {len(plan.todo)} cells in {len(jobs)} job(s) as {len(arrays)} array(s): "
            f"{', '.join(arrays)}"
        )
        if not args.wait:
            console.print(f"follow with: python -m mnistsweep status {plan.sweep_dir}")
            return 0
        args.interrupted_message = (
            "interrupted: the jobs go on; follow them with `python -m mnistsweep status "
            f"{plan.sweep_dir}` or stop them with `python -m mnistsweep cancel {plan.sweep_dir}`"
        )
        scheduler.wait(jobs, progress_bar(plan))
    else:
        planning.run_local(plan, args.data_dir, progress_bar(plan))
    return report_outcome(plan, args.data_dir)


def describe_plan(plan: Plan) -> None:
    done, failed, diverged = plan.count("completed"), plan.count("failed"), plan.count("diverged")
    console.print(
        f"sweep [bold]{plan.spec.name}[/]: {len(plan.statuses)} cells — {done} completed, "
        f"{diverged} diverged, {failed} failed (kept; --retry-failed trains them again), "
        f"{len(plan.todo)} to train in {len(plan.batches)} job(s) on the {plan.backend} executor"
    )
    if done + diverged:
        console.print(f"skipping {done + diverged} cells whose result.json is complete")
    if plan.count("not selected"):
        console.print(f"leaving {plan.count('not selected')} unfinished cells out (--only)")


def list_cells(plan: Plan) -> None:
    for cell in plan.spec.cells():
        console.print(f"  {plan.statuses[cell.id]:>12}  {cell.id}  {cell.name}", markup=False)


def progress_bar(plan: Plan) -> Callable[[], bool]:
    """A callable that shows progress from the result files of the cells to train (a live bar on
    a terminal, a line per change in a log) and says whether all of them have finished."""
    from mnistsweep.sweep import state as cell_state
    from mnistsweep.sweep.layout import SweepLayout

    layout = SweepLayout(plan.sweep_dir)
    todo_runs = [layout.run(cell) for cell in plan.todo]
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


def report_outcome(plan: Plan, data_dir: Path | None) -> int:
    from collections import Counter

    from mnistsweep.cli.results import aggregate, report
    from mnistsweep.sweep import state as cell_state
    from mnistsweep.sweep.layout import SweepLayout

    layout = SweepLayout(plan.sweep_dir)
    views = [(cell, cell_state.derive(layout.run(cell))) for cell in plan.todo]
    counts = Counter(view.state for _, view in views)
    unfinished = sum(
        n for state, n in counts.items() if not (state.is_final or state.is_ended_badly)
    )
    console.print(
        f"finished: {counts[cell_state.CellState.COMPLETED]} completed, "
        f"{counts[cell_state.CellState.DIVERGED]} diverged, "
        f"{counts[cell_state.CellState.FAILED]} failed, {unfinished} without a result"
    )
    for cell, view in views:
        if view.state.is_ended_badly:
            console.print(f"  {view.state} {cell.name}: {view.detail}", markup=False)
    aggregate(plan.sweep_dir)
    report(plan.sweep_dir, top_k=None, data_dir=data_dir)
    bad = sum(1 for _, view in views if view.state.is_ended_badly)
    return 1 if bad or unfinished else 0
