"""Feeding the queue without a launcher: when the cluster's limits (MaxSubmitJobs) hold part of a
sweep back, a tiny feeder job goes out with the jobs that fit. It starts once they have all
ended (`--dependency=afterany`), takes the sweep's launch lock without waiting (whoever holds it
is a launch or another feeder, and feeds), and runs the very submission round a `launch` runs
(execute.slurm_backend.submit_round), which sends what the limits now allow and, while
something is still left, the next feeder. No process stays on the login node.

Safe by construction: every round plans under the launch lock, so cells a live job covers are
never sent twice (a relaunch while a feeder waits is fine: the feeder then finds less to send);
a cancelled feeder only stops the feeding (a plain relaunch sends the rest and a new feeder);
the feeder is a job of the sweep's jobs.jsonl, so `cancel` stops it too, and a feeder whose jobs
were cancelled sends nothing. `feeding.json` says what waits and who sends it, for `status`.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mnistsweep.sweep import identity, records
from mnistsweep.sweep.layout import SweepLayout

if TYPE_CHECKING:
    from mnistsweep.execute.launch import LaunchRequest, LaunchSession
    from mnistsweep.execute.limits import ClusterLimits
    from mnistsweep.execute.plan import Plan
    from mnistsweep.sweep.spec import Cell

# The feeder's time limit: planning and one sbatch call take seconds (2-3 s measured); a short
# limit lets backfill start it while a larger job waits for the rest of a node.
FEEDER_MINUTES = 5
FEEDER_MEMORY = "1024MB"  # Python, submitit and the plan of a sweep; no framework is imported
UNREAD_LIMITS = "sbatch's submit limit; the limits could not be read"  # accounting down
RETRY_AFTER = "now+60"  # when no job of the sweep is left to start after (the queue holds others)


def sendable(session: LaunchSession, plan: Plan, cluster: ClusterLimits) -> int:
    """How many planned jobs go out now: all when the queue has room (or no known limit); else
    what fits, keeping a place for the feeder job that will send the rest, unless the launcher
    stays (--wait), a feeder is already queued, or the place would leave no job to send (a
    feeder that only chains feeders would run forever)."""
    from mnistsweep.execute import limits

    jobs = len(plan.batches)
    if cluster.room(limits.QueueCounts()) is None:
        return jobs
    queue = limits.queued_jobs(cluster.qos)
    room = cluster.room(queue) or 0
    if room >= jobs:
        return jobs
    if session.request.wait or live_feeder(SweepLayout(plan.sweep_dir)):
        return room
    return cluster.room(queue, feeder=True) or room


def live_feeder(layout: SweepLayout) -> str | None:
    """The recorded feeder job when it is still queued or running (this feeder itself aside)."""
    from mnistsweep.execute import scheduler

    record = read(layout)
    if record is None or not record.feeder or record.feeder == os.environ.get("SLURM_JOB_ID"):
        return None
    state = scheduler.sacct_states([record.feeder]).get(record.feeder, "")
    return record.feeder if state and state not in scheduler.ENDED_STATES else None


def read(layout: SweepLayout) -> records.FeedingRecord | None:
    try:
        return records.read(records.FeedingRecord, layout.feeding)
    except records.DamagedRecord:
        return None  # rewritten by the next round


def settle(
    session: LaunchSession,
    plan: Plan,
    cluster: ClusterLimits,
    sent: Sequence[str],
    code_dir: Path | None,
    left: list[list[Cell]],
) -> str:
    """After a round: forget feeding when nothing is left; else make sure a feeder will send
    the rest (one already queued, or a new one after the jobs just sent) and record it."""
    layout = SweepLayout(plan.sweep_dir)
    if not left:
        layout.feeding.unlink(missing_ok=True)
        return ""
    if session.request.wait:
        return ""
    feeder = live_feeder(layout)
    if feeder is None:  # after the jobs just sent, else after the sweep's live ones
        after = list(sent) or sorted({job_id for job_id in plan.covering.values() if job_id})
        feeder = submit_feeder(session, plan, code_dir, after)
    records.write(
        layout.feeding,
        records.FeedingRecord(
            cells_left=sum(map(len, left)),
            jobs_left=len(left),
            limits=cluster.describe() or UNREAD_LIMITS,
            feeder=feeder,
        ),
    )
    return feeder


def submit_feeder(
    session: LaunchSession, plan: Plan, code_dir: Path | None, after: Sequence[str]
) -> str:
    """The feeder job, once every job (task) in `after` has ended: the sweep's setup lines and
    code snapshot, one CPU, no GPU, no QOS of the sweep's (its limit is what holds the cells
    back), a few minutes. Its id, or "" with one line said when sbatch refuses it (the jobs sent
    stay; a relaunch sends the rest)."""
    from mnistsweep.execute import slurm

    layout = SweepLayout(plan.sweep_dir)
    code_dir = code_dir or slurm.snapshot_code(layout)
    parameters = slurm.sbatch_parameters(plan, code_dir)
    for key in ("gpus_per_node", "qos", "constraint", "additional_parameters", "array_parallelism"):
        parameters.pop(key, None)
    parameters.update(
        job_name=f"{parameters['job_name']}-feeder",
        cpus_per_task=1,
        mem=FEEDER_MEMORY,
        time=FEEDER_MINUTES,
        signal_delay_s=20,
    )
    arrays = sorted({job_id.split("_")[0] for job_id in after}, key=int)
    if arrays:
        parameters["dependency"] = f"afterany:{':'.join(arrays)}"
    else:
        parameters["additional_parameters"] = {"begin": RETRY_AFTER}
    from submitit.core.utils import FailedJobError, FailedSubmissionError

    executor = slurm.make_executor(layout.submitit, parameters)
    try:
        with slurm.quiet_submitit():
            job = executor.submit(feed, portable(session.request), list(after))
    except (FailedJobError, FailedSubmissionError, OSError) as error:
        session.events.say(
            f"warning: no feeder job ({slurm.sbatch_reason(error)}): launch again later to "
            "send the rest"
        )
        return ""
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat()
    owner = identity.jobs_owner(layout.root)
    job_id = str(job.job_id)
    records.append_job(
        layout.jobs, records.JobRecord(job_id=job_id, cells=[], submitted=stamp, sweep_dir=owner)
    )
    return job_id


def portable(request: LaunchRequest) -> LaunchRequest:
    """The request with absolute folders: the feeder runs inside the code snapshot, and checks
    the data itself (the launcher's check in progress stays behind)."""
    data_dir = request.data_dir.absolute() if request.data_dir else None
    return dataclasses.replace(
        request,
        results_dir=request.results_dir.absolute(),
        data_dir=data_dir,
        wait=False,
        data_checking=None,
    )


class JobLog:
    """A feeder's news goes to its own task log."""

    def planned(self, plan: Plan) -> None:
        """Nothing: the round says what it sends."""

    def say(self, line: str) -> None:
        print(f"mnistsweep feeder: {line}", flush=True)

    def watch(self, plan: Plan, cells: Sequence[Cell], detached: bool) -> Callable[[], bool]:
        return lambda: True


def feed(request: LaunchRequest, waited_on: Sequence[str]) -> str:
    """What a feeder job runs: one submission round, as a launch makes it. Nothing when the
    jobs it waited on were cancelled (a `cancel` of the sweep) or another launch holds the lock."""
    from mnistsweep.execute import limits, scheduler
    from mnistsweep.execute.launch import LaunchSession, LockHeld
    from mnistsweep.execute.slurm_backend import SlurmBackend, submit_round

    events = JobLog()
    states = scheduler.sacct_states(waited_on)
    if any(state == "CANCELLED" for state in states.values()):
        events.say("the jobs it waited for were cancelled: nothing sent (launch again to go on)")
        return "cancelled"
    session = LaunchSession(request, SlurmBackend(), events)
    try:
        with session.planned(announce=False, wait_seconds=0) as plan:
            submit_round(session, plan, limits.read_limits(plan.spec.executor.slurm.qos))
    except LockHeld:
        events.say("another launch of the sweep holds its lock: it sends the rest")
        return "lock held"
    return "fed"


def waiting_line(sweep_dir: Path) -> str | None:
    """`status`'s line for what is not submitted yet, and who sends it."""
    layout = SweepLayout(sweep_dir)
    record = read(layout)
    if record is None:
        return None
    waiting = f"{record.cells_left} cell(s) waiting to be sent ({record.limits})"
    if live_feeder(layout):
        return f"{waiting}: feeder job {record.feeder} sends them as room frees"
    return f"{waiting}: no feeder job is queued; launch again to send them"
