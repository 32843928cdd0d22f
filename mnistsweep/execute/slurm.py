"""The SLURM path: one job array per sweep through submitit, and the sweep's jobs seen from SLURM.

The scheduler is asked gently: one `sacct` call covers every array of a sweep, and waiting polls
every few seconds, never once per cell.
"""

from __future__ import annotations

import datetime
import json
import shlex
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnistsweep.errors import MnistsweepError
from mnistsweep.execute.job import CellBatch, run_dir
from mnistsweep.execute.plan import Plan
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


def jobs_log(sweep_dir: Path) -> Path:
    return sweep_dir / "jobs.jsonl"


def submitit_folder(sweep_dir: Path) -> Path:
    """submitit's files, one folder per array (`%A`): a folder per task (`%j`) costs a directory
    creation per task at submit time, about half of submitit's own time for 1,000 tasks."""
    return sweep_dir / "submitit" / "%A"


def sbatch_parameters(plan: Plan, code_dir: Path) -> dict[str, Any]:
    """submitit's SLURM parameters from the spec; the job imports the code snapshot first."""
    options = plan.spec.executor.slurm
    setup = [
        *options.setup,
        f"export PYTHONPATH={shlex.quote(str(code_dir))}${{PYTHONPATH:+:$PYTHONPATH}}",
    ]
    parameters: dict[str, Any] = {
        "job_name": f"mnistsweep-{plan.spec.name}",
        "time": options.timeout_min,
        "cpus_per_task": options.cpus_per_task,
        "mem": f"{max(1, round(options.mem_gb * 1024))}MB",
        "array_parallelism": options.array_parallelism,
        # USR2 this long before the limit: time to write the epoch checkpoint and requeue.
        "signal_delay_s": max(20, min(120, options.timeout_min * 60 // 5)),
        "setup": setup,
        "comment": f"mnistsweep sweep {plan.spec.name}",
    }
    for key in ("partition", "account", "qos", "constraint", "gpus_per_node"):
        value = getattr(options, key)
        if value:
            parameters[key] = value
    if options.additional:
        parameters["additional_parameters"] = dict(options.additional)
    return parameters


def preview_script(plan: Plan) -> str:
    """The sbatch script the first array would get (submitit's own template, nothing submitted)."""
    from submitit.slurm.slurm import _make_sbatch_string

    folder = submitit_folder(plan.sweep_dir)
    command = (
        f"{shlex.quote(sys.executable)} -u -m submitit.core._submit {shlex.quote(str(folder))}"
    )
    parameters = sbatch_parameters(plan, plan.sweep_dir / "code" / "<launch-time>")
    count = min(len(plan.batches), max_array_size() or len(plan.batches))
    return _make_sbatch_string(
        command=command, folder=folder, map_count=count or None, **parameters
    )


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


def snapshot_code(sweep_dir: Path) -> Path:
    """Copy the package as it is now, so edits to the checkout cannot change queued jobs."""
    import mnistsweep

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    target = sweep_dir / "code" / stamp
    shutil.copytree(
        Path(mnistsweep.__file__).parent,
        target / "mnistsweep",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    return target


def submit(plan: Plan, data_dir: Path | None) -> list:
    """Submit the batches as few arrays as MaxArraySize allows; record which job has which cells."""
    import submitit

    executor = submitit.SlurmExecutor(folder=submitit_folder(plan.sweep_dir))
    executor.update_parameters(**sbatch_parameters(plan, snapshot_code(plan.sweep_dir)))
    limit = max_array_size() or len(plan.batches)
    jobs: list = []
    try:
        for start in range(0, len(plan.batches), limit):
            with executor.batch():
                for batch in plan.batches[start : start + limit]:
                    jobs.append(
                        executor.submit(
                            CellBatch(),
                            str(plan.sweep_dir),
                            batch,
                            str(data_dir) if data_dir else None,
                            plan.spec.executor.concurrent_cells,
                        )
                    )
    except submitit.core.utils.FailedJobError as error:
        last = str(error).strip().splitlines()[-1]
        raise MnistsweepError(f"sbatch refused the sweep {plan.spec.name}: {last}") from None
    record_jobs(plan, jobs)
    return jobs


def record_jobs(plan: Plan, jobs: list) -> None:
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat()
    with jobs_log(plan.sweep_dir).open("a") as log:
        for job, batch in zip(jobs, plan.batches, strict=True):
            log.write(
                json.dumps(
                    {"job_id": job.job_id, "cells": [cell.id for cell in batch], "submitted": stamp}
                )
                + "\n"
            )


def array_ids(jobs: Iterable) -> list[str]:
    return sorted({str(job.job_id).split("_")[0] for job in jobs}, key=int)


def read_jobs(sweep_dir: Path) -> dict[str, str]:
    """cell id -> the latest job id that was given that cell."""
    owner: dict[str, str] = {}
    path = jobs_log(sweep_dir)
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
