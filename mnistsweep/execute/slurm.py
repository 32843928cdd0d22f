"""Submitting a sweep to SLURM: one job array per sweep through submitit, the code snapshot, the
jobs record. Seeing the jobs afterwards is execute.scheduler.
"""

from __future__ import annotations

import datetime
import json
import shlex
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mnistsweep.errors import MnistsweepError
from mnistsweep.execute import scheduler
from mnistsweep.execute.job import CellBatch
from mnistsweep.execute.plan import Plan


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
    count = min(len(plan.batches), scheduler.max_array_size() or len(plan.batches))
    return _make_sbatch_string(
        command=command, folder=folder, map_count=count or None, **parameters
    )


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
    limit = scheduler.max_array_size() or len(plan.batches)
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
