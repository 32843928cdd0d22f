"""What one submitted job runs: its cells, one after another, each failure kept to its own cell.

The same `CellBatch` runs under the local executor and under SLURM, so the local path tests the
cluster path's code. It is checkpointable: when SLURM preempts or times out the job, submitit
requeues the same call and each cell resumes from its last completed epoch on disk.
"""

from __future__ import annotations

import fcntl
import functools
import multiprocessing
import os
import traceback
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import submitit

from mnistsweep.sweep.rundir import FINAL_STATUSES, RunFiles, write_json_atomic
from mnistsweep.sweep.spec import Cell

ERROR_TAIL_LINES = 20
# Cell ids (comma-separated) that fail on purpose: how tests and users check that a failure stays
# in its cell, is recorded with its traceback, and shows in `status`.
FAIL_CELLS_ENV = "MNISTSWEEP_FAIL_CELLS"


def run_dir(sweep_dir: Path, cell: Cell) -> Path:
    return sweep_dir / "runs" / cell.dirname


@contextmanager
def exclusive(run_root: Path) -> Iterator[bool]:
    """Hold the run's lock while training, so two launches of one sweep never train a cell twice."""
    run_root.mkdir(parents=True, exist_ok=True)
    with open(run_root / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class CellBatch(submitit.helpers.Checkpointable):
    """Callable shipped to each job; submitit pickles it with its arguments.

    With `concurrent` > 1 the job trains that many cells at once, each in its own process: MNIST
    models leave a GPU mostly idle, and several trainings side by side fill it.
    """

    def __call__(
        self, sweep_dir: str, cells: list[Cell], data_dir: str | None, concurrent: int = 1
    ) -> list[dict[str, Any]]:
        train_cell = functools.partial(run_one, sweep_dir, data_dir)
        if concurrent <= 1 or len(cells) <= 1:
            return [train_cell(cell) for cell in cells]
        share_one_gpu(Path(sweep_dir))
        with ProcessPoolExecutor(min(concurrent, len(cells)), mp_context=spawn_context()) as pool:
            return list(pool.map(train_cell, cells))


def spawn_context() -> multiprocessing.context.SpawnContext:
    """Fresh interpreters: a forked copy of a process that imported a GPU runtime is unsafe."""
    return multiprocessing.get_context("spawn")


def share_one_gpu(sweep_dir: Path) -> None:
    """Settings the worker processes inherit: JAX takes GPU memory as it needs it instead of 75%
    of it per process, and compiled programs are cached on disk, so the cells of one
    architecture compile once for the whole sweep."""
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(sweep_dir / ".cache" / "jax"))


def run_one(sweep_dir: str, data_dir: str | None, cell: Cell) -> dict[str, Any]:
    files = RunFiles(run_dir(Path(sweep_dir), cell))
    with exclusive(files.root) as acquired:
        if not acquired:
            status = "busy"  # another job holds it; that job records the result
        elif files.status() in FINAL_STATUSES:
            status = files.status()
        else:
            status = train_or_record_failure(cell, files, data_dir)
    return {"cell_id": cell.id, "cell_name": cell.name, "status": status}


def train_or_record_failure(cell: Cell, files: RunFiles, data_dir: str | None) -> str:
    from mnistsweep.train import trainer  # Keras loads inside the job only

    try:
        if cell.id in os.environ.get(FAIL_CELLS_ENV, "").split(","):
            raise RuntimeError(f"injected failure ({FAIL_CELLS_ENV})")
        return trainer.run_cell(cell, files.root, Path(data_dir) if data_dir else None)["status"]
    except Exception as error:  # a cell's failure must not stop the job's other cells
        details = traceback.format_exc()
        files.error.write_text(details)
        write_json_atomic(
            files.result,
            {
                "status": "failed",
                "cell_id": cell.id,
                "cell_name": cell.name,
                "axes": list(cell.axes),
                "config": dict(cell.config),
                "error": f"{type(error).__name__}: {error}",
                "error_tail": details.strip().splitlines()[-ERROR_TAIL_LINES:],
            },
        )
        return "failed"
