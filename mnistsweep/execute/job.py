"""What one submitted job runs: its cells, one after another, each failure kept to its own cell.

The same `CellBatch` runs under the local executor and under SLURM, so the local path tests the
cluster path's code. It is checkpointable: when SLURM preempts the job or its time limit comes,
submitit calls `checkpoint`, requeues the same call, and each cell resumes from its last
committed epoch on disk. A job keeps coming back as long as its attempts make progress.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import re
import signal
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import submitit

from mnistsweep import fsio
from mnistsweep.sweep import records, state
from mnistsweep.sweep.layout import RunLayout, SweepLayout
from mnistsweep.sweep.spec import Cell, ExecutorOptions

ERROR_TAIL_LINES = 20
# Cell ids (comma-separated) that fail on purpose: how tests and users check that a failure stays
# in its cell, is recorded with its traceback, and shows in `status`.
FAIL_CELLS_ENV = "MNISTSWEEP_FAIL_CELLS"
# Attempts in a row (time limits, preemptions) that commit no epoch before a job stops coming
# back: an epoch longer than the time limit would otherwise requeue forever. The spec's
# `executor.max_attempts_without_progress` sets it; this variable is the default without one.
MAX_ATTEMPTS_ENV = "MNISTSWEEP_MAX_ATTEMPTS_WITHOUT_PROGRESS"
DEFAULT_MAX_ATTEMPTS_WITHOUT_PROGRESS = 3
# submitit's own count of time limits (`max_num_timeout`, 3 by default) would end a job that is
# still progressing; the progress rule above decides instead, so that count is kept out of reach.
UNREACHABLE_TIMEOUT_COUNT = 1_000_000
# Set when the scheduler's warning signal arrived: whatever the training raises from then on
# (submitit's requeue failing, say) is the job being stopped, not the cell failing.
SCHEDULER_STOPPING = threading.Event()
# The frameworks' C++ logging, quiet from the start: set in the job before any framework loads
# (worker processes inherit them). A value the user set is kept.
QUIET_ENVIRONMENT = {
    "TF_CPP_MIN_LOG_LEVEL": "3",  # TensorFlow's info, warnings and C++ errors (Python raises)
    "GRPC_VERBOSITY": "ERROR",
    "GLOG_minloglevel": "2",
    "ABSL_MIN_LOG_LEVEL": "2",
}
# What absl prints while TensorFlow's libraries load, before any setting can reach it.
BANNER_LINE = re.compile(
    r"All log messages before absl::InitializeLog|oneDNN custom operations|"
    r"Could not find cuda drivers|Unable to register cu(DNN|FFT|BLAS) factory|TF-TRT Warning|"
    r"This TensorFlow binary is optimized|rebuild TensorFlow with the appropriate compiler|"
    r"computation placer already registered|failed call to cuInit|"
    r"Attempting to register factory for plugin"
)


class CellBatch(submitit.helpers.Checkpointable):
    """Callable shipped to each job; submitit pickles it with its arguments (and again, with the
    attempts counted so far, at each checkpoint).

    With `concurrent` > 1 the job trains that many cells at once, each in its own process: MNIST
    models leave a GPU mostly idle, and several trainings side by side fill it. With several
    GPUs, each process gets one of them.
    """

    def __init__(self, max_attempts_without_progress: int | None = None) -> None:
        self.max_attempts_without_progress = (
            max_attempts_without_progress or max_attempts_from_env()
        )
        self.attempts_without_progress = 0
        self.progress_at_start = 0

    def __call__(
        self, sweep_dir: str, cells: list[Cell], data_dir: str | None, concurrent: int = 1
    ) -> list[dict[str, str]]:
        quiet_frameworks(os.environ)
        layout = SweepLayout(Path(sweep_dir))
        self.progress_at_start = progress(layout, cells)
        train_cell = functools.partial(run_one, sweep_dir, data_dir)
        try:
            outcomes = train_cells(layout, cells, train_cell, concurrent)
            # Successive halving: a cell of this job that a later one promoted goes on here.
            while promoted := promoted_since(layout, cells, outcomes):
                again = {
                    o["cell_id"]: o for o in train_cells(layout, promoted, train_cell, concurrent)
                }
                outcomes = [again.get(outcome["cell_id"], outcome) for outcome in outcomes]
            return outcomes
        except KeyboardInterrupt:  # Ctrl-C on a local launch, or its cancel: one line in the log
            print(
                "mnistsweep: interrupted; the cells keep their committed epochs and a new "
                "launch resumes them",
                file=sys.stderr,
                flush=True,
            )
            raise SystemExit(130) from None

    def checkpoint(  # type: ignore[override]  # submitit takes None: "do not requeue"
        self, sweep_dir: str, cells: list[Cell], data_dir: str | None, concurrent: int = 1
    ) -> submitit.helpers.DelayedSubmission | None:
        """Called by submitit on the scheduler's warning signal: come back (requeue) unless
        too many attempts in a row committed nothing."""
        SCHEDULER_STOPPING.set()
        if progress(SweepLayout(Path(sweep_dir)), cells) > self.progress_at_start:
            self.attempts_without_progress = 0
        else:
            self.attempts_without_progress += 1
        if self.attempts_without_progress >= self.max_attempts_without_progress:
            print(
                f"mnistsweep: {self.attempts_without_progress} attempts in a row committed no "
                "epoch (does one epoch outlast the time limit?): not requeued; the cells keep "
                "their committed epochs: raise executor.slurm.timeout_min and launch again",
                file=sys.stderr,
                flush=True,
            )
            return None
        return DelayedSubmission(self, sweep_dir, cells, data_dir, concurrent)


def submit_batch(
    executor: submitit.Executor,
    options: ExecutorOptions,
    sweep_dir: Path,
    batch: list[Cell],
    data_dir: Path | None,
) -> submitit.Job[list[dict[str, str]]]:
    """The one place a job is made: every backend submits the same CellBatch call (absolute
    paths: a SLURM job runs in the code snapshot's folder)."""
    return executor.submit(
        CellBatch(options.max_attempts_without_progress),
        str(sweep_dir.absolute()),
        batch,
        str(data_dir.absolute()) if data_dir else None,
        options.concurrent_cells,
    )


class DelayedSubmission(submitit.helpers.DelayedSubmission):
    """submitit's resubmission, keeping submitit's count of time limits out of reach (the
    progress rule of `CellBatch.checkpoint` ends a job instead). submitit checks the class
    name when it loads the pickle, hence the same name."""

    def set_timeout(self, timeout_min: int, max_num_timeout: int) -> None:
        super().set_timeout(timeout_min, max(max_num_timeout, UNREACHABLE_TIMEOUT_COUNT))


def max_attempts_from_env() -> int:
    text = os.environ.get(MAX_ATTEMPTS_ENV, "")
    return int(text) if text.isdigit() and int(text) > 0 else DEFAULT_MAX_ATTEMPTS_WITHOUT_PROGRESS


def progress(layout: SweepLayout, cells: Sequence[Cell]) -> int:
    """A number that grows with every committed epoch and every result of the job's cells."""
    total = 0
    for cell in cells:
        run = layout.run(cell)
        total += state.committed_epochs(run) + (1 if run.result.exists() else 0)
    return total


def train_cells(
    layout: SweepLayout,
    cells: list[Cell],
    train_cell: Callable[[Cell], dict[str, str]],
    concurrent: int,
) -> list[dict[str, str]]:
    if concurrent <= 1 or len(cells) <= 1:
        return [train_cell(cell) for cell in cells]
    return train_side_by_side(layout, cells, train_cell, min(concurrent, len(cells)))


def promoted_since(
    layout: SweepLayout, cells: list[Cell], outcomes: list[dict[str, str]]
) -> list[Cell]:
    """The cells that stopped early in this job and that a rung has since let go on. Each
    retraining ends at a later rung or the last epoch, so asking again terminates."""
    return [
        cell
        for cell, outcome in zip(cells, outcomes, strict=True)
        if outcome["status"] == state.CellState.STOPPED_EARLY.value
        and state.derive(layout.run(cell)).state is state.CellState.INTERRUPTED
    ]


# --- several cells at once ----------------------------------------------------------------------


def train_side_by_side(
    layout: SweepLayout,
    cells: list[Cell],
    train_cell: Callable[[Cell], dict[str, str]],
    workers: int,
) -> list[dict[str, str]]:
    """Each cell in a fresh worker process, `workers` at a time, one GPU per worker when there
    are several. When the job is interrupted (time limit, Ctrl-C) the workers are stopped at
    once: their committed epochs are on disk."""
    share_one_gpu(layout)
    context = spawn_context()
    slots = context.Queue()
    for slot in range(workers):
        slots.put(slot)
    pool = ProcessPoolExecutor(
        workers,
        mp_context=context,
        initializer=start_worker,
        initargs=(slots, visible_devices(os.environ)),
    )
    try:
        results = list(pool.map(train_cell, cells))
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        for worker in multiprocessing.active_children():
            worker.terminate()
        raise
    pool.shutdown()
    return results


def spawn_context() -> multiprocessing.context.SpawnContext:
    """Fresh interpreters: a forked copy of a process that imported a GPU runtime is unsafe."""
    return multiprocessing.get_context("spawn")


def share_one_gpu(layout: SweepLayout) -> None:
    """Settings the worker processes inherit: JAX takes GPU memory as it needs it instead of 75%
    of it per process, and compiled programs are cached on disk, so the cells of one
    architecture compile once for the whole sweep."""
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(layout.compile_cache))


