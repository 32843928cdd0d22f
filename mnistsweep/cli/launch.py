"""`launch`: train a sweep's unfinished cells, here or on SLURM; then aggregate and report."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
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
    from mnistsweep.execute.limits import ClusterLimits
    from mnistsweep.execute.plan import Plan
    from mnistsweep.sweep.layout import SweepLayout
    from mnistsweep.sweep.spec import Cell

LOCK_WAIT_SECONDS = 60  # another launch of the sweep submits in seconds


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
    from mnistsweep.sweep.layout import SweepLayout
    from mnistsweep.sweep.spec import load_spec

    spec = load_spec(args.spec, allow_large=args.allow_large)
    if args.concurrent_cells is not None:  # e.g. a spec made for GPU nodes, run on a CPU
        check_concurrent_cells(args.concurrent_cells)
        executor = replace(spec.executor, concurrent_cells=args.concurrent_cells)
        spec = replace(spec, executor=executor)
    results_dir = args.results_dir or default_results_dir()
    only = planning.parse_only(spec, args.only)

    def make_plan() -> Plan:
        backend = args.executor or spec.executor.backend
        return planning.plan_launch(spec, results_dir, backend, args.retry_failed, only)

    if args.dry_run:
        return dry_run(make_plan(), args.data_dir)
    layout = SweepLayout.of(results_dir, spec.name)
    with launch_lock(layout):
        plan = make_plan()
        describe_plan(plan)
        describe_covering(plan)
        if plan.backend == "local":
            if plan.todo:
                start_local(plan, args.data_dir)
        else:
            from mnistsweep.execute import limits

            if plan.todo:
                warn_about_memory(plan)
            cluster = limits.read_limits(plan.spec.executor.slurm.qos)
            first_round = submit_round(plan, cluster, args.data_dir)
    if plan.backend == "slurm":
        return follow_slurm(plan, first_round, cluster, make_plan, args)
    if not plan.todo:
        return nothing_to_train(plan)
    from mnistsweep.execute.local import run_local

    run_local(plan, args.data_dir, progress_bar(plan, plan.todo))
    return report_outcome(plan, plan.todo, args.data_dir)


def dry_run(plan: Plan, data_dir: Path | None) -> int:
    describe_plan(plan)
    list_cells(plan)
    if plan.backend == "slurm" and plan.batches:
        from mnistsweep.execute import limits, slurm

        warn_about_memory(plan)
        cluster = limits.read_limits(plan.spec.executor.slurm.qos)
        room = limits.room_now(cluster)
        first = min(len(plan.batches), cluster.max_array_size or len(plan.batches), room or 10**9)
        if room is not None and room < len(plan.batches):
            console.print(f"the queue has room for {room} of the {len(plan.batches)} jobs now")
        console.print(f"\nsbatch script of the first submission ({first} job(s)):\n")
        console.print(slurm.render_script(plan, data_dir, max(1, first)), markup=False)
    return 0


def nothing_to_train(plan: Plan) -> int:
    if plan.covering:
        console.print("nothing to train here: the other selected cells are in live hands")
    else:
        console.print("nothing to train: every selected cell has a result")
    if plan.count("completed"):
        from mnistsweep.cli.results import aggregate

        return aggregate(plan.sweep_dir)
    return 0


def start_local(plan: Plan, data_dir: Path | None) -> None:
    """Under the launch lock: check the data, record the spec, set retried failures aside."""
    from mnistsweep.execute import plan as planning
    from mnistsweep.sweep import guard
    from mnistsweep.sweep.layout import SweepLayout
    from mnistsweep.train import data

    data.load(data_dir)  # fail here, not in every job, when the data is missing
    guard.record_spec(SweepLayout(plan.sweep_dir), plan.spec)
    for cell in plan.todo:
        if cell.id in plan.retried:
            planning.archive_failure(plan, cell)


@contextmanager
def launch_lock(layout: SweepLayout) -> Iterator[None]:
    """One launch of a sweep plans and submits at a time, so two cannot both submit its cells.
    A launch that created the sweep folder and fails leaves no folder behind."""
    import contextlib
    import fcntl
    import os
    import time

    from mnistsweep import fsio
    from mnistsweep.errors import MnistsweepError

    created = [f for f in (layout.root, *layout.root.parents) if not (f.exists() or f.is_symlink())]
    descriptor = fsio.open_lock(layout.launch_lock)
    try:
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise MnistsweepError(
                        f"{layout.root}: another launch of this sweep is still submitting; "
                        "launch again once it is done"
                    ) from None
                time.sleep(0.5)
        try:
            yield
        except BaseException:
            if created and os.listdir(layout.root) == [layout.launch_lock.name]:
                layout.launch_lock.unlink()
                for folder in created:  # the sweep folder, then the results folder...
                    with contextlib.suppress(OSError):
                        folder.rmdir()
            raise
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)


def follow_slurm(
    plan: Plan,
    first_round: tuple[list[str], int],
    cluster: ClusterLimits,
    make_plan: Callable[[], Plan],
    args: argparse.Namespace,
) -> int:
    """After the first submission: with --wait, submit what did not fit as room frees (each
    round plans again under the lock, so cells covered by live jobs are never submitted twice),
    then wait for every cell and report."""
    from mnistsweep.execute import limits, scheduler
    from mnistsweep.sweep.layout import SweepLayout

    waited_for = [*plan.todo, *(c for c in plan.spec.cells() if c.id in plan.covering)]
    job_ids, left = first_round
    job_ids = [*sorted(set(plan.covering.values()) - {""}), *job_ids]
    while left:
        if not args.wait:
            console.print(
                f"{left} job(s) not submitted: the queue is full for you ({cluster.describe()}); "
                "launch again when some jobs have ended (it submits the rest), or launch with "
                "--wait to submit them as room frees"
            )
            break
        console.print(f"waiting for room in the queue for {left} more job(s)")
        while not limits.room_now(cluster):
            time.sleep(scheduler.POLL_SECONDS)
        with launch_lock(SweepLayout(plan.sweep_dir)):
            submitted, left = submit_round(make_plan(), cluster, args.data_dir)
        job_ids += submitted
    if not waited_for:
        return nothing_to_train(plan)
    if not args.wait:
        console.print(f"follow with: python -m mnistsweep status {plan.sweep_dir}")
        return 0
    args.interrupted_message = (
        "interrupted: the jobs go on; follow them with `python -m mnistsweep status "
        f"{plan.sweep_dir}` or stop them with `python -m mnistsweep cancel {plan.sweep_dir}`"
    )
    scheduler.wait([JobRef(job_id) for job_id in job_ids], progress_bar(plan, waited_for))
    return report_outcome(plan, waited_for, args.data_dir)


@dataclass(frozen=True)
class JobRef:
    job_id: str


def submit_round(
    plan: Plan, cluster: ClusterLimits, data_dir: Path | None
) -> tuple[list[str], int]:
    """Submit the planned batches the queue has room for; (job ids, batches left over)."""
    from mnistsweep.execute import limits, slurm
    from mnistsweep.execute import plan as planning
    from mnistsweep.sweep import guard
    from mnistsweep.sweep.layout import SweepLayout
    from mnistsweep.train import data

    if not plan.todo:
        return [], 0
    data.load(data_dir)  # fail here, not in every job, when the data is missing
    room = limits.room_now(cluster)
    batches = plan.batches if room is None else plan.batches[:room]
    if not batches:
        return [], len(plan.batches)
    retried = [cell for batch in batches for cell in batch if cell.id in plan.retried]
    set_aside = [planning.archive_failure(plan, cell) for cell in retried]
    try:
        submission = slurm.submit(plan, data_dir, batches, cluster.max_array_size)
    except slurm.SubmissionRefused as refused:
        sent = {cell.id for batch in batches[: len(refused.submitted)] for cell in batch}
        planning.restore_failures(
            moved
            for cell, moves in zip(retried, set_aside, strict=True)
            if cell.id not in sent
            for moved in moves
        )
        if refused.submitted:
            guard.record_spec(SweepLayout(plan.sweep_dir), plan.spec)
            raise slurm.SubmissionRefused(
                f"{refused}; {len(refused.submitted)} job(s) went out before and are recorded: "
                "launch again to submit the rest"
            ) from None
        raise
    guard.record_spec(SweepLayout(plan.sweep_dir), plan.spec)  # only once jobs went out
    cells = sum(len(batch) for batch in submission.batches)
    arrays = submission.arrays
    console.print(
        f"submitted {cells} cells in {len(submission.jobs)} job(s) as {len(arrays)} "
        f"array(s): {', '.join(arrays)}"
    )
    return [str(job.job_id) for job in submission.jobs], len(plan.batches) - len(batches)


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


def warn_about_memory(plan: Plan) -> None:
    from mnistsweep.execute import slurm

    warning = slurm.memory_warning(plan)
    if warning:
        console.print(f"warning: {warning}", markup=False)


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


def report_outcome(plan: Plan, cells: Sequence[Cell], data_dir: Path | None) -> int:
    from collections import Counter

    from mnistsweep.cli.results import aggregate, report
    from mnistsweep.sweep import state as cell_state
    from mnistsweep.sweep.layout import SweepLayout

    layout = SweepLayout(plan.sweep_dir)
    views = [(cell, cell_state.derive(layout.run(cell))) for cell in cells]
    counts = Counter(view.state for _, view in views)
    elsewhere = sum(n for state, n in counts.items() if state.is_live)  # another launch has them
    unfinished = sum(
        n
        for state, n in counts.items()
        if not (state.is_final or state.is_ended_badly or state.is_live)
    )
    console.print(
        f"finished: {counts[cell_state.CellState.COMPLETED]} completed, "
        f"{counts[cell_state.CellState.DIVERGED]} diverged, "
        f"{counts[cell_state.CellState.FAILED]} failed, {unfinished} without a result"
        + (f", {elsewhere} still training in another launch" if elsewhere else "")
    )
    for cell, view in views:
        if view.state.is_ended_badly:
            console.print(f"  {view.state} {cell.name}: {view.detail}", markup=False)
    aggregate(plan.sweep_dir)
    report(plan.sweep_dir, top_k=None, data_dir=data_dir)
    bad = sum(1 for _, view in views if view.state.is_ended_badly)
    return 1 if bad or unfinished else 0


def check_concurrent_cells(value: int) -> None:
    """--concurrent-cells within the spec schema's own bound for executor.concurrent_cells."""
    from annotated_types import Le

    from mnistsweep.errors import MnistsweepError
    from mnistsweep.sweep.spec import ExecutorOptions

    field = ExecutorOptions.__pydantic_fields__["concurrent_cells"]  # type: ignore[attr-defined]
    highest = min(int(bound.le) for bound in field.metadata if isinstance(bound, Le))  # type: ignore[call-overload]
    if value > highest:
        raise MnistsweepError(f"--concurrent-cells: got {value}; expected {field.description}")
