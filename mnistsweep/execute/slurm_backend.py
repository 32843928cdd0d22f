"""The SLURM backend: submission rounds that fit the cluster's limits, then (with --wait) the
wait for every job. Submitting is execute.slurm; seeing the jobs is execute.scheduler. Imported
on a local dry run too, so submitit loads only once SLURM is used."""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from mnistsweep.errors import MnistsweepError
from mnistsweep.execute.backend import Backend, LaunchOutcome
from mnistsweep.sweep.yaml_loader import printable

if TYPE_CHECKING:
    from mnistsweep.execute.launch import LaunchSession
    from mnistsweep.execute.limits import ClusterLimits
    from mnistsweep.execute.plan import Plan
    from mnistsweep.execute.slurm import Submission
    from mnistsweep.sweep.spec import Cell, Spec

NO_LIMIT = 10**9  # room in a queue whose limits are unknown


class SlurmBackend(Backend):
    name = "slurm"

    @classmethod
    def unavailable(cls) -> str | None:
        return None if shutil.which("sbatch") else "`sbatch` is not on PATH"

    def cells_per_job(self, spec: Spec, todo: int) -> int:
        """As the spec says; one by default, so a time limit or a failure costs one cell."""
        return spec.executor.cells_per_job or 1

    def launch(self, session: LaunchSession) -> LaunchOutcome:
        """Submit what the queue has room for; with --wait, the rest as room frees (each round
        plans again under the lock), then wait for every cell."""
        from mnistsweep.execute import limits, scheduler

        request, events = session.request, session.events
        check_results_path(request.layout.root)
        # The cluster's limits (sacctmgr and scontrol: waits on other processes) are read
        # beside the planning, not after it.
        with ThreadPoolExecutor(1, thread_name_prefix="limits") as beside:
            cluster_read = beside.submit(limits.read_limits, request.spec.executor.slurm.qos)
            with session.planned() as plan:
                if plan.todo:
                    warning = memory_warning(plan)
                    if warning:
                        events.say(warning)
                cluster = cluster_read.result()
                job_ids, left = submit_round(session, plan, cluster)
        waited_for = (*plan.todo, *(c for c in plan.spec.cells() if c.id in plan.covering))
        job_ids = [*sorted(set(plan.covering.values()) - {""}), *job_ids]
        while left and request.wait:
            events.say(f"waiting for room in the queue for {left} more job(s)")
            wait_for_room(cluster)
            with session.planned(announce=False) as again:
                submitted, left = submit_round(session, again, cluster)
            job_ids += submitted
        if left or not waited_for or not request.wait:
            from mnistsweep.execute import feeder

            fed_by = feeder.read(request.layout) if left else None
            return LaunchOutcome(
                plan, waited_for, None, left, cluster.describe(), fed_by.feeder if fed_by else ""
            )
        scheduler.wait(job_ids, events.watch(plan, waited_for, detached=True))
        return session.ended(plan, waited_for)

    def dry_run(self, plan: Plan, data_dir: Path | None) -> list[str]:
        """The memory warning, the queue's room, and the first sbatch script exactly."""
        from mnistsweep.execute import limits, slurm

        check_results_path(plan.sweep_dir)
        if not plan.batches:
            return []
        warning = memory_warning(plan)
        lines = [warning] if warning else []
        cluster = limits.read_limits(plan.spec.executor.slurm.qos)
        room = limits.room_now(cluster)
        jobs = len(plan.batches)
        first = min(jobs, cluster.max_array_size or jobs, NO_LIMIT if room is None else room)
        if room is not None and room < jobs:
            lines.append(f"the queue has room for {room} of the {jobs} jobs now")
        lines.append(f"\nsbatch script of the first submission ({first} job(s)):\n")
        lines.append(slurm.render_script(plan, data_dir, max(1, first)))
        return lines


def check_results_path(sweep_dir: Path) -> None:
    """SLURM reads `%` in a log file's name as a pattern (%A, %a, %j...): a sweep folder whose
    path holds one would send the jobs' logs elsewhere, so it is refused before anything."""
    where = str(sweep_dir.absolute())
    if "%" in where:
        raise MnistsweepError(
            f"{printable(where)}: a path with '%' cannot hold a SLURM sweep (SLURM reads % in "
            "log file names as a pattern); use another --results-dir"
        )