def visible_devices(environ: Mapping[str, str]) -> list[str]:
    """The GPUs this task may use, as CUDA names them: CUDA_VISIBLE_DEVICES when set, else
    SLURM's view of the task's GPUs."""
    for key in ("CUDA_VISIBLE_DEVICES", "SLURM_STEP_GPUS", "SLURM_JOB_GPUS"):
        if key in environ:
            return [device for device in environ[key].split(",") if device.strip().isdigit()]
    count = environ.get("SLURM_GPUS_ON_NODE", "")
    return [str(index) for index in range(int(count))] if count.isdigit() else []


def device_for(slot: int, devices: Sequence[str]) -> str | None:
    """Round robin: worker `slot` gets one device; None when there is nothing to spread."""
    return devices[slot % len(devices)] if len(devices) > 1 else None


def start_worker(slots: Any, devices: list[str]) -> None:
    """In each worker, before any framework import: its own GPU, and the job's signals left to
    the job's main process (which checkpoints, then stops the workers)."""
    device = device_for(slots.get(), devices)
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = device
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# --- quiet logs ---------------------------------------------------------------------------------


def quiet_frameworks(environ: MutableMapping[str, str]) -> None:
    for key, value in QUIET_ENVIRONMENT.items():
        environ.setdefault(key, value)


