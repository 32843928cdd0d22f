"""States that say what happened, with the scheduler faked on PATH: cancelled (exit 0, a
relaunch resumes it), failed in setup or at Python's start (the log's line), out of memory (with
the memory it had and the advice), and what is left to say when accounting (sacct) is down."""

from __future__ import annotations

import json
import os
import re
import stat
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_status import commit_epochs, finish, give_jobs, line_of, status_of

from mnistsweep.__main__ import main
from mnistsweep.execute import plan as planning
from mnistsweep.sweep import guard
from mnistsweep.sweep.layout import SweepLayout
from mnistsweep.sweep.spec import Cell, load_spec

FAKE_SCHEDULER = """#!/bin/sh
tool="$(basename "$0")"
cat "{folder}/$tool.txt" 2>/dev/null
cat "{folder}/$tool.err" >&2 2>/dev/null
exit "$(cat "{folder}/$tool.rc" 2>/dev/null || echo 0)"
"""
ACCOUNTING_DOWN = "sacct: error: Problem talking to the database: Connection refused"
FIXTURES = [HealthCheck.function_scoped_fixture]


class Scheduler:
    """sacct and squeue on PATH answering a recorded text, an error and an exit status."""

    def __init__(self, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.folder = folder
        folder.mkdir(exist_ok=True)
        for name in ("sacct", "squeue", "scancel"):
            script = folder / name
            script.write_text(FAKE_SCHEDULER.format(folder=folder))
            script.chmod(script.stat().st_mode | stat.S_IEXEC)
        monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")

    def says(self, tool: str, text: str = "", error: str = "", code: int = 0) -> None:
        (self.folder / f"{tool}.txt").write_text(text)
        (self.folder / f"{tool}.err").write_text(error)
        (self.folder / f"{tool}.rc").write_text(str(code))


@pytest.fixture
def seen(tmp_path, tiny_spec) -> tuple[Path, list[Cell]]:
    """A recorded sweep of 4 cells (3 epochs each), nothing trained yet."""
    spec = load_spec(tiny_spec(name="seen", epochs=3))
    sweep_dir = tmp_path / "out" / "seen"
    guard.record_spec(SweepLayout(sweep_dir), spec)
    return sweep_dir, spec.cells()


@pytest.fixture
def scheduler(tmp_path, monkeypatch) -> Scheduler:
    return Scheduler(tmp_path / "bin", monkeypatch)


def write_log(sweep_dir: Path, job_id: str, text: str) -> Path:
    log = SweepLayout(sweep_dir).task_log(job_id)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(text)
    return log


def planned(sweep_dir: Path, tiny_spec) -> planning.Plan:
    spec = load_spec(tiny_spec(name="seen", epochs=3))
    return planning.plan_launch(spec, sweep_dir.parent, "local")


# --- cancelled ----------------------------------------------------------------------------------

CANCELLED_BY = st.sampled_from(["CANCELLED by 0", "CANCELLED by 1000", "CANCELLED"])


@settings(max_examples=30, deadline=None, suppress_health_check=FIXTURES)
@given(
    words=st.lists(CANCELLED_BY, min_size=4, max_size=4),
    epochs=st.lists(st.integers(0, 2), min_size=4, max_size=4),
    as_range=st.booleans(),
)
def test_cancelled_cells_read_cancelled_exit_0_and_a_relaunch_resumes_them(
    seen, scheduler, tiny_spec, capsys, words, epochs, as_range
):
    """Every way sacct shows a cancelled task (its own line, a pending range, the bare array
    id of a range cancelled before it started) reads cancelled, never lost."""
    sweep_dir, cells = seen
    give_jobs(sweep_dir, {f"12_{i}": [cell] for i, cell in enumerate(cells)})
    for cell, done in zip(cells, epochs, strict=True):
        commit_epochs(sweep_dir, cell, done)
    lines = [f"12_{i}|{word}|None|2G" for i, word in enumerate(words)]
    if as_range:  # the last two were pending: one range line, or the array's own line
        lines[2:] = [f"12_[2-3%1]|{words[2]}|None|2G" if words[3] == words[2] else "12|CANCELLED"]
    scheduler.says("sacct", "\n".join(lines) + "\n")

    code, out, _ = status_of(sweep_dir, capsys)

    assert code == 0, out
    assert "4 cells: 4 cancelled" in out
    for cell in cells:
        assert "launch again to resume" in line_of(out, cell)
    assert "lost" not in out
    plan = planned(sweep_dir, tiny_spec)
    assert {cell.id for cell in plan.todo} == {cell.id for cell in cells}


# --- failed before training, out of memory ------------------------------------------------------

QUIET_LINES = st.sampled_from(
    [
        "submitit INFO (2026-12-02 10:00:00,000) - Starting with JobEnvironment(job_id=12_0)",
        "Loading cuda/12.2",
        "mnistsweep: cell arch=mlp,seed=1 failed: MemoryError: another cell's failure",
        "+ cd /scratch/sweep/code/20261202",
        "",
    ]
)
WORDS = st.text(st.characters(categories=["Ll", "Nd"]), min_size=1, max_size=10)
ERROR_LINES = st.one_of(
    WORDS.map(lambda name: f"mnistsweep: setup line failed: module load {name}"),
    WORDS.map(
        lambda name: f"/var/spool/slurmd/job00012/slurm_script: line 9: {name}: command not found"
    ),
    WORDS.map(lambda name: f"ModuleNotFoundError: No module named '{name}'"),
    WORDS.map(lambda name: f"Lmod has detected the following error: unknown module {name}"),
)


@settings(max_examples=40, deadline=None, suppress_health_check=FIXTURES)
@given(
    before=st.lists(QUIET_LINES, max_size=4),
    error=ERROR_LINES,
    after=st.lists(ERROR_LINES, max_size=2),
    epochs=st.integers(0, 2),
    word=st.sampled_from(["FAILED", "COMPLETED"]),
)
def test_a_job_that_failed_before_training_shows_the_logs_first_error_line(
    seen, scheduler, capsys, before, error, after, epochs, word
):
    sweep_dir, cells = seen
    give_jobs(sweep_dir, {"12_0": [cells[0]]})
    commit_epochs(sweep_dir, cells[0], epochs)
    frames = ["Traceback (most recent call last):", '  File "/x/error/_submit.py", line 3']
    log = write_log(sweep_dir, "12_0", "\n".join([*before, *frames, error, *after]) + "\n")
    scheduler.says("sacct", f"12_0|{word}|None|2G\n")

    code, out, _ = status_of(sweep_dir, capsys)

    assert code == 1, out
    shown = line_of(out, cells[0])
    assert shown.split()[0] == "failed" and shown.endswith(error.strip()), shown
    assert f"log: {log}" in out


@pytest.mark.parametrize(
    ("sacct", "log"),
    [
        ("12_0|OUT_OF_MEMORY|None|8G", ""),
        ("12_0|FAILED|None|8G", "slurmstepd: error: Detected 1 oom_kill event in StepId=12.batch"),
        ("12_0|FAILED|None|8G", "Traceback (most recent call last):\nMemoryError"),
        (  # slurmd's OverMemoryKill without cgroups: FAILED (0:9), the reason only in the log
            "12_0|FAILED|None|8G",
            "slurmstepd-vm: error: StepId=12.batch exceeded memory limit (163651584 > 104857600),"
            " being killed\nslurmstepd-vm: error: Exceeded job memory limit",
        ),
    ],
)
def test_out_of_memory_says_the_memory_it_had_and_the_advice(
    seen, scheduler, tiny_spec, capsys, sacct, log
):
    sweep_dir, cells = seen
    give_jobs(sweep_dir, {"12_0": [cells[0]]})
    write_log(sweep_dir, "12_0", log)
    scheduler.says("sacct", sacct + "\n")
    finish(sweep_dir, cells[1], "failed", "MemoryError: Unable to allocate 7.3 GiB")
    gpu = "ResourceExhaustedError: OOM when allocating tensor with shape[512,512]"
    finish(sweep_dir, cells[2], "failed", gpu)

    code, out, _ = status_of(sweep_dir, capsys)

    assert code == 1
    for cell in cells[:3]:
        assert line_of(out, cell).split()[:3] == ["out", "of", "memory"], out
        assert "raise executor.slurm.mem_gb or lower executor.concurrent_cells" in out
    assert "ran out of memory with 8G" in line_of(out, cells[0])
    plan = planned(sweep_dir, tiny_spec)  # a plain relaunch trains them again, the old record aside
    assert {cell.id for cell in cells[:3]} <= {cell.id for cell in plan.todo}
    assert {cells[1].id, cells[2].id} <= plan.retried


def test_a_relaunch_of_a_sweep_whose_cells_all_failed_exits_1(tmp_path, tiny_spec, capsys):
    spec_path = tiny_spec(name="seen", epochs=3)
    sweep_dir = tmp_path / "out" / "seen"
    cells = load_spec(spec_path).cells()
    guard.record_spec(SweepLayout(sweep_dir), load_spec(spec_path))
    for cell in cells:
        finish(sweep_dir, cell, "failed", "RuntimeError: injected failure")
    code = main(["launch", str(spec_path), "--results-dir", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "4 failed" in out and "nothing to train" in out


# --- accounting down ----------------------------------------------------------------------------


def test_with_accounting_down_status_says_what_squeue_and_the_files_know(seen, scheduler, capsys):
    sweep_dir, (queued, gone, resumable, failed) = seen
    give_jobs(sweep_dir, {"12_0": [queued], "12_1": [gone], "12_2": [resumable], "12_3": [failed]})
    commit_epochs(sweep_dir, resumable, 2)
    write_log(sweep_dir, "12_3", "mnistsweep: setup line failed: module load cuda\n")
    scheduler.says("sacct", error=ACCOUNTING_DOWN, code=1)
    scheduler.says("squeue", "12_0            PENDING   0       Priority\n")

    code, out, err = status_of(sweep_dir, capsys)

    assert code == 1, out  # a cell nobody can tell about is no "not started, exit 0"
    assert "not started" not in out
    assert "Priority" in line_of(out, queued) and "queued" in line_of(out, queued)
    assert line_of(out, gone).split()[0] == "unknown" and "accounting down" in out
    assert line_of(out, resumable).split()[0] == "interrupted"
    assert "setup line failed: module load cuda" in line_of(out, failed)
    assert "warning: sacct failed: sacct: error: Problem talking to the database" in err


@settings(max_examples=20, deadline=None, suppress_health_check=FIXTURES)
@given(
    message=st.text(st.characters(categories=["L", "Nd", "Zs", "P"]), max_size=60),
    squeue_down=st.booleans(),
    epochs=st.integers(0, 2),
)
def test_whatever_accounting_says_when_down_a_submitted_cell_is_never_not_started(
    seen, scheduler, tiny_spec, capsys, message, squeue_down, epochs
):
    sweep_dir, cells = seen
    give_jobs(sweep_dir, {"12_0": [cells[0]]})
    commit_epochs(sweep_dir, cells[0], epochs)
    scheduler.says("sacct", error=message, code=1)
    scheduler.says(
        "squeue", error="slurm_load_jobs error: Unable to contact", code=int(squeue_down)
    )

    code, out, err = status_of(sweep_dir, capsys)

    assert code in (0, 1) and "Traceback" not in out + err
    resumable = epochs and not squeue_down  # it left the queue with epochs committed
    assert line_of(out, cells[0]).split()[0] == ("interrupted" if resumable else "unknown")
    assert code == (0 if resumable else 1)
    assert all(line.startswith("warning: ") for line in err.splitlines())
    assert any(cell.id == cells[0].id for cell in planned(sweep_dir, tiny_spec).todo)


# --- the cancel record ----------------------------------------------------------------------


@pytest.mark.parametrize("later", ["accounting down", "purged from accounting"])
def test_cells_cancelled_with_mnistsweep_cancel_stay_cancelled_when_accounting_cannot_say(
    seen, scheduler, tiny_spec, capsys, later
):
    sweep_dir, cells = seen
    give_jobs(sweep_dir, {f"12_{i}": [cell] for i, cell in enumerate(cells)})
    scheduler.says("sacct", "12_0|RUNNING|None|2G\n12_[1-3]|PENDING|None|2G\n")
    assert main(["cancel", str(sweep_dir)]) == 0
    capsys.readouterr()
    if later == "accounting down":
        scheduler.says("sacct", error=ACCOUNTING_DOWN, code=1)
    else:
        scheduler.says("sacct", "")
    scheduler.says("squeue", "")

    code, out, _ = status_of(sweep_dir, capsys)

    assert code == 0, out
    assert "4 cells: 4 cancelled" in out
    assert out.count("cancelled with mnistsweep cancel; launch again to resume") == 4
    assert len(planned(sweep_dir, tiny_spec).todo) == 4


ARRAY_IDS = st.one_of(st.sampled_from(["12", "7"]), st.text(max_size=3), st.integers(0, 20))


def lists_array_12(content: bytes) -> bool:
    """Whether the record is valid and names array 12 (the cell's job's array)."""
    try:
        arrays = json.loads(content)["arrays"]
    except (ValueError, TypeError, KeyError, IndexError):
        return False
    valid = isinstance(arrays, list) and all(
        isinstance(a, str) and re.fullmatch("[0-9]+", a) for a in arrays
    )
    return valid and "12" in arrays


@settings(max_examples=40, deadline=None, suppress_health_check=FIXTURES)
@given(
    content=st.one_of(
        st.binary(max_size=40),
        st.fixed_dictionaries({"arrays": st.lists(ARRAY_IDS, max_size=3)}).map(
            lambda value: json.dumps(value).encode()
        ),
    )
)
def test_a_cancel_record_counts_when_valid_and_is_a_warning_when_damaged(
    seen, scheduler, capsys, content
):
    sweep_dir, cells = seen
    give_jobs(sweep_dir, {"12_0": [cells[0]]})
    SweepLayout(sweep_dir).cancelled.write_bytes(content)
    scheduler.says("sacct", "")  # accounting forgot the job

    code, out, err = status_of(sweep_dir, capsys)

    assert "Traceback" not in out + err
    assert all(line.startswith("warning: ") for line in err.splitlines())
    expected = "cancelled" if lists_array_12(content) else "lost"
    assert line_of(out, cells[0]).split()[0] == expected
    assert code == (0 if expected == "cancelled" else 1)


def test_a_launch_that_waited_counts_its_cells_out_of_memory(seen, tiny_spec, capsys, monkeypatch):
    from mnistsweep.cli import launch_output, results
    from mnistsweep.execute.backend import LaunchOutcome
    from mnistsweep.sweep.state import CellState, CellView

    sweep_dir, cells = seen
    monkeypatch.setattr(results, "aggregate", lambda *args, **kwargs: 0)
    monkeypatch.setattr(results, "report", lambda *args, **kwargs: None)
    plan = planned(sweep_dir, tiny_spec)
    ended = ((cells[0], CellView(CellState.OUT_OF_MEMORY, 0, "12_0", "job 12_0 ran out")),)
    outcome = LaunchOutcome(plan, (cells[0],), ended)

    assert launch_output.report_outcome(outcome, None) == 1
    out = capsys.readouterr().out
    assert "0 without a result, 1 out of memory" in out
    assert f"out of memory {cells[0].name}: job 12_0 ran out" in out


def polls_of_a_wait(scheduler: Scheduler, squeue_down: bool) -> int:
    """How often `wait` polls when the pending task leaves the queue at its second poll (or
    squeue stops answering then) and the cells' results never come (the jobs failed)."""
    from mnistsweep.execute import scheduler as scheduling

    scheduler.says("squeue", "12_1            PENDING   0       Priority\n")
    polls = []

    def finished() -> bool:
        polls.append(1)
        if len(polls) == 2:
            error = "slurm_load_jobs error: no controller" if squeue_down else ""
            scheduler.says("squeue", error=error, code=int(squeue_down))
        return len(polls) > 5

    scheduling.wait(["12_0", "12_1"], finished)
    return len(polls)


def test_a_wait_with_accounting_down_ends_when_squeue_no_longer_lists_the_jobs(
    scheduler, monkeypatch
):
    """...and only then: while squeue does not answer either, nobody knows, and it waits."""
    from mnistsweep.execute import scheduler as scheduling

    monkeypatch.setattr(scheduling, "POLL_SECONDS", 0)
    monkeypatch.setattr(scheduling, "RESULT_POLL_SECONDS", 0)
    scheduler.says("sacct", error=ACCOUNTING_DOWN, code=1)
    assert polls_of_a_wait(scheduler, squeue_down=False) == 2
    assert polls_of_a_wait(scheduler, squeue_down=True) == 6


def test_a_wait_sees_a_result_at_once_and_asks_the_scheduler_only_every_few_seconds(
    scheduler, monkeypatch
):
    """The results are looked at between the scheduler's polls: a cell that ends soon after the
    submission is seen within a fraction of a second, at the cost of one sacct."""
    from mnistsweep.execute import scheduler as scheduling

    monkeypatch.setattr(scheduling, "POLL_SECONDS", 60.0)
    monkeypatch.setattr(scheduling, "RESULT_POLL_SECONDS", 0.01)
    scheduler.says("sacct", "12_0|RUNNING|None|2G\n")
    observed = []
    real_observe = scheduling.observe
    monkeypatch.setattr(scheduling, "observe", lambda ids: observed.append(1) or real_observe(ids))
    looks = []
    started = time.monotonic()
    scheduling.wait(["12_0"], lambda: looks.append(1) or len(looks) > 4)
    assert len(looks) == 5
    assert observed == [1]
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("word", ["TIMEOUT", "NODE_FAIL", "PREEMPTED", "DEADLINE"])
def test_a_job_the_scheduler_ended_is_not_judged_by_its_log(seen, scheduler, capsys, word):
    """Its own reason is the scheduler's: the log's last words (the job giving up after attempts
    without progress, the step daemon's notice) make no failure that a relaunch would keep."""
    sweep_dir, cells = seen
    give_jobs(sweep_dir, {"12_0": [cells[0]]})
    write_log(
        sweep_dir,
        "12_0",
        "mnistsweep: 3 attempts in a row committed no epoch (does one epoch outlast the time "
        "limit?): not requeued\nslurmstepd: error: *** JOB 12 ON vm CANCELLED DUE TO TIME LIMIT\n",
    )
    scheduler.says("sacct", f"12_0|{word}|None|2G\n")
    code, out, _ = status_of(sweep_dir, capsys)
    assert line_of(out, cells[0]).split()[0] == "lost"
    assert f"job 12_0 ended {word}" in out and code == 1
