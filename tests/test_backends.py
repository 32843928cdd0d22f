"""Backends are classes picked by name: `auto` takes SLURM where sbatch is, this machine
elsewhere; each packs its cells its own way; the scheduler's words map onto one JobPhase."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from mnistsweep.errors import MnistsweepError
from mnistsweep.execute import backends, scheduler
from mnistsweep.execute.local import LocalBackend
from mnistsweep.execute.slurm_backend import SlurmBackend
from mnistsweep.sweep.spec import parse_spec
from mnistsweep.sweep.state import CellState, JobPhase, from_job


def with_sbatch(monkeypatch, tmp_path, present: bool) -> None:
    tools = tmp_path / "bin"
    tools.mkdir(exist_ok=True)
    if present:
        (tools / "sbatch").write_text("#!/bin/sh\nexit 1\n")
        (tools / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", str(tools))


def test_auto_is_slurm_where_sbatch_is_and_local_elsewhere(monkeypatch, tmp_path):
    with_sbatch(monkeypatch, tmp_path, present=False)
    assert isinstance(backends.resolve("auto"), LocalBackend)
    with pytest.raises(MnistsweepError, match=r"executor slurm: `sbatch` is not on PATH"):
        backends.resolve("slurm")
    with_sbatch(monkeypatch, tmp_path, present=True)
    assert isinstance(backends.resolve("auto"), SlurmBackend)


@given(todo=st.integers(1, 500), parallel=st.integers(1, 16))
def test_each_backend_packs_its_own_way(todo, parallel):
    document = {"name": "x", "grid": {"seed": [0]}, "executor": {"local_parallel": parallel}}
    spec = parse_spec(document, Path("x.yaml"))
    assert LocalBackend().cells_per_job(spec, todo) == -(-todo // parallel)
    assert SlurmBackend().cells_per_job(spec, todo) == 1


WORDS = sorted(
    {"PENDING"}
    | scheduler.WAITING_STATES
    | scheduler.RUNNING_STATES
    | scheduler.REQUEUED_STATES
    | scheduler.ENDED_STATES
)


@given(word=st.sampled_from(WORDS), epochs=st.integers(0, 5), restarts=st.integers(0, 3))
def test_a_job_word_decides_a_cell_state_through_its_phase(word, epochs, restarts):
    job = scheduler.job_view("7_1", f"{word} by 0", "Priority", restarts)
    state, _ = from_job(job, epochs)
    if word in scheduler.ENDED_STATES:
        assert job.phase is JobPhase.ENDED and not job.is_live
        ended_as = {"CANCELLED": CellState.CANCELLED, "OUT_OF_MEMORY": CellState.OUT_OF_MEMORY}
        fallback = CellState.INTERRUPTED if epochs else CellState.LOST
        assert state is ended_as.get(word, fallback)
    else:
        assert job.is_live and state.is_live
    if word == "PENDING":
        assert state is (CellState.REQUEUED if restarts and epochs else CellState.QUEUED)


@given(word=st.text(st.characters(categories=["Lu"]), min_size=1, max_size=12))
def test_a_word_the_scheduler_never_says_is_an_unknown_job(word):
    assume(word not in WORDS)
    job = scheduler.job_view("7_1", word)
    assert job.phase is JobPhase.UNKNOWN and not job.is_live
    assert from_job(job, 0) == (CellState.LOST, "job 7_1 is unknown to the scheduler")