def memory_warning(plan: Plan) -> str | None:
    from mnistsweep.execute import slurm

    warning = slurm.memory_warning(plan)
    return f"warning: {warning}" if warning else None


def submit_round(
    session: LaunchSession, plan: Plan, cluster: ClusterLimits
) -> tuple[list[str], int]:
    """Submit the planned batches the queue has room for; (job ids, batches left over). What
    is left over, a feeder job sends later (execute.feeder), unless the launcher waits."""
    from mnistsweep.execute import feeder

    if not plan.todo:
        feeder.settle(session, plan, cluster, [], None, [])
        return [], 0
    session.request.check_data()
    batches = plan.batches[: feeder.sendable(session, plan, cluster)]
    submission = send_what_fits(session, plan, batches, cluster) if batches else None
    left = plan.batches[len(submission.batches) if submission else 0 :]
    sent = [str(job.job_id) for job in submission.jobs] if submission else []
    code_dir = submission.code_dir if submission else None
    feeder.settle(session, plan, cluster, sent, code_dir, left)
    return sent, len(left)


def wait_for_room(cluster: ClusterLimits) -> None:
    """Until the queue has room; with its limits unknown, one poll (the next round asks sbatch)."""
    from mnistsweep.execute import limits, scheduler

    if limits.room_now(cluster) is None:
        time.sleep(scheduler.POLL_SECONDS)
    while limits.room_now(cluster) == 0:
        time.sleep(scheduler.POLL_SECONDS)


def send_what_fits(
    session: LaunchSession, plan: Plan, batches: list[list[Cell]], cluster: ClusterLimits
) -> Submission | None:
    """Submit `batches`, or as many of them as sbatch takes when it refuses them for a submit
    limit the launch could not see (accounting down, so sacctmgr did not answer; or the queue
    filled since it was read): half as many, until it takes some, and the rest is left over for
    the feeder, as if the limit had been known. None when it takes none while this user's jobs
    fill the queue; a job refused alone with none of the user's queued breaks a limit that no
    smaller submission cures, and its refusal stands."""
    from mnistsweep.execute import limits, slurm

    count = len(batches)
    while True:
        try:
            return send(session, plan, batches[:count], cluster)
        except slurm.SubmissionRefused as refused:
            if not refused.over_a_limit:
                raise
            if count > 1:
                count //= 2
                continue
            if limits.queued_jobs(cluster.qos).own == 0:
                raise
            session.events.say(f"{refused}: the queue is full; nothing sent now")
            return None


def send(
    session: LaunchSession, plan: Plan, batches: list[list[Cell]], cluster: ClusterLimits
) -> Submission:
    """Submit `batches`. Failed cells to retry are set aside first, and put back when sbatch
    refuses them. A refusal for a submit limit after a first array went out returns what went
    out (the rest is left over); any other refusal after one says what is recorded."""
    from mnistsweep.execute import plan as planning
    from mnistsweep.execute import slurm
    from mnistsweep.sweep import guard
    from mnistsweep.sweep.layout import SweepLayout

    data_dir = session.request.data_dir
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
        partial = refused.submission
        if partial and partial.jobs:
            guard.record_spec(SweepLayout(plan.sweep_dir), plan.spec)
            if refused.over_a_limit:
                announce(session, partial)
                return partial
            raise slurm.SubmissionRefused(
                f"{refused}; {len(refused.submitted)} job(s) went out before and are recorded: "
                "launch again to submit the rest"
            ) from None
        raise
    guard.record_spec(SweepLayout(plan.sweep_dir), plan.spec)  # only once jobs went out
    announce(session, submission)
    return submission


def announce(session: LaunchSession, submission: Submission) -> None:
    cells = sum(len(batch) for batch in submission.batches)
    arrays = submission.arrays
    session.events.say(
        f"submitted {cells} cells in {len(submission.jobs)} job(s) as {len(arrays)} "
        f"array(s): {', '.join(arrays)}"
    )
