"""The scheduler seen from a sweep: every job's state in one `sacct` call (plus at most one
`squeue` for what sacct has not caught up with), cancel, wait, the cluster's limits. Nothing here
submits (that is execute.slurm).
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mnistsweep.sweep import identity, records
from mnistsweep.sweep.layout import SweepLayout
from mnistsweep.sweep.spec import Cell
from mnistsweep.sweep.state import CellView, JobPhase, JobView, derive

POLL_SECONDS = 5.0  # the scheduler
RESULT_POLL_SECONDS = 0.5  # the result files, while a launch waits
COMMAND_TIMEOUT_S = 60
SQUEUE_FORMAT = "JobArrayID:64,State:24,RestartCnt:8,Reason:256"

# Scheduler states, as sacct and squeue print them (first word: "CANCELLED by 0").
WAITING_STATES = frozenset({"CONFIGURING", "SUSPENDED", "STOPPED", "RESV_DEL_HOLD"})
RUNNING_STATES = frozenset({"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT"})
REQUEUED_STATES = frozenset({"REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SPECIAL_EXIT"})
# After these a task will not run again by itself (a job the scheduler does not know, neither).
ENDED_STATES = frozenset(
    {
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
)


def phase_of(state: str) -> JobPhase:
    """sacct's or squeue's word for a job, in the sweep's terms."""
    word = state.split()[0] if state.strip() else ""
    if word == "PENDING":
        return JobPhase.PENDING
    for states, phase in (
        (WAITING_STATES, JobPhase.WAITING),
        (RUNNING_STATES, JobPhase.RUNNING),
        (REQUEUED_STATES, JobPhase.REQUEUED),
        (ENDED_STATES, JobPhase.ENDED),
    ):
        if word in states:
            return phase
    return JobPhase.UNKNOWN


def job_view(
    job_id: str, state: str, reason: str = "", restarts: int = 0, memory: str = ""
) -> JobView:
    return JobView(job_id, state, reason, restarts, phase_of(state), memory)


