"""A cell's state, in one vocabulary, derived in one place from its folder and the scheduler.

launch (what to train), status, the progress bar, aggregate and the report all ask `derive`.

| state        | means                                                     | a plain relaunch |
|--------------|-----------------------------------------------------------|------------------|
| not started  | no job and no epoch yet                                   | trains it        |
| queued       | its job waits in the queue (or for its turn in its job)   | leaves it        |
| training     | a process holds the cell's lock: epoch k of N             | leaves it        |
| requeued     | the scheduler requeued its job; it will resume            | leaves it        |
| interrupted  | epochs are committed, nothing runs it now                 | resumes it       |
| lost         | its job ended without a result or a committed epoch       | trains it        |
| completed    | result.json with test and validation scores               | leaves it        |
| diverged     | the loss became NaN/inf; recorded, final                  | leaves it        |
| failed       | result.json with the error                                | --retry-failed   |
| damaged      | result.json exists but cannot be read                     | trains it again  |
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from mnistsweep import fsio
from mnistsweep.sweep import records
from mnistsweep.sweep.layout import RunLayout


class CellState(str, Enum):
    NOT_STARTED = "not started"
    QUEUED = "queued"
    TRAINING = "training"
    REQUEUED = "requeued"
    INTERRUPTED = "interrupted"
    LOST = "lost"
    COMPLETED = "completed"
    DIVERGED = "diverged"
    FAILED = "failed"
    DAMAGED = "damaged"

    def __str__(self) -> str:
        return self.value

    @property
    def is_final(self) -> bool:
        return self in (CellState.COMPLETED, CellState.DIVERGED)

    @property
    def is_live(self) -> bool:
        """Someone (a queued or running job, a local process) will still work on it."""
        return self in (CellState.QUEUED, CellState.TRAINING, CellState.REQUEUED)

    @property
    def is_ended_badly(self) -> bool:
        return self in (CellState.FAILED, CellState.LOST, CellState.DAMAGED)


# Scheduler states, as sacct prints them, after which a job will not run again by itself.
JOB_ENDED = frozenset(
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
JOB_REQUEUED = frozenset({"REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING"})


@dataclass(frozen=True)
class JobView:
    """What the scheduler says of one job, in one call for the whole sweep."""

    job_id: str
    state: str  # sacct's word: PENDING, RUNNING, COMPLETED, ...
    reason: str = ""  # squeue's pending reason, when there is one


@dataclass(frozen=True)
class CellView:
    state: CellState
    epochs_done: int = 0
    job_id: str | None = None
    detail: str = ""  # the pending reason, the error's first line, what is damaged
    result: records.RunResult | None = None


def derive(run: RunLayout, job: JobView | None = None) -> CellView:
    """The cell's truth: its result first, then who holds its lock, then its job, then its
    committed epochs."""
    job_id = job.job_id if job else None
    try:
        result = records.read(records.RunResult, run.result)
    except records.DamagedRecord as damaged:
        return CellView(CellState.DAMAGED, job_id=job_id, detail=str(damaged))
    if result is not None:
        detail = (result.error or "").splitlines()[0] if result.error else ""
        state = CellState(result.status)
        return CellView(state, result.metrics.epochs_run, job_id, detail, result)
    epochs = committed_epochs(run)
    if is_locked(run.lock):
        return CellView(CellState.TRAINING, epochs, job_id)
    if job is None:
        return CellView(CellState.INTERRUPTED if epochs else CellState.NOT_STARTED, epochs)
    if job.state == "PENDING":
        return CellView(CellState.QUEUED, epochs, job_id, job.reason)
    if job.state in JOB_REQUEUED:
        return CellView(CellState.REQUEUED, epochs, job_id, job.reason)
    if job.state == "RUNNING":  # a packed job trains its cells in turn
        return CellView(CellState.QUEUED, epochs, job_id, "waiting for its turn in its job")
    if job.state.split()[0] in JOB_ENDED:
        ended = f"job {job_id} ended {job.state.split()[0]}"
        if epochs:
            return CellView(CellState.INTERRUPTED, epochs, job_id, ended)
        return CellView(CellState.LOST, epochs, job_id, ended)
    return CellView(CellState.QUEUED, epochs, job_id, job.state.lower())


def committed_epochs(run: RunLayout) -> int:
    try:
        state = records.read(records.RunState, run.state)
    except records.DamagedRecord:
        return 0
    return state.epochs_done if state else 0


def is_locked(lock: Path) -> bool:
    """Whether a process holds the cell's lock (is training it). Creates nothing."""
    try:
        descriptor = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
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
