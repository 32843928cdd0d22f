"""The scheduler seen from a sweep: sacct in one call for every array, cancel, wait, the cluster's
limits. Nothing here submits (that is execute.slurm).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from mnistsweep.execute.job import run_dir
from mnistsweep.sweep.layout import SweepLayout
from mnistsweep.sweep.rundir import RunFiles

POLL_SECONDS = 5.0
# sacct states after which a task will not run again by itself.
ENDED_STATES = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "OUT_OF_MEMORY",
    "NODE_FAIL",
    "BOOT_FAIL",
    "DEADLINE",
    "PREEMPTED",
}


def max_array_size() -> int | None:
    """The cluster's MaxArraySize: an array's highest index must stay below it."""
    if not shutil.which("scontrol"):
        return None
    shown = subprocess.run(
        ["scontrol", "show", "config"], capture_output=True, text=True, check=False
    )
    for line in shown.stdout.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "MaxArraySize" and value.strip().isdigit():
            return int(value.strip())
    return None


def read_jobs(sweep_dir: Path) -> dict[str, str]:
    """cell id -> the latest job id that was given that cell."""
    owner: dict[str, str] = {}
    path = SweepLayout(sweep_dir).jobs
    if path.exists():
        for line in path.read_text().splitlines():
            entry = json.loads(line) if line.strip() else {}
            for cell_id in entry.get("cells", []):
                owner[cell_id] = entry["job_id"]
    return owner


def sacct_states(job_ids: Iterable[str]) -> dict[str, str]:
    """One sacct call for all arrays: task id (`A_i`) -> state; pending ranges are expanded."""
    arrays = sorted({job_id.split("_")[0] for job_id in job_ids})
    if not arrays or not shutil.which("sacct"):
        return {}
    listing = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(arrays)],
        capture_output=True,
        text=True,
        check=False,
    )
    states: dict[str, str] = {}
    for line in listing.stdout.splitlines():
        job_id, _, state = line.partition("|")
        state = state.split()[0] if state else "UNKNOWN"
        for task in expand_array_id(job_id):
            states[task] = state
    return states


def expand_array_id(job_id: str) -> list[str]:
    """`12_[3-5,7%2]` -> 12_3, 12_4, 12_5, 12_7 (how sacct shows an array's pending tasks)."""
    if "_[" not in job_id:
        return [job_id]
    array, _, ranges = job_id.partition("_[")
    tasks = []
    for part in ranges.rstrip("]").split("%")[0].split(","):
        low, _, high = part.partition("-")
        tasks += [f"{array}_{index}" for index in range(int(low), int(high or low) + 1)]
    return tasks


@dataclass
class CellStates:
    totals: dict[str, int]
    lines: list[str]


def cell_states(sweep_dir: Path) -> CellStates:
    """Each cell's state: its result file when there is one, else its job's SLURM state."""
    from mnistsweep.sweep.guard import recorded_cells

    owners = read_jobs(sweep_dir)
    scheduler = sacct_states(owners.values())
    totals: Counter[str] = Counter()
    lines = []
    for cell in recorded_cells(sweep_dir):
        result = RunFiles(run_dir(sweep_dir, cell)).read_result()
        job_id = owners.get(cell.id)
        if result:
            state = result["status"]
        elif job_id is None:
            state = "not submitted"
        else:
            state = cell_state_from_job(scheduler.get(job_id))
        totals[state] += 1
        if state != "completed":
            detail = f"  {result['error']}" if result and result.get("error") else ""
            lines.append(f"  {state:>13}  {job_id or '-':>10}  {cell.name}{detail}")
    return CellStates(dict(sorted(totals.items())), lines)


def cell_state_from_job(state: str | None) -> str:
    if state is None:
        return "unknown"
    if state in ("PENDING", "REQUEUED", "RUNNING"):
        return state.lower()
    if state in ENDED_STATES:
        return f"lost ({state.lower()})"  # the job ended but the cell left no result
    return state.lower()


def wait(jobs: list, cells_finished: Callable[[], bool]) -> None:
    """Stay until every cell has a result or every task has ended, polling every few seconds."""
    job_ids = [str(job.job_id) for job in jobs]
    while not cells_finished():
        states = sacct_states(job_ids)
        if job_ids and all(states.get(job_id) in ENDED_STATES for job_id in job_ids):
            break
        time.sleep(POLL_SECONDS)


def cancel(sweep_dir: Path) -> list[str]:
    """scancel the sweep's arrays that still have tasks pending or running."""
    owners = read_jobs(sweep_dir)
    states = sacct_states(owners.values())
    live = sorted(
        {job_id.split("_")[0] for job_id, state in states.items() if state not in ENDED_STATES}
    )
    if live:
        subprocess.run(["scancel", *live], check=False)
    return live