def slurm_output(command: Sequence[str], timeout_s: float = COMMAND_TIMEOUT_S) -> str | None:
    """A SLURM client's standard output, or None when it is missing, fails or hangs: every
    read of the cluster's settings and queue goes through here (execute.limits)."""
    if not shutil.which(command[0]):
        return None
    try:
        done = subprocess.run(
            list(command), capture_output=True, text=True, check=False, timeout=timeout_s
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


# --- the sweep's jobs ---------------------------------------------------------------------------


@dataclass
class SweepJobs:
    """jobs.jsonl as read: its valid lines, and one problem per line that is not one."""

    jobs: list[records.JobRecord]
    problems: list[str]
    cancelled: frozenset[str] = frozenset()  # arrays `mnistsweep cancel` stopped

    @property
    def owners(self) -> dict[str, str]:
        """cell id -> the latest job that was given that cell."""
        return records.job_owners(self.jobs)

    @functools.cached_property
    def history(self) -> dict[str, list[str]]:
        """cell id -> every job that was given the cell, oldest first (their logs tell its
        story)."""
        jobs_of: dict[str, list[str]] = {}
        for job in self.jobs:
            for cell_id in job.cells:
                jobs_of.setdefault(cell_id, []).append(job.job_id)
        return jobs_of

    def jobs_of(self, cell_id: str) -> list[str]:
        return self.history.get(cell_id, [])


def load_jobs(sweep_dir: Path) -> SweepJobs:
    """The jobs this very folder submitted (a copy's records of the original's are ignored)."""
    layout = SweepLayout(sweep_dir)
    jobs, problems = records.read_jobs(layout.jobs)
    own, others = identity.own_jobs(jobs, sweep_dir)
    try:
        cancels = records.read(records.CancelRecord, layout.cancelled)
    except records.DamagedRecord as damaged:
        cancels, problems = None, [*problems, f"{damaged} (ignored)"]
    return SweepJobs(own, [*problems, *others], frozenset(cancels.arrays if cancels else ()))


def read_jobs(sweep_dir: Path) -> dict[str, str]:
    """cell id -> the latest job id that was given that cell (damaged lines are skipped)."""
    return load_jobs(sweep_dir).owners


# --- what the scheduler says --------------------------------------------------------------------


@dataclass
class SchedulerView:
    jobs: dict[str, JobView] = field(default_factory=dict)
    calls: int = 0  # scheduler commands run for this view
    problems: list[str] = field(default_factory=list)
    answered: bool = False  # sacct answered: a job it does not list is unknown to the scheduler
    accounting_down: bool = False  # sacct ran and failed (slurmdbd unreachable)
    queue_answered: bool = False  # squeue answered: a job it does not list left the queue

    def job(self, job_id: str) -> JobView | None:
        """The job's view; an empty state when sacct answered without it; with accounting
        down, what squeue's silence means; None when there is no scheduler here."""
        if job_id in self.jobs:
            return self.jobs[job_id]
        if self.answered:
            return job_view(job_id, "")
        if self.accounting_down:
            phase = JobPhase.LEFT_QUEUE if self.queue_answered else JobPhase.UNOBSERVED
            return JobView(job_id, "", phase=phase)
        return None


def observe(job_ids: Iterable[str], cancelled: frozenset[str] = frozenset()) -> SchedulerView:
    """Each job's state; a job of an array `mnistsweep cancel` stopped reads cancelled where
    the scheduler cannot say how it ended (accounting down, the job purged from it)."""
    wanted = sorted(set(job_ids))
    view = ask_scheduler(wanted)
    for job_id in wanted:
        seen = view.job(job_id)
        untold = seen is None or seen.phase in UNTOLD
        if untold and job_id.split("_")[0] in cancelled:
            view.jobs[job_id] = job_view(job_id, CANCELLED_HERE)
    return view


UNTOLD = (JobPhase.UNKNOWN, JobPhase.LEFT_QUEUE, JobPhase.UNOBSERVED)
CANCELLED_HERE = "CANCELLED with mnistsweep cancel"


def ask_scheduler(wanted: list[str]) -> SchedulerView:
    """One sacct call for every array; one squeue call only when a task is pending (for its
    reason and restarts) or not in sacct yet (sacct lags a fresh submission)."""
    view = SchedulerView()
    if not wanted:
        return view
    if not shutil.which("sacct"):
        view.problems.append("sacct not found: the jobs' states are not known here")
        return view
    arrays = sorted({job_id.split("_")[0] for job_id in wanted}, key=int)
    listing = run_command(
        ["sacct", "-X", "-n", "-P", "-o", "JobID,State,Reason,ReqMem", "-j", ",".join(arrays)],
        view,
    )
    view.answered = listing is not None
    view.accounting_down = listing is None and view.calls > 0
    view.jobs = parse_sacct(listing or "", wanted)
    unsettled = [
        job_id
        for job_id in wanted
        if job_id not in view.jobs or view.jobs[job_id].word in ("PENDING", "REQUEUED")
    ]
    if unsettled:
        queue = run_command(
            ["squeue", "-h", "-r", "-O", SQUEUE_FORMAT, "-j", ",".join(arrays)], view
        )
        view.queue_answered = queue is not None
        view.jobs.update(parse_squeue(queue or "", wanted))
    return view


def run_command(command: list[str], view: SchedulerView) -> str | None:
    """A scheduler command's output, or None with one problem line when it cannot answer."""
    if not shutil.which(command[0]):
        return None
    view.calls += 1
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, check=False, timeout=COMMAND_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        view.problems.append(f"{command[0]} did not answer in {COMMAND_TIMEOUT_S} s")
        return None
    # squeue exits 1 too when none of the jobs is in the queue any more: that is an answer.
    gone = command[0] == "squeue" and "Invalid job id" in done.stderr
    if done.returncode != 0 and not gone:
        first = (done.stderr.strip().splitlines() or ["no message"])[0]
        if command[0] == "sacct":
            first += "; the states below come from squeue and the run folders"
        view.problems.append(f"{command[0]} failed: {first}")
        return None
    return done.stdout


def parse_sacct(listing: str, wanted: Sequence[str]) -> dict[str, JobView]:
    """`JobID|State|Reason|ReqMem` lines -> the wanted tasks' views. Pending tasks come as ranges
    (`12_[3-5,7%2]`); a bare array id (`12`, e.g. a cancelled pending range) stands for each
    of its tasks that has no line of its own."""
    rows: dict[str, JobView] = {}
    for line in listing.splitlines():
        parts = line.split("|")
        if len(parts) < 2 or not parts[0].strip():
            continue
        reason = parts[2].strip() if len(parts) > 2 and parts[2].strip() != "None" else ""
        memory = parts[3].strip() if len(parts) > 3 else ""
        for task in expand_array_id(parts[0].strip()):
            rows[task] = job_view(task, parts[1].strip() or "UNKNOWN", reason, 0, memory)
    views = {}
    for job_id in wanted:
        own = rows.get(job_id) or rows.get(job_id.split("_")[0])
        if own is not None:
            views[job_id] = job_view(job_id, own.state, own.reason, own.restarts, own.memory)
    return views


def parse_squeue(listing: str, wanted: Sequence[str]) -> dict[str, JobView]:
    """squeue's fixed-width `JobArrayID State RestartCnt Reason` lines -> the wanted tasks."""
    wanted_set = set(wanted)
    views = {}
    for line in listing.splitlines():
        parts = line.split(maxsplit=3)
        if len(parts) < 3 or parts[0] not in wanted_set:
            continue
        reason = parts[3].strip() if len(parts) > 3 and parts[3].strip() != "None" else ""
        restarts = int(parts[2]) if parts[2].isdigit() else 0
        views[parts[0]] = job_view(parts[0], parts[1], reason, restarts)
    return views


def expand_array_id(job_id: str) -> list[str]:
    """`12_[3-5,7%2]` -> 12_3, 12_4, 12_5, 12_7 (how sacct shows an array's pending tasks)."""
    if "_[" not in job_id:
        return [job_id]
    array, _, ranges = job_id.partition("_[")
    tasks = []
    for part in ranges.rstrip("]").split("%")[0].split(","):
        low, _, high = part.partition("-")
        if low.isdigit() and (high.isdigit() or not high):
            tasks += [f"{array}_{index}" for index in range(int(low), int(high or low) + 1)]
    return tasks


def sacct_states(job_ids: Iterable[str]) -> dict[str, str]:
    """job id -> the scheduler's first word for it (PENDING, RUNNING, CANCELLED, ...)."""
    return {job_id: view.word for job_id, view in observe(job_ids).jobs.items()}


# --- the sweep's cells ------------------------------------------------------------------------


@dataclass(frozen=True)
class CellRow:
    cell: Cell
    view: CellView
    jobs: list[str]  # every job that was given the cell, oldest first


@dataclass(frozen=True)
class SweepStatus:
    rows: list[CellRow]
    warnings: list[str]  # one line per damaged file or unanswered scheduler command
    scheduler_calls: int


def sweep_status(sweep_dir: Path) -> SweepStatus:
    """Each cell's truth from its folder and its latest job, in one scheduler round."""
    from mnistsweep.sweep.guard import read_record, recorded_cells

    cells = recorded_cells(sweep_dir)
    foreign = identity.foreign_runs(read_record(sweep_dir), sweep_dir)
    jobs = load_jobs(sweep_dir)
    owners = jobs.owners
    scheduler = observe(owners.values(), jobs.cancelled)
    layout = SweepLayout(sweep_dir)
    rows, warnings = [], [*jobs.problems, *scheduler.problems]
    warnings += [identity.warning(foreign)] if foreign else []
    foreign_names = {item.name for item in foreign}
    for cell in cells:
        cell_id = cell.id  # a hash: computed once
        job_id = owners.get(cell_id)
        view = derive(layout.run(cell), scheduler.job(job_id) if job_id else None)
        view = identity.unless_foreign(view, cell, foreign_names)
        warnings += view.problems
        rows.append(CellRow(cell, view, jobs.jobs_of(cell_id)))
    return SweepStatus(rows, warnings, scheduler.calls)


def task_logs(sweep_dir: Path, job_ids: Iterable[str]) -> list[Path]:
    """The task logs that exist for these jobs, stderr then stdout of each."""
    layout = SweepLayout(sweep_dir)
    paths = [layout.task_log(job_id, stream) for job_id in job_ids for stream in ("err", "out")]
    return [path for path in paths if path.is_file() and not path.is_symlink()]


# --- acting on the jobs -------------------------------------------------------------------------


def wait(job_ids: Sequence[str], cells_finished: Callable[[], bool]) -> None:
    """Stay until every cell has a result or every task has ended. The result files are looked
    at twice a second (a trivial cell's result shows at once), or less often where looking takes
    long (at most a tenth of the time); the scheduler every few seconds (one sacct, at most one
    squeue: it answers every user of the cluster)."""
    next_observe = time.monotonic()
    while True:
        looked = time.monotonic()
        if cells_finished():
            return
        looking = time.monotonic() - looked
        if time.monotonic() >= next_observe:
            view = observe(job_ids)
            if job_ids and all(has_ended(view.job(job_id)) for job_id in job_ids):
                return
            next_observe = time.monotonic() + POLL_SECONDS
        time.sleep(max(RESULT_POLL_SECONDS, 10 * looking))


def has_ended(job: JobView | None) -> bool:
    """Ended, as sacct says, or as squeue's silence says when accounting is down (a job sacct
    does not list yet may be a fresh one)."""
    return job is not None and job.phase in (JobPhase.ENDED, JobPhase.LEFT_QUEUE)


@dataclass(frozen=True)
class Cancelled:
    arrays: list[str]
    warnings: list[str]


def cancel_jobs(sweep_dir: Path) -> Cancelled:
    """scancel the sweep's arrays that still have tasks pending or running."""
    jobs = load_jobs(sweep_dir)
    scheduler = observe(job.job_id for job in jobs.jobs)
    live = sorted(
        {job_id.split("_")[0] for job_id, view in scheduler.jobs.items() if view.is_live},
        key=int,
    )
    warnings = [*jobs.problems, *scheduler.problems]
    if live:
        done = subprocess.run(
            ["scancel", *live], capture_output=True, text=True, check=False, timeout=60
        )
        warnings += [f"scancel: {line}" for line in done.stderr.strip().splitlines()[:3]]
        if done.returncode == 0:
            record_cancel(sweep_dir, jobs.cancelled | set(live))
    return Cancelled(live, warnings)


def record_cancel(sweep_dir: Path, arrays: Iterable[str]) -> None:
    records.write(
        SweepLayout(sweep_dir).cancelled, records.CancelRecord(arrays=sorted(arrays, key=int))
    )


def cancel(sweep_dir: Path) -> list[str]:
    """scancel the sweep's live arrays; their ids."""
    return cancel_jobs(sweep_dir).arrays
