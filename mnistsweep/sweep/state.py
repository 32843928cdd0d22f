"""A cell's state, in one vocabulary, derived in one place from its folder and the scheduler.

launch (what to train), status, the progress bar, aggregate and the report all ask `derive`.

| state        | means                                                     | a plain relaunch |
|--------------|-----------------------------------------------------------|------------------|
| not started  | no job and no epoch yet                                   | trains it        |
| queued       | its job waits in the queue (or for its turn in its job)   | leaves it        |
| training     | a process holds the cell's lock: epoch k of N             | leaves it        |
| requeued     | the scheduler requeued its job; it will resume            | leaves it        |
| interrupted  | epochs are committed, nothing runs it now (time limit...) | resumes it       |
| cancelled    | its job was cancelled (scancel, `mnistsweep cancel`)      | resumes it       |
| stopped early| successive halving holds it at a rung (sweep/rungs.py)   | leaves it        |
| lost         | its job ended (or vanished) with no result and no epoch   | trains it        |
| unknown      | its job left the queue and accounting (sacct) is down     | trains it        |
| completed    | result.json with test and validation scores               | leaves it        |
| diverged     | the loss became NaN/inf; recorded, final                  | leaves it        |
| failed       | result.json with the error, or its job failed before      | --retry-failed   |
|              | training (a setup line, Python's start: the log's line)   |                  |
| out of memory| the scheduler's OUT_OF_MEMORY, an oom-kill, a MemoryError | trains it again  |
| damaged      | result.json exists but cannot be read                     | trains it again  |
"""

from __future__ import annotations

import fcntl
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from mnistsweep import fsio
from mnistsweep.sweep import records, rungs
from mnistsweep.sweep.layout import RunLayout, SweepLayout


class CellState(str, Enum):
    NOT_STARTED = "not started"
    QUEUED = "queued"
    TRAINING = "training"
    REQUEUED = "requeued"
    INTERRUPTED = "interrupted"
    CANCELLED = "cancelled"
    STOPPED_EARLY = "stopped early"
    LOST = "lost"
    UNKNOWN = "unknown"
    COMPLETED = "completed"
    DIVERGED = "diverged"
    FAILED = "failed"
    OUT_OF_MEMORY = "out of memory"
    DAMAGED = "damaged"

    def __str__(self) -> str:
        return self.value

    @property
    def is_final(self) -> bool:
        """Nothing more to train, unless a rung promotes a cell stopped early."""
        return self in (CellState.COMPLETED, CellState.DIVERGED, CellState.STOPPED_EARLY)

    @property
    def is_live(self) -> bool:
        """Someone (a queued or running job, a local process) will still work on it."""
        return self in (CellState.QUEUED, CellState.TRAINING, CellState.REQUEUED)

    @property
    def is_ended_badly(self) -> bool:
        return self in (
            CellState.FAILED,
            CellState.OUT_OF_MEMORY,
            CellState.LOST,
            CellState.DAMAGED,
        )

    @property
    def is_bad_news(self) -> bool:
        """`status` and `launch` exit 1: it ended badly, or nobody can tell how it ended."""
        return self.is_ended_badly or self is CellState.UNKNOWN


class JobPhase(str, Enum):
    """Where a job stands, in the scheduler's terms; execute.scheduler maps sacct's and
    squeue's words onto these."""

    PENDING = "pending"  # waits for its turn (or its start time, a dependency, a hold)
    WAITING = "waiting"  # held otherwise: configuring, suspended, stopped
    RUNNING = "running"
    REQUEUED = "requeued"  # the scheduler put it back in the queue; it will resume
    ENDED = "ended"  # it will not run again by itself
    UNKNOWN = "unknown"  # the scheduler does not know it (any more)
    LEFT_QUEUE = "left the queue"  # not in squeue, and sacct could not say how it ended
    UNOBSERVED = "unobserved"  # neither sacct nor squeue answered

    @property
    def is_live(self) -> bool:
        """The job will still run (or runs): its cells are not abandoned."""
        return self in (JobPhase.PENDING, JobPhase.WAITING, JobPhase.RUNNING, JobPhase.REQUEUED)


