"""The local backend: a sweep's batches on this machine through submitit's local executor, the
same `CellBatch` as on SLURM, at most `local_parallel` jobs at once, every GPU passed on."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnistsweep.execute.backend import Backend, LaunchOutcome
from mnistsweep.sweep.layout import SweepLayout

if TYPE_CHECKING:
    import submitit

    from mnistsweep.execute.launch import LaunchSession
    from mnistsweep.execute.plan import Plan
    from mnistsweep.sweep.spec import Spec


class LocalBackend(Backend):
    name = "local"

    def cells_per_job(self, spec: Spec, todo: int) -> int:
        """One job per parallel slot: each imports Keras once."""
        return spec.executor.cells_per_job or max(1, math.ceil(todo / spec.executor.local_parallel))

    def launch(self, session: LaunchSession) -> LaunchOutcome:
        data_dir = session.request.data_dir
        with session.planned() as plan:
            if plan.todo:
                session.request.check_data()  # fail here, not in every job
                start(plan)
        if not plan.todo:
            return LaunchOutcome(plan)
        run_local(plan, data_dir, session.events.watch(plan, plan.todo, detached=False))
        return session.ended(plan, plan.todo)


def start(plan: Plan) -> None:
    """Under the launch lock, the data checked: record the spec, set retried failures aside."""
    from mnistsweep.execute import plan as planning
    from mnistsweep.sweep import guard

    guard.record_spec(SweepLayout(plan.sweep_dir), plan.spec)
    for cell in plan.todo:
        if cell.id in plan.retried:
            planning.archive_failure(plan, cell)


LOCAL_TIMEOUT_MIN = 7 * 24 * 60  # submitit's local default (2 minutes) would kill real trainings
POLL_SECONDS = 0.5


def local_gpu_count() -> int:
    """submitit's local executor hides every GPU (CUDA_VISIBLE_DEVICES="") unless told how many
    to pass on; a job then sees them all and CellBatch spreads its workers over them."""
    if not shutil.which("nvidia-smi"):
        return 0
    try:
        listing = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, check=False, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in listing.stdout.splitlines() if line.startswith("GPU "))


def make_local_executor(plan: Plan) -> submitit.LocalExecutor:
    import submitit

    layout = SweepLayout(plan.sweep_dir)
    executor = submitit.LocalExecutor(folder=layout.create(layout.local_submitit))
    executor.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN, gpus_per_node=local_gpu_count())
    return executor


@contextmanager
def stderr_into(log: Path) -> Iterator[None]:
    """Processes started meanwhile write their stderr to `log`: submitit's local controller
    inherits the launcher's stderr, and on Ctrl-C it would print its KeyboardInterrupt traceback
    on the user's terminal beside our one-line message."""
    sys.stderr.flush()
    saved = os.dup(2)
    target = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o666)
    try:
        os.dup2(target, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(target)


def run_local(
    plan: Plan, data_dir: Path | None, progress: Callable[[], object]
) -> list[submitit.Job[Any]]:
    """Run the batches as local submitit jobs, at most `local_parallel` at once."""
    from mnistsweep.execute.job import submit_batch

    executor = make_local_executor(plan)
    layout = SweepLayout(plan.sweep_dir)
    waiting = list(plan.batches)
    running: list[submitit.Job[Any]] = []
    finished: list[submitit.Job[Any]] = []
    try:
        while waiting or running:
            while waiting and len(running) < plan.spec.executor.local_parallel:
                batch = waiting.pop(0)
                with stderr_into(layout.local_controller_log):
                    job = submit_batch(
                        executor, plan.spec.executor, plan.sweep_dir, batch, data_dir
                    )
                running.append(job)
            progress()
            time.sleep(POLL_SECONDS)
            for job in [job for job in running if job.done()]:
                running.remove(job)
                finished.append(job)
        progress()
    except KeyboardInterrupt:
        for job in running:
            job.cancel(check=False)
        raise
    return finished
