"""What each command does, in the words a user sees: one function per command of the CLI."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mnistsweep.errors import MnistsweepError
from mnistsweep.execute import plan as launching
from mnistsweep.execute.job import run_dir
from mnistsweep.sweep import guard
from mnistsweep.sweep.rundir import RunFiles
from mnistsweep.sweep.spec import Cell, SpecError, load_spec, parse_spec

console = Console(highlight=False, soft_wrap=True)


def launch(
    spec_path: Path,
    *,
    executor: str | None,
    results_dir: Path,
    data_dir: Path | None,
    dry_run: bool,
    wait: bool,
    retry_failed: bool,
    allow_large: bool,
    only: list[str] | None = None,
    concurrent_cells: int | None = None,
) -> int:
    spec = load_spec(spec_path, allow_large=allow_large)
    if concurrent_cells is not None:  # e.g. a spec made for GPU nodes, run on a CPU
        spec = replace(spec, executor=replace(spec.executor, concurrent_cells=concurrent_cells))
    plan = launching.plan_launch(
        spec,
        results_dir,
        executor or spec.executor.backend,
        retry_failed,
        launching.parse_only(spec, only or []),
    )
    describe_plan(plan)
    if dry_run:
        list_cells(plan)
        if plan.backend == "slurm":
            from mnistsweep.execute import slurm

            console.print("\nsbatch script of the first array:\n")
            console.print(slurm.preview_script(plan), markup=False)
        return 0
    if not plan.todo:
        console.print("nothing to train: every selected cell has a result")
        return aggregate(plan.sweep_dir) if plan.count("completed") else 0
    from mnistsweep.train import data

    data.load(data_dir)  # fail here, not in every job, when the data is missing
    guard.record_spec(plan.sweep_dir, spec)
    for cell in plan.todo:
        if cell.id in plan.retried:
            RunFiles(run_dir(plan.sweep_dir, cell)).archive_failure()
    if plan.backend == "slurm":
        from mnistsweep.execute import slurm

        jobs = slurm.submit(plan, data_dir)
        arrays = slurm.array_ids(jobs)
        console.print(
            f"submitted {len(plan.todo)} cells in {len(jobs)} job(s) as {len(arrays)} array(s): "
            f"{', '.join(arrays)}"
        )
        if not wait:
            console.print(f"follow with: python -m mnistsweep status {plan.sweep_dir}")
            return 0
        slurm.wait(jobs, progress_bar(plan))
    else:
        launching.run_local(plan, data_dir, progress_bar(plan))
    return report_outcome(plan, data_dir)


def describe_plan(plan: launching.Plan) -> None:
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


def list_cells(plan: launching.Plan) -> None:
    for cell in plan.spec.cells():
        console.print(f"  {plan.statuses[cell.id]:>12}  {cell.id}  {cell.name}", markup=False)


def progress_bar(plan: launching.Plan) -> Callable[[], bool]:
    """A callable that shows progress from the result files of the cells to train (a live bar on
    a terminal, a line per change in a log) and says whether all of them have finished."""
    todo_files = [RunFiles(run_dir(plan.sweep_dir, cell)) for cell in plan.todo]
    progress = Progress(
        TextColumn("training"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    )
    task = progress.add_task("cells", total=len(todo_files), failed=0)
    progress.start()
    last_shown = [-1]

    def refresh() -> bool:
        statuses = [files.status() for files in todo_files]
        finished = sum(1 for status in statuses if status is not None)
        progress.update(task, completed=finished, failed=statuses.count("failed"))
        if not console.is_terminal and finished != last_shown[0]:
            console.print(
                f"{finished}/{len(todo_files)} cells finished, {statuses.count('failed')} failed"
            )
            last_shown[0] = finished
        if finished == len(todo_files):
            progress.stop()
        return finished == len(todo_files)

    return refresh


def report_outcome(plan: launching.Plan, data_dir: Path | None) -> int:
    statuses = [RunFiles(run_dir(plan.sweep_dir, cell)).status() for cell in plan.todo]
    failed = [cell for cell, status in zip(plan.todo, statuses, strict=True) if status == "failed"]
    console.print(
        f"finished: {statuses.count('completed')} completed, "
        f"{statuses.count('diverged')} diverged, {len(failed)} failed, "
        f"{statuses.count(None)} without a result"
    )
    for cell in failed:
        error = RunFiles(run_dir(plan.sweep_dir, cell)).read_result().get("error")
        console.print(f"  failed {cell.name}: {error}", markup=False)
    aggregate(plan.sweep_dir)
    report(plan.sweep_dir, top_k=None, data_dir=data_dir)
    return 1 if failed or None in statuses else 0


def aggregate(sweep_dir: Path) -> int:
    record = guard.read_record(sweep_dir)
    from mnistsweep.analysis import tables  # pandas: not on the submit-and-return path
    from mnistsweep.analysis import runs as sweep_runs

    runs = sweep_runs.load_runs(sweep_dir)
    for problem in runs.problems:
        console.print(f"[yellow]warning[/]: {problem}")
    table = tables.summarize(runs.frame, record["axes"])
    csv_path = sweep_dir / "summary.csv"
    table.to_csv(csv_path, index=False)
    if table.empty:
        console.print("no completed runs yet")
        return 0
    print(table.to_markdown(index=False, floatfmt=".4f"))
    console.print(
        f"\n{int(table['n'].sum())} runs in {len(table)} configurations "
        f"(sorted by mean validation accuracy); written to {csv_path}"
    )
    return 0


def report(sweep_dir: Path, *, top_k: int | None, data_dir: Path | None) -> int:
    from mnistsweep.report.build import write_report

    written = write_report(sweep_dir, top_k, data_dir=data_dir)
    console.print(f"report: {written[0]} and {written[1]} ({len(written) - 2} more files)")
    return 0


def status(sweep_dir: Path) -> int:
    from mnistsweep.execute import slurm

    record = guard.read_record(sweep_dir)
    counts = slurm.cell_states(sweep_dir)
    console.print(
        f"sweep {record['name']}: "
        + ", ".join(f"{n} {state}" for state, n in counts.totals.items())
    )
    for line in counts.lines:
        console.print(line, markup=False)
    return 0


def cancel(sweep_dir: Path) -> int:
    from mnistsweep.execute import slurm

    guard.read_record(sweep_dir)
    cancelled = slurm.cancel(sweep_dir)
    console.print(f"cancelled {len(cancelled)} job(s): {' '.join(cancelled) or '-'}")
    return 0


def train_one(
    *,
    spec_path: Path | None,
    cell_key: str | None,
    settings: list[str],
    out: Path | None,
    data_dir: Path | None,
    results_dir: Path,
) -> int:
    cell = choose_cell(spec_path, cell_key, settings)
    target = out or results_dir / "single" / "runs" / cell.dirname
    console.print(f"training {cell.name} ({cell.id}) in {target}")
    started = time.perf_counter()
    from mnistsweep.train import trainer

    result = trainer.run_cell(cell, target, data_dir)
    metrics = result["metrics"]
    console.print(
        f"{result['status']} in {time.perf_counter() - started:.1f} s: "
        f"test accuracy {metrics.get('test_accuracy', float('nan')):.4f}, "
        f"best validation accuracy {metrics.get('best_val_accuracy', float('nan')):.4f} "
        f"(epoch {metrics.get('best_epoch')})"
    )
    return 0 if result["status"] == "completed" else 1


def choose_cell(spec_path: Path | None, cell_key: str | None, settings: list[str]) -> Cell:
    if spec_path is not None:
        if not cell_key:
            raise MnistsweepError("train --spec needs --cell ID-or-NAME (see launch --dry-run)")
        cells = load_spec(spec_path).cells()
        for cell in cells:
            if cell_key in (cell.id, cell.name):
                return cell
        raise MnistsweepError(f"{spec_path}: no cell {cell_key!r}; launch --dry-run lists them")
    train: dict = {}
    for setting in settings:
        key, separator, value = setting.partition("=")
        if not separator:
            raise SpecError(f"--set {setting}: expected KEY=VALUE, e.g. --set arch=mlp")
        train[key] = yaml.safe_load(value)
    spec = parse_spec({"name": "single", "train": train}, Path("--set"))
    return Cell(spec.cells()[0].config, axes=tuple(train))
