"""What one job runs, without a cluster: the resume-while-progressing rule through submitit's own
checkpoint code, a scheduler stop that is not a cell's failure, one GPU per worker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import submitit
from hypothesis import given
from hypothesis import strategies as st
from submitit.core import job_environment

from mnistsweep.execute import job
from mnistsweep.sweep import records, state
from mnistsweep.sweep.layout import SweepLayout
from mnistsweep.sweep.spec import Cell, load_spec


@pytest.fixture(autouse=True)
def no_scheduler_signal_yet():
    job.SCHEDULER_STOPPING.clear()
    yield
    job.SCHEDULER_STOPPING.clear()


@pytest.fixture
def trainer():
    """Imported here, not at the top: the spawned workers of the GPU test import this module."""
    from mnistsweep.train import trainer

    return trainer


@pytest.fixture
def cells(tiny_spec) -> list[Cell]:
    return load_spec(tiny_spec(name="job", epochs=20)).cells()


def commit_epochs(sweep_dir: Path, cell: Cell, epochs: int) -> None:
    run = SweepLayout(sweep_dir).run(cell)
    run.create()
    records.write(run.state, records.RunState(cell_id=cell.id, epochs_done=epochs))


def time_limit(delayed: submitit.helpers.DelayedSubmission, pickle: Path) -> object | None:
    """What submitit does on USR2 at a time limit (its signal handler, minus the requeue): the
    checkpoint, the countdown check, the pickle of the next attempt."""
    countdown = delayed._timeout_countdown - 1
    refused = job_environment._checkpoint(delayed, pickle, countdown)
    if refused or countdown < 0:
        return None
    return submitit.helpers.DelayedSubmission.load(pickle)


def test_a_progressing_job_outlives_submitits_three_time_limits(tmp_path, cells):
    batch = job.CellBatch()
    delayed = submitit.helpers.DelayedSubmission(batch, str(tmp_path), cells[:1], None)
    delayed.set_timeout(1, 3)  # submitit's default max_num_timeout
    for attempt in range(10):
        resumed = time_limit_after(delayed, tmp_path, cells[0], epochs=attempt + 1)
        assert resumed is not None, f"not requeued after time limit {attempt + 1}"
        delayed = resumed
    assert delayed.function.attempts_without_progress == 0


def time_limit_after(delayed, sweep_dir: Path, cell: Cell, epochs: int):
    delayed.function.progress_at_start = job.progress(SweepLayout(sweep_dir), [cell])
    commit_epochs(sweep_dir, cell, epochs)
    return time_limit(delayed, sweep_dir / "submitted.pkl")


def test_attempts_without_progress_end_the_job_at_the_setting(tmp_path, cells, monkeypatch):
    monkeypatch.setenv(job.MAX_ATTEMPTS_ENV, "2")
    delayed = submitit.helpers.DelayedSubmission(job.CellBatch(), str(tmp_path), cells[:1], None)
    delayed.set_timeout(1, 3)
    delayed = time_limit_after(delayed, tmp_path, cells[0], epochs=1)  # progress
    delayed = time_limit_after(delayed, tmp_path, cells[0], epochs=1)  # none: 1 of 2
    assert delayed is not None
    assert time_limit_after(delayed, tmp_path, cells[0], epochs=1) is None  # none: 2 of 2


def test_the_default_allows_three_attempts_without_progress(tmp_path, cells, monkeypatch):
    monkeypatch.delenv(job.MAX_ATTEMPTS_ENV, raising=False)
    batch = job.CellBatch()
    outcomes = [batch.checkpoint(str(tmp_path), cells[:1], None) for _ in range(3)]
    assert [outcome is None for outcome in outcomes] == [False, False, True]


def test_a_scheduler_stop_during_training_is_not_a_failure(tmp_path, cells, monkeypatch, trainer):
    def stopped(*args):
        raise submitit.core.utils.UncompletedJobError("Job not requeued because: timed out")

    monkeypatch.setattr(trainer, "run_cell", stopped)
    with pytest.raises(submitit.core.utils.UncompletedJobError):
        job.CellBatch()(str(tmp_path), cells[:1], None)
    run = SweepLayout(tmp_path).run(cells[0])
    assert not run.result.exists()
    assert state.derive(run).state is state.CellState.NOT_STARTED  # relaunch trains it


def test_an_error_after_the_schedulers_signal_is_not_the_cells_failure(
    tmp_path, cells, monkeypatch, trainer
):
    def requeue_fails(*args):
        job.CellBatch().checkpoint(str(tmp_path), cells[:1], None)  # the USR2 handler runs
        raise OSError("scontrol: error: requeue refused")

    monkeypatch.setattr(trainer, "run_cell", requeue_fails)
    with pytest.raises(OSError):
        job.CellBatch()(str(tmp_path), cells[:1], None)
    assert not SweepLayout(tmp_path).run(cells[0]).result.exists()


def test_a_failure_is_a_valid_record_and_a_busy_cell_is_left_alone(
    tmp_path, cells, monkeypatch, trainer
):
    def broken(*args):
        raise ValueError("bad weights")

    monkeypatch.setattr(trainer, "run_cell", broken)
    with state.training_lock(SweepLayout(tmp_path).run(cells[1])):
        outcomes = job.CellBatch()(str(tmp_path), cells[:2], None)
    assert [o["status"] for o in outcomes] == ["failed", "training"]
    failed = records.read(records.RunResult, SweepLayout(tmp_path).run(cells[0]).result)
    assert failed is not None and failed.error == "ValueError: bad weights"
    assert not SweepLayout(tmp_path).run(cells[1]).result.exists()


def test_training_lock_never_truncates_a_planted_symlink(tmp_path, cells):
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    run = SweepLayout(tmp_path / "sweep").run(cells[0])
    run.create()
    run.lock.symlink_to(precious)
    with pytest.raises(Exception, match="symlink"):
        job.run_one(str(tmp_path / "sweep"), None, cells[0])
    assert precious.read_text() == "keep me"


# --- one GPU per worker -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "devices"),
    [
        ({"CUDA_VISIBLE_DEVICES": "0,1,2,3"}, ["0", "1", "2", "3"]),
        ({"CUDA_VISIBLE_DEVICES": "", "SLURM_GPUS_ON_NODE": "2"}, []),
        ({"SLURM_JOB_GPUS": "4,5"}, ["4", "5"]),
        ({"SLURM_GPUS_ON_NODE": "3"}, ["0", "1", "2"]),
        ({"CUDA_VISIBLE_DEVICES": "NoDevFiles"}, []),
        ({}, []),
    ],
)
def test_visible_devices(environ, devices):
    assert job.visible_devices(environ) == devices


@given(devices=st.lists(st.sampled_from("01234567"), unique=True), workers=st.integers(1, 16))
def test_round_robin_gives_each_worker_one_device_and_spreads_them(devices, workers):
    chosen = [job.device_for(slot, devices) for slot in range(workers)]
    if len(devices) <= 1:
        assert chosen == [None] * workers  # nothing to spread: the environment is left alone
        return
    assert all(device in devices for device in chosen)
    counts = [chosen.count(device) for device in devices]
    assert max(counts) - min(counts) <= 1


def report_device(cell: Cell) -> dict[str, str]:
    """Stands for training in a worker: which device the worker was given."""
    return {"cell_id": cell.id, "status": os.environ.get("CUDA_VISIBLE_DEVICES", "none")}


def test_each_worker_process_sees_a_single_different_device(tmp_path, cells, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    seen = job.train_side_by_side(SweepLayout(tmp_path), cells[:2], report_device, 2)
    assert sorted(outcome["status"] for outcome in seen) == ["0", "1"]
