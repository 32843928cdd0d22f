"""Send a sweep's unfinished cells to an executor (local or SLURM) through submitit.

Planning (which cells still need training, how they are packed into jobs) is separate from
submitting, so `--dry-run` shows exactly what a real launch would do.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mnistsweep.errors import MnistsweepError
from mnistsweep.execute.job import CellBatch
from mnistsweep.sweep import guard
from mnistsweep.sweep.layout import SweepLayout
from mnistsweep.sweep.rundir import FINAL_STATUSES, RunFiles
from mnistsweep.sweep.spec import Cell, Spec

LOCAL_TIMEOUT_MIN = 7 * 24 * 60  # submitit's local default (2 minutes) would kill real trainings


@dataclass(frozen=True)
class Plan:
    spec: Spec
    backend: str
    sweep_dir: Path
    statuses: dict[str, str]  # cell id -> completed | diverged | failed | todo
    batches: list[list[Cell]]  # what each job trains
    retried: frozenset[str] = frozenset()  # ids of todo cells whose last attempt failed

    @property
    def todo(self) -> list[Cell]:
        return [cell for batch in self.batches for cell in batch]

    def count(self, status: str) -> int:
        return sum(1 for value in self.statuses.values() if value == status)


def resolve_backend(requested: str) -> str:
    if requested == "auto":
        return "slurm" if shutil.which("sbatch") else "local"
    if requested == "slurm" and not shutil.which("sbatch"):
        raise MnistsweepError("executor slurm: `sbatch` is not on PATH; use --executor local")
    return requested


def parse_only(spec: Spec, selections: Sequence[str]) -> dict[str, list[Any]]:
    """`--only KEY=V1,V2` (repeatable) -> {KEY: [V1, V2]}, each value one the sweep's axis takes,
    so a typo cannot silently select nothing."""
    chosen: dict[str, list[Any]] = {}
    values = spec.axis_values
    for selection in selections:
        key, separator, listed = selection.partition("=")
        if not separator or not listed:
            raise MnistsweepError(f"--only {selection}: expected AXIS=VALUE[,VALUE...]")
        if key not in values:
            raise MnistsweepError(
                f"{spec.path}: --only {key}: not an axis of this sweep; axes: {', '.join(values)}"
            )
        for text in listed.split(","):
            value = yaml.safe_load(text)
            if value not in values[key]:
                allowed = ", ".join("null" if v is None else str(v) for v in values[key])
                raise MnistsweepError(
                    f"{spec.path}: --only {key}={text}: the sweep has no such value; "
                    f"allowed: {allowed}"
                )
            chosen.setdefault(key, []).append(value)
    return chosen


def plan_launch(
    spec: Spec,
    results_dir: Path,
    backend: str,
    retry_failed: bool = False,
    only: Mapping[str, Sequence[Any]] | None = None,
) -> Plan:
    """Which cells need training (status "todo"); with `only`, the other cells are left out
    of this launch ("not selected") and stay for a later one."""
    backend = resolve_backend(backend)
    sweep_dir = results_dir / spec.name
    guard.check_same_spec(SweepLayout(sweep_dir), spec)
    statuses: dict[str, str] = {}
    todo: list[Cell] = []
    retried: set[str] = set()
    started = run_folders(sweep_dir)
    for cell in spec.cells():
        status = None
        if cell.dirname in started:
            status = RunFiles(SweepLayout(sweep_dir).run(cell).root).status()
        if status in FINAL_STATUSES or (status == "failed" and not retry_failed):
            statuses[cell.id] = status
        elif only and any(cell.config[key] not in chosen for key, chosen in only.items()):
            statuses[cell.id] = "not selected"
        else:
            statuses[cell.id] = "todo"
            todo.append(cell)
            if status == "failed":
                retried.add(cell.id)
    batches = pack(todo, cells_per_job(spec, backend, len(todo)))
    return Plan(spec, backend, sweep_dir, statuses, batches, frozenset(retried))


def archive_failure(plan: Plan, cell: Cell) -> None:
    """Before a retry: keep the failed attempt's record aside, so the new attempt's result is
    the only result.json and the old error stays readable."""
    RunFiles(SweepLayout(plan.sweep_dir).run(cell).root).archive_failure()


def run_folders(sweep_dir: Path) -> set[str]:
    """The run folders' names, listed once, so only cells that have one are looked at: a fresh
    sweep of 1,000 cells costs one listing, not 1,000 failed opens (round trips on a shared
    filesystem)."""
    try:
        return set(os.listdir(sweep_dir / "runs"))
    except FileNotFoundError:
        return set()


def cells_per_job(spec: Spec, backend: str, todo: int) -> int:
    """SLURM: as the spec says. Local: one job per parallel slot (each imports Keras once)."""
    if spec.executor.cells_per_job is not None or backend == "slurm":
        return spec.executor.cells_per_job or 1
    return max(1, math.ceil(todo / spec.executor.local_parallel))


def pack(cells: Sequence[Cell], size: int) -> list[list[Cell]]:
    return [list(cells[start : start + size]) for start in range(0, len(cells), size)]


def local_gpu_count() -> int:
    """submitit's local executor hides GPUs unless told how many to pass on."""
    if not shutil.which("nvidia-smi"):
        return 0
    listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
    return sum(1 for line in listing.stdout.splitlines() if line.startswith("GPU "))


def make_local_executor(plan: Plan):
    import submitit

    executor = submitit.LocalExecutor(folder=plan.sweep_dir / "submitit")
    executor.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN, gpus_per_node=local_gpu_count())
    return executor


def run_local(plan: Plan, data_dir: Path | None, progress) -> list:
    """Run the batches as local submitit jobs, at most `local_parallel` at once."""
    executor = make_local_executor(plan)
    waiting = list(plan.batches)
    running: list = []
    finished: list = []
    try:
        while waiting or running:
            while waiting and len(running) < plan.spec.executor.local_parallel:
                running.append(
                    executor.submit(
                        CellBatch(),
                        str(plan.sweep_dir),
                        waiting.pop(0),
                        str(data_dir) if data_dir else None,
                        plan.spec.executor.concurrent_cells,
                    )
                )
            progress()
            time.sleep(0.5)
            for job in [job for job in running if job.done()]:
                running.remove(job)
                finished.append(job)
        progress()
    except KeyboardInterrupt:
        for job in running:
            job.cancel(check=False)
        raise
    return finished
