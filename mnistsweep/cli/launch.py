"""`launch`: train a sweep's unfinished cells, here or on SLURM; then aggregate and report.

This module declares the options, applies them to the spec through the spec's own schema and
prints; execute.launch runs the launch and hands back its outcome."""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mnistsweep.cli.common import RESULTS_ENV, add_data_dir, console, default_results_dir
from mnistsweep.execute.backends import AUTO, BACKENDS

if TYPE_CHECKING:
    from mnistsweep.execute.backend import LaunchOutcome
    from mnistsweep.execute.launch import DryRun, LaunchRequest
    from mnistsweep.execute.plan import Plan
    from mnistsweep.sweep.spec import Cell, Spec

INTERRUPTED = "interrupted: finished runs are kept; launch again to resume the rest"


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    launch = commands.add_parser("launch", help="train every unfinished cell of a sweep spec")
    launch.add_argument("spec", type=Path, help="sweep spec (YAML), e.g. sweeps/quick.yaml")
    launch.add_argument("--executor", choices=(AUTO, *BACKENDS), help="overrides executor.backend")
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
        metavar="N",
        help="overrides executor.concurrent_cells: cells one job trains at once "
        "(several fill a GPU; on a CPU, 1); bounded by the spec's schema",
    )
    launch.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="AXIS=V1[,V2]",
        help="train only the cells with these axis values (repeatable), e.g. "
        "--only arch=linear,mlp; the rest stay for a later launch",
    )
    launch.set_defaults(func=run, interrupted_message=INTERRUPTED)


def run(args: argparse.Namespace) -> int:
    from mnistsweep.execute import launch

    request = make_request(args)
    events = ConsoleEvents()
    if args.dry_run:
        return show_dry_run(launch.dry_run(request, events))
    try:
        outcome = launch.launch(request, events)
    except KeyboardInterrupt:
        print(events.interrupted_message, file=sys.stderr)
        return 130
    return show_outcome(outcome, request)


def make_request(args: argparse.Namespace) -> LaunchRequest:
    from mnistsweep.execute import plan as planning
    from mnistsweep.execute.launch import LaunchRequest
    from mnistsweep.sweep.spec import load_spec

    spec = with_overrides(
        load_spec(args.spec, allow_large=args.allow_large),
        {"backend": args.executor, "concurrent_cells": number(args.concurrent_cells)},
    )
    return LaunchRequest(
        spec,
        args.results_dir or default_results_dir(),
        args.data_dir,
        args.retry_failed,
        planning.parse_only(spec, args.only),
        args.wait,
    )


def number(text: str | None) -> int | str | None:
    """An integer as given; anything else is passed on for the schema to refuse."""
    return int(text) if text is not None and re.fullmatch(r"[+-]?[0-9]+", text.strip()) else text


def with_overrides(spec: Spec, options: dict[str, object]) -> Spec:
    """The spec with command-line values for executor keys, checked by the spec's own schema
    (one bound per option); None keeps the spec's value. A bad value is one error line."""
    from pydantic import ValidationError

    from mnistsweep.errors import MnistsweepError
    from mnistsweep.sweep.spec import ExecutorOptions
    from mnistsweep.sweep.yaml_loader import shown

    given = {key: value for key, value in options.items() if value is not None}
    try:
        return replace(spec, executor=replace(spec.executor, **given))  # type: ignore[arg-type]
    except ValidationError as invalid:
        key = str(invalid.errors()[0]["loc"][0])
        field = ExecutorOptions.__pydantic_fields__[key]  # type: ignore[attr-defined]
        raise MnistsweepError(
            f"--{key.replace('_', '-')}: got {shown(given[key])}; expected {field.description}"
        ) from None


class ConsoleEvents:
    """The launch's news on the console; what Ctrl-C would leave behind, as it changes."""

    def __init__(self) -> None:
        self.interrupted_message = INTERRUPTED

    def planned(self, plan: Plan) -> None:
        describe_plan(plan)
        describe_covering(plan)

    def say(self, line: str) -> None:
        console.print(line, markup=False)

    def watch(self, plan: Plan, cells: Sequence[Cell], detached: bool) -> Callable[[], bool]:
        if detached:
            self.interrupted_message = (
                "interrupted: the jobs go on; follow them with `python -m mnistsweep status "
                f"{plan.sweep_dir}` or stop them with `python -m mnistsweep cancel "
                f"{plan.sweep_dir}`"
            )
        return progress_bar(plan, cells)


def show_dry_run(dry_run: DryRun) -> int:
    describe_plan(dry_run.plan)
    for cell in dry_run.plan.spec.cells():
        console.print(
            f"  {dry_run.plan.statuses[cell.id]:>12}  {cell.id}  {cell.name}", markup=False
        )
    for line in dry_run.details:
        console.print(line, markup=False)
    return 0


