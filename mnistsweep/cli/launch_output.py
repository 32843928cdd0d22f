"""What a launch prints: the plan, its news while it runs, and its outcome (the table and the
report once every cell ended)."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mnistsweep.cli.common import console
from mnistsweep.cli.progress import progress_bar

if TYPE_CHECKING:
    from mnistsweep.execute.backend import LaunchOutcome
    from mnistsweep.execute.launch import DryRun, LaunchRequest
    from mnistsweep.execute.plan import Plan
    from mnistsweep.sweep.spec import Cell

INTERRUPTED = "interrupted: finished runs are kept; launch again to resume the rest"
# What the table and the report after the jobs import (pandas, matplotlib, scipy: seconds from
# a cold start), imported while the launcher waits for the jobs instead of after them.
REPORT_MODULES = ("mnistsweep.analysis.tables", "mnistsweep.report.build")


def import_while_waiting(modules: Sequence[str]) -> None:
    def load() -> None:
        try:
            for module in modules:
                importlib.import_module(module)
        except Exception:  # the report imports them again, and says what failed
            pass

    threading.Thread(target=load, name="report-imports", daemon=True).start()


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
        import_while_waiting(REPORT_MODULES)
        if detached:
            self.interrupted_message = (
                "interrupted: the jobs go on; follow them with `python -m mnistsweep status "
                f"{plan.sweep_dir}` or stop them with `python -m mnistsweep cancel "
                f"{plan.sweep_dir}`"
            )
        return progress_bar(plan.sweep_dir, cells)


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
    if outcome.jobs_left and outcome.feeder:
        console.print(
            f"{outcome.jobs_left} job(s) wait for room in the queue ({outcome.queue_limits}): "
            f"feeder job {outcome.feeder} submits them as room frees; nobody needs to stay"
        )
    elif outcome.jobs_left:
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
    code = 1 if kept_badly(plan) else 0
    if plan.count("completed"):
        from mnistsweep.cli.results import aggregate, report
        from mnistsweep.sweep.layout import SweepLayout

        code = max(code, aggregate(plan.sweep_dir))
        layout = SweepLayout(plan.sweep_dir)
        if not (layout.report_md.is_file() and layout.report_html.is_file()):
            report(plan.sweep_dir, top_k=None, data_dir=data_dir)
    return code


def kept_badly(plan: Plan) -> int:
    """Cells the plan keeps as they are although they ended badly (failed, kept until
    --retry-failed; damaged by a foreign folder): the launch exits 1 for them too."""
    from mnistsweep.sweep.state import CellState

    return sum(
        1 for state in plan.statuses.values() if isinstance(state, CellState) and state.is_bad_news
    )


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


def report_outcome(outcome: LaunchOutcome, data_dir: Path | None) -> int:
    from mnistsweep.cli.results import aggregate, report
    from mnistsweep.sweep.state import CellState

    counts, elsewhere = outcome.counts, outcome.elsewhere
    console.print(
        f"finished: {counts[CellState.COMPLETED]} completed, {counts[CellState.DIVERGED]} "
        f"diverged, {counts[CellState.FAILED]} failed, {outcome.unfinished} without a result"
        + (f", {oom} out of memory" if (oom := counts[CellState.OUT_OF_MEMORY]) else "")
        + (f", {stopped} stopped early" if (stopped := counts[CellState.STOPPED_EARLY]) else "")
        + (f", {elsewhere} still training in another launch" if elsewhere else "")
    )
    for cell, view in outcome.ended_badly:
        console.print(f"  {view.state} {cell.name}: {view.detail}", markup=False)
    aggregate(outcome.plan.sweep_dir)
    report(outcome.plan.sweep_dir, top_k=None, data_dir=data_dir)
    return 1 if outcome.ended_badly or outcome.unfinished or kept_badly(outcome.plan) else 0