@dataclass(frozen=True)
class JobView:
    """What the scheduler says of one job, in one call for the whole sweep."""

    job_id: str
    state: str  # sacct's or squeue's word: PENDING, RUNNING, COMPLETED, CANCELLED by 0, ...
    reason: str = ""  # the pending reason, when there is one
    restarts: int = 0  # times the job was requeued (time limit, preemption)
    phase: JobPhase = JobPhase.UNKNOWN  # what `state` means
    memory: str = ""  # the memory it asked for, as sacct's ReqMem says it (32G)

    @property
    def word(self) -> str:
        return self.state.split()[0] if self.state.strip() else "UNKNOWN"

    @property
    def is_live(self) -> bool:
        return self.phase.is_live


@dataclass(frozen=True)
class CellView:
    state: CellState
    epochs_done: int = 0
    job_id: str | None = None
    detail: str = ""  # the pending reason, the error's first line, what is damaged
    result: records.RunResult | None = None
    problems: tuple[str, ...] = ()  # damaged files read on the way (state.json), one line each


def derive(run: RunLayout, job: JobView | None = None) -> CellView:
    """The cell's truth: its result first, then who holds its lock, then its job, then its
    committed epochs."""
    job_id = job.job_id if job else None
    try:
        result = records.read(records.RunResult, run.result)
        damaged = ""
    except records.DamagedRecord as error:
        result, damaged = None, str(error)
    if result is not None:
        state, detail = from_result(result)
        return CellView(state, result.metrics.epochs_run, job_id, detail, result)
    epochs, problems = read_progress(run)
    if is_locked(run.lock):
        return CellView(CellState.TRAINING, epochs, job_id, problems=problems)
    if damaged:
        return CellView(CellState.DAMAGED, epochs, job_id, damaged, problems=problems)
    held = _held_at_rung(run, epochs)
    if held:
        return CellView(CellState.STOPPED_EARLY, epochs, job_id, held, problems=problems)
    if job is None:
        started = CellState.INTERRUPTED if epochs else CellState.NOT_STARTED
        return CellView(started, epochs, problems=problems)
    state, detail = from_job(job, epochs)
    if run.sweep_root is not None and reads_log(job, state):
        log = SweepLayout(run.sweep_root).task_log(job.job_id)
        state, detail = from_log(log, job, state, detail)
    return CellView(state, epochs, job_id, detail, problems=problems)


def from_result(result: records.RunResult) -> tuple[CellState, str]:
    """A recorded failure that is Python's MemoryError reads out of memory, with the advice."""
    detail = result.error.splitlines()[0] if result.error else ""
    if result.status == CellState.FAILED.value and OOM_LINE.search(detail):
        return CellState.OUT_OF_MEMORY, f"{detail} ({OOM_ADVICE})"
    return CellState(result.status), detail


def _held_at_rung(run: RunLayout, epochs: int) -> str:
    """Why successive halving holds the cell at its committed epoch, or "" when it does not (a
    marker of another epoch is stale: a resume went past it)."""
    try:
        marker = rungs.stopped_at(run)
    except records.DamagedRecord:
        return ""
    if marker is None or marker.rung != epochs:
        return ""
    return f"at epoch {marker.rung}: {marker.metric} {marker.value:.4g} not among the best"


def from_job(job: JobView, epochs: int) -> tuple[CellState, str]:
    """An unlocked cell without a result, as its job's state makes it."""
    phase = job.phase
    if phase is JobPhase.REQUEUED or (phase is JobPhase.PENDING and job.restarts and epochs):
        return CellState.REQUEUED, job.reason
    if phase in (JobPhase.PENDING, JobPhase.WAITING):
        return CellState.QUEUED, job.reason or job.word.lower()
    if phase is JobPhase.RUNNING:  # a packed job trains its cells in turn
        return CellState.QUEUED, f"waiting in job {job.job_id}"
    if phase is JobPhase.ENDED and job.word == "CANCELLED":
        by = job.state.split(maxsplit=1)[1:]
        return CellState.CANCELLED, f"job {job.job_id} cancelled {by[0] if by else ''}".rstrip()
    if phase is JobPhase.ENDED and job.word == "OUT_OF_MEMORY":
        return CellState.OUT_OF_MEMORY, out_of_memory(job)
    if phase is JobPhase.ENDED:
        ended = f"job {job.job_id} ended {job.word}"
    elif phase is JobPhase.UNKNOWN:
        ended = f"job {job.job_id} is unknown to the scheduler"
    elif phase is JobPhase.LEFT_QUEUE and epochs:  # accounting (sacct) is down
        ended = f"job {job.job_id} left the queue (accounting down)"
    else:  # how the job ended, or whether it still waits, cannot be told
        where = "left the queue" if phase is JobPhase.LEFT_QUEUE else "was not seen by squeue"
        return CellState.UNKNOWN, f"(accounting down) job {job.job_id} {where}"
    return (CellState.INTERRUPTED if epochs else CellState.LOST), ended