def show_outcome(outcome: LaunchOutcome, request: LaunchRequest) -> int:
    plan = outcome.plan
    if outcome.jobs_left:
        console.print(
            f"{outcome.jobs_left} job(s) not submitted: the queue is full for you "
            f"({outcome.queue_limits}); launch again when some jobs have ended (it submits the "
            "rest), or launch with --wait to submit them as room frees"
        )
    if not outcome.waited_for:
        return nothing_to_train(plan, request.data_dir)
    if outcome.ended is None:
        console.print(f"follow with: python -m mnistsweep status {plan.sweep_dir}")
        return 0
    return report_outcome(outcome, request.data_dir)


def nothing_to_train(plan: Plan, data_dir: Path | None) -> int:
    """The table again, and the report where it is missing (deleted, or never written)."""
    if plan.covering:
        console.print("nothing to train here: the other selected cells are in live hands")
    else:
        console.print("nothing to train: every selected cell has a result")
    if plan.count("completed"):
        from mnistsweep.cli.results import aggregate, report
        from mnistsweep.sweep.layout import SweepLayout

        code = aggregate(plan.sweep_dir)
        layout = SweepLayout(plan.sweep_dir)
        if not (layout.report_md.is_file() and layout.report_html.is_file()):
            report(plan.sweep_dir, top_k=None, data_dir=data_dir)
        return code
    return 0


def describe_covering(plan: Plan, shown: int = 6) -> None:
    """Cells that live jobs of the sweep (or a process here) still cover: not submitted again.
    One line per array, naming a few of its tasks."""
    arrays: dict[str, list[str]] = {}
    for job_id in sorted(plan.covering_jobs()):
        arrays.setdefault(job_id.split("_")[0], []).append(job_id)
    for array, tasks in arrays.items():
        cells = sum(plan.covering_jobs()[task] for task in tasks)
        named = ", ".join(tasks[:shown]) + (
            f", ... ({len(tasks)} jobs)" if len(tasks) > shown else ""
        )
        who = f"job(s) {named}" if array else "a process on this machine"
        console.print(f"leaving {cells} cell(s) to {who}: queued or running, not submitted again")


def describe_plan(plan: Plan) -> None:
    done, failed, diverged = plan.count("completed"), plan.count("failed"), plan.count("diverged")
    console.print(
        f"sweep [bold]{plan.spec.name}[/]: {len(plan.statuses)} cells — {done} completed, "
        f"{diverged} diverged, {failed} failed (kept; --retry-failed trains them again), "
        f"{len(plan.todo)} to train in {len(plan.batches)} job(s) on the {plan.backend.name} "
        "executor"
    )
    if done + diverged:
        console.print(f"skipping {done + diverged} cells whose result.json is complete")
    if plan.count("not selected"):
        console.print(f"leaving {plan.count('not selected')} unfinished cells out (--only)")


def progress_bar(plan: Plan, cells: Sequence[Cell]) -> Callable[[], bool]:
    """A callable that shows progress from the result files of the cells to train (a live bar on
    a terminal, a line per change in a log) and says whether all of them have finished."""
    from mnistsweep.sweep import state as cell_state
    from mnistsweep.sweep.layout import SweepLayout

    layout = SweepLayout(plan.sweep_dir)
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


def report_outcome(outcome: LaunchOutcome, data_dir: Path | None) -> int:
    from mnistsweep.cli.results import aggregate, report
    from mnistsweep.sweep.state import CellState

    views = outcome.ended or ()
    counts = Counter(view.state for _, view in views)
    elsewhere = sum(n for state, n in counts.items() if state.is_live)  # another launch has them
    unfinished = sum(
        n
        for state, n in counts.items()
        if not (state.is_final or state.is_ended_badly or state.is_live)
    )
    console.print(
        f"finished: {counts[CellState.COMPLETED]} completed, {counts[CellState.DIVERGED]} "
        f"diverged, {counts[CellState.FAILED]} failed, {unfinished} without a result"
        + (f", {stopped} stopped early" if (stopped := counts[CellState.STOPPED_EARLY]) else "")
        + (f", {elsewhere} still training in another launch" if elsewhere else "")
    )
    for cell, view in views:
        if view.state.is_ended_badly:
            console.print(f"  {view.state} {cell.name}: {view.detail}", markup=False)
    aggregate(outcome.plan.sweep_dir)
    report(outcome.plan.sweep_dir, top_k=None, data_dir=data_dir)
    bad = sum(1 for _, view in views if view.state.is_ended_badly)
    return 1 if bad or unfinished else 0