@contextmanager
def banners_dropped() -> Iterator[None]:
    """While the framework loads, its standard error (fd 2, where C++ writes) goes to a file;
    then every line comes back to the task log but the start-up banners."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            lines = caught.read().decode("utf-8", errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not BANNER_LINE.search(line)))
            sys.stderr.flush()


# --- one cell -----------------------------------------------------------------------------------


def run_one(sweep_dir: str, data_dir: str | None, cell: Cell) -> dict[str, str]:
    """Train one cell unless it is final or another process is training it (then its state is
    `training`: that process records its result)."""
    run = SweepLayout(Path(sweep_dir)).run(cell)
    status: str
    with state.training_lock(run) as acquired:
        if not acquired:
            status = state.CellState.TRAINING.value
        else:
            final = final_status(run)
            status = final or train_or_record_failure(cell, run, data_dir)
    return {"cell_id": cell.id, "cell_name": cell.name, "status": status}


def final_status(run: RunLayout) -> str | None:
    """completed or diverged when the cell has such a result (a damaged one is trained again)."""
    try:
        result = records.read(records.RunResult, run.result)
    except records.DamagedRecord:
        return None
    return result.status if result is not None and result.is_final else None


def train_or_record_failure(cell: Cell, run: RunLayout, data_dir: str | None) -> str:
    """The scheduler stopping the job (time limit, preemption, cancel) is not the cell's failure:
    those arrive as BaseException or as submitit's UncompletedJobError and pass through."""
    with banners_dropped():
        from mnistsweep.train import trainer  # Keras loads inside the job only

    try:
        if cell.id in os.environ.get(FAIL_CELLS_ENV, "").split(","):
            raise RuntimeError(f"injected failure ({FAIL_CELLS_ENV})")
        data = Path(data_dir) if data_dir else None
        outcome = trainer.run_cell(cell, run.root, data, run.sweep_root)
    except submitit.core.utils.UncompletedJobError:
        raise
    except Exception as error:  # a cell's failure must not stop the job's other cells
        if SCHEDULER_STOPPING.is_set():
            raise
        record_failure(cell, run, error)
        failed = f"{type(error).__name__}: {error}"
        print(f"{state.CELL_FAILED}{cell.name} failed: {failed}", file=sys.stderr, flush=True)
        return "failed"
    return str(outcome.status if isinstance(outcome, records.RunResult) else outcome["status"])


def record_failure(cell: Cell, run: RunLayout, error: Exception) -> None:
    details = traceback.format_exc()
    fsio.write_text(run.error, details)
    records.write(
        run.result,
        records.RunResult(
            status="failed",
            cell_id=cell.id,
            cell_name=cell.name,
            axes=list(cell.axes),
            config=dict(cell.config),
            error=f"{type(error).__name__}: {error}",
            error_tail=details.strip().splitlines()[-ERROR_TAIL_LINES:],
        ),
    )