def out_of_memory(job: JobView) -> str:
    had = f"with {job.memory}" if job.memory else "with its executor.slurm.mem_gb"
    return f"job {job.job_id} ran out of memory {had}: {OOM_ADVICE}"


# --- what a task log says -----------------------------------------------------------------------

LOG_READ_LIMIT = 16 * 1024 * 1024
OOM_ADVICE = "raise executor.slurm.mem_gb or lower executor.concurrent_cells, then launch again"
# An out-of-memory kill as SLURM's step daemon, the kernel, Python or a GPU allocator report it.
# Without cgroups, slurmd's own poll (JobAcctGatherParams=OverMemoryKill) kills the step and
# sacct says FAILED, 0:9: only the log's "exceeded memory limit" tells it (seen on the test
# cluster: "slurmstepd-vm: error: StepId=62.batch exceeded memory limit (163651584 > 104857600),
# being killed", then "Exceeded job memory limit").
OOM_LINE = re.compile(
    r"oom[-_ ]?kill|out of memory|MemoryError|\bOOM when allocating|RESOURCE_EXHAUSTED"
    r"|exceeded (job |step )?memory limit",
    re.IGNORECASE,
)
# A line that says what went wrong: mnistsweep's own (a setup line, a missing snapshot), the
# shell's, Python's exception line (a traceback's frames are indented), an `error:` of a tool.
ERROR_LINE = re.compile(
    r"^mnistsweep: |command not found|No such file or directory|^[\w.]*(Error|Exception)\b:"
    r"|\berror\b|\bfailed\b",
    re.IGNORECASE,
)
# The step daemon's notices of the scheduler's own acts (cancel, time limit) explain nothing, and
# a cell's failure, which its result.json holds, explains no other cell of a packed job.
CELL_FAILED = "mnistsweep: cell "  # how a job's log says one of its cells failed (execute.job)
NOTICE_LINE = re.compile(r"^slurmstepd: error: \*\*\* |^" + re.escape(CELL_FAILED))


def reads_log(job: JobView, state: CellState) -> bool:
    """The task log tells more when the job ended without a reason of the scheduler's own (a
    time limit, a cancel, a node failure are theirs: FAILED is an exit of Python or of a setup
    line) or when the scheduler cannot say how it ended."""
    if job.phase is JobPhase.ENDED:
        return job.word in ("FAILED", "COMPLETED")
    return state in (CellState.LOST, CellState.UNKNOWN)


def from_log(log: Path, job: JobView, state: CellState, detail: str) -> tuple[CellState, str]:
    """Out of memory or failed, with the log's first line that says why; else as it was."""
    text = fsio.read_text(log, LOG_READ_LIMIT) if log.is_file() else None
    # A traceback's frames and quoted source are indented: only its last line says what failed.
    lines = [
        line.rstrip()
        for line in (text or "").splitlines()
        if line[:1].strip() and not NOTICE_LINE.match(line)
    ]
    for line in lines:
        if OOM_LINE.search(line):
            return CellState.OUT_OF_MEMORY, f"{out_of_memory(job)} (log: {line})"
    for line in lines:
        if ERROR_LINE.search(line):
            return CellState.FAILED, line
    return state, detail


def committed_epochs(run: RunLayout) -> int:
    return read_progress(run)[0]


def read_progress(run: RunLayout) -> tuple[int, tuple[str, ...]]:
    """Committed epochs from state.json, and the problem when it is damaged (then 0)."""
    try:
        state = records.read(records.RunState, run.state)
    except records.DamagedRecord as damaged:
        return 0, (str(damaged),)
    return (state.epochs_done if state else 0), ()


def is_locked(lock: Path) -> bool:
    """Whether a process holds the cell's lock (is training it). Creates nothing."""
    try:
        descriptor = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            return False  # a FIFO or a device planted as the lock: nobody holds it
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)
    return False


@contextmanager
def training_lock(run: RunLayout) -> Iterator[bool]:
    """Hold the cell's lock while training it, so two launches never train one cell at once.
    Yields False (and holds nothing) when another process has it."""
    run.create()
    descriptor = fsio.open_lock(run.lock)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)
