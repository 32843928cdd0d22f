"""`status`, `cancel` and `logs` through the command line, with the scheduler faked on PATH
(recorded sacct/squeue answers): each cell's truth, one scheduler round, damaged bookkeeping."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnistsweep.__main__ import main
from mnistsweep.sweep import guard, identity, records, state
from mnistsweep.sweep.layout import SweepLayout
from mnistsweep.sweep.spec import Cell, load_spec

FAKE_SCHEDULER = """#!/bin/sh
echo "$(basename "$0") $*" >> "{calls}"
case "$(basename "$0")" in
  sacct) cat "{folder}/sacct.txt" ;;
  squeue) cat "{folder}/squeue.txt" ;;
  scancel) exit 0 ;;
esac
"""


class FakeScheduler:
    """sacct, squeue and scancel on PATH answering what a test recorded; every call logged."""

    def __init__(self, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.folder = folder
        folder.mkdir(exist_ok=True)
        self.calls_file = folder / "calls.log"
        for name in ("sacct", "squeue", "scancel"):
            script = folder / name
            script.write_text(FAKE_SCHEDULER.format(calls=self.calls_file, folder=folder))
            script.chmod(script.stat().st_mode | stat.S_IEXEC)
        monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
        self.answer()

    def answer(self, sacct: str = "", squeue: str = "") -> None:
        (self.folder / "sacct.txt").write_text(sacct)
        (self.folder / "squeue.txt").write_text(squeue)

    @property
    def calls(self) -> list[str]:
        return self.calls_file.read_text().splitlines() if self.calls_file.exists() else []


@pytest.fixture
def fake_scheduler(tmp_path, monkeypatch) -> FakeScheduler:
    return FakeScheduler(tmp_path / "bin", monkeypatch)


@pytest.fixture
def sweep(tmp_path, tiny_spec) -> tuple[Path, list[Cell]]:
    """A recorded sweep of 4 cells (3 epochs each), nothing trained yet."""
    spec = load_spec(tiny_spec(name="seen", epochs=3))
    sweep_dir = tmp_path / "out" / "seen"
    guard.record_spec(SweepLayout(sweep_dir), spec)
    return sweep_dir, spec.cells()


def give_jobs(sweep_dir: Path, jobs: dict[str, list[Cell]]) -> None:
    for job_id, cells in jobs.items():
        records.append_job(
            SweepLayout(sweep_dir).jobs,
            records.JobRecord(
                job_id=job_id,
                cells=[c.id for c in cells],
                submitted="now",
                sweep_dir=identity.jobs_owner(sweep_dir),
            ),
        )


def commit_epochs(sweep_dir: Path, cell: Cell, epochs: int) -> None:
    run = SweepLayout(sweep_dir).run(cell)
    run.create()
    records.write(run.state, records.RunState(cell_id=cell.id, epochs_done=epochs))


def finish(sweep_dir: Path, cell: Cell, status: str = "completed", error: str | None = None):
    run = SweepLayout(sweep_dir).run(cell)
    run.create()
    metrics = {"test_accuracy": 0.9, "best_val_accuracy": 0.9, "epochs_run": 3}
    records.write(
        run.result,
        records.RunResult.model_validate(
            {
                "status": status,
                "cell_id": cell.id,
                "cell_name": cell.name,
                "config": dict(cell.config),
                "metrics": metrics if status == "completed" else {},
                "error": error,
            }
        ),
    )


def status_of(sweep_dir: Path, capsys) -> tuple[int, str, str]:
    code = main(["status", str(sweep_dir)])
    out, err = capsys.readouterr()
    return code, out, err


def line_of(out: str, cell: Cell) -> str:
    return next(line for line in out.splitlines() if f" {cell.name} " in f"{line} ")


def test_every_state_in_one_scheduler_round(sweep, fake_scheduler, capsys):
    sweep_dir, (done, failed, packed_first, packed_second) = sweep
    finish(sweep_dir, done)
    finish(sweep_dir, failed, "failed", "RuntimeError: injected failure\nmore")
    give_jobs(sweep_dir, {"7_0": [done], "7_1": [failed], "7_2": [packed_first, packed_second]})
    log = SweepLayout(sweep_dir).task_log("7_1")
    log.parent.mkdir(parents=True)
    log.write_text("Traceback ...\nRuntimeError: injected failure\n")
    fake_scheduler.answer(sacct="7_0|COMPLETED|None\n7_1|COMPLETED|None\n7_2|RUNNING|None\n")
    commit_epochs(sweep_dir, packed_first, 1)

    with state.training_lock(SweepLayout(sweep_dir).run(packed_first)):
        code, out, err = status_of(sweep_dir, capsys)

    assert code == 1, out  # a failed cell
    assert "4 cells: 1 queued, 1 training, 1 completed, 1 failed" in out
    assert "epoch 2 of 3" in line_of(out, packed_first)
    assert "waiting in job 7_2" in line_of(out, packed_second)
    assert "RuntimeError: injected failure" in line_of(out, failed)
    assert f"log: {log}" in out
    assert "python -m mnistsweep logs" in out
    assert [call.split()[0] for call in fake_scheduler.calls] == ["sacct"]  # all settled
    assert err == ""


def test_pending_tasks_show_the_reason_and_restarts_mean_requeued(sweep, fake_scheduler, capsys):
    sweep_dir, cells = sweep
    give_jobs(sweep_dir, {f"9_{i}": [cell] for i, cell in enumerate(cells)})
    commit_epochs(sweep_dir, cells[0], 2)
    fake_scheduler.answer(
        sacct="9_0|PENDING|BeginTime\n9_[1-2%1]|PENDING|JobArrayTaskLimit\n",  # 9_3 not yet
        squeue=(
            "9_0            PENDING   1       BeginTime\n"
            "9_1            PENDING   0       JobArrayTaskLimit\n"
            "9_2            PENDING   0       JobArrayTaskLimit\n"
            "9_3            PENDING   0       Priority\n"
        ),
    )
    code, out, _ = status_of(sweep_dir, capsys)

    assert code == 0
    assert "requeued" in line_of(out, cells[0]) and "2 epoch(s) committed" in out
    assert "JobArrayTaskLimit" in line_of(out, cells[1])
    assert "Priority" in line_of(out, cells[3])  # sacct lagged; squeue knew
    assert "unknown" not in out
    assert [call.split()[0] for call in fake_scheduler.calls] == ["sacct", "squeue"]


def test_ended_jobs_make_cells_interrupted_cancelled_or_lost(sweep, fake_scheduler, capsys):
    sweep_dir, cells = sweep
    give_jobs(sweep_dir, {"5_0": [cells[0]], "5_1": [cells[1]], "6": [cells[2]]})
    commit_epochs(sweep_dir, cells[0], 2)
    fake_scheduler.answer(sacct="5_0|TIMEOUT|None\n5|CANCELLED by 0|None\n")
    code, out, _ = status_of(sweep_dir, capsys)

    assert code == 1
    assert "interrupted" in line_of(out, cells[0]) and "TIMEOUT" in line_of(out, cells[0])
    assert "cancelled by 0; launch again to resume" in line_of(out, cells[1])
    assert "unknown to the scheduler" in line_of(out, cells[2])
    assert "not started" in line_of(out, cells[3])


def test_status_without_a_scheduler_says_so_and_judges_no_job(sweep, monkeypatch, capsys):
    sweep_dir, cells = sweep
    give_jobs(sweep_dir, {"5_0": [cells[0]]})
    monkeypatch.setenv("PATH", str(sweep_dir))  # no sacct here
    code, out, err = status_of(sweep_dir, capsys)
    assert code == 0
    assert "warning: sacct not found" in err
    assert "not started" in line_of(out, cells[0])


def test_cancel_cancels_only_live_arrays(sweep, fake_scheduler, capsys):
    sweep_dir, cells = sweep
    give_jobs(sweep_dir, {"3_0": [cells[0]], "4_0": [cells[1]], "4_1": [cells[2]]})
    fake_scheduler.answer(sacct="3_0|COMPLETED|None\n4_0|RUNNING|None\n4_[1]|PENDING|None\n")
    assert main(["cancel", str(sweep_dir)]) == 0
    out = capsys.readouterr().out
    assert "cancelled 1 job(s): 4" in out
    assert "scancel 4" in fake_scheduler.calls


def test_logs_prints_the_tail_of_a_cells_task_logs(sweep, capsys):
    sweep_dir, cells = sweep
    give_jobs(sweep_dir, {"8_0": [cells[0]], "8_1": [cells[1]]})
    log = SweepLayout(sweep_dir).task_log("8_0")
    log.parent.mkdir(parents=True)
    log.write_text("".join(f"line {n}\n" for n in range(100)))
    for name in (cells[0].id, cells[0].name, f"runs/{cells[0].dirname}/"):
        assert main(["logs", str(sweep_dir), name, "--lines", "3"]) == 0
        out = capsys.readouterr().out
        assert out.splitlines() == [f"==> {log} <==", "line 97", "line 98", "line 99"]
    assert main(["logs", str(sweep_dir), cells[1].id]) == 0
    assert "no task log yet" in capsys.readouterr().out
    assert main(["logs", str(sweep_dir), "arch=vgg"]) == 2
    assert "no such cell" in capsys.readouterr().err


def test_damaged_state_and_result_are_warnings_not_tracebacks(sweep, fake_scheduler, capsys):
    sweep_dir, cells = sweep
    runs = [SweepLayout(sweep_dir).run(cell) for cell in cells]
    for run in runs:
        run.create()
    runs[0].state.write_text('{"epochs_done": "many"')
    runs[1].result.write_text('["completed"]')
    (SweepLayout(sweep_dir).jobs).write_text('{"job_id": "1_0", "cells": [\n')
    code, out, err = status_of(sweep_dir, capsys)
    assert code == 1  # a damaged result
    assert "damaged" in line_of(out, cells[1])
    assert str(runs[0].state) in err and "jobs.jsonl: line 1" in err
    assert len(err.splitlines()) == 2


# --- damaged bookkeeping, generated ---------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
JOB_LINES = st.one_of(
    st.text(max_size=40),
    JSON_VALUES.map(json.dumps),
    st.fixed_dictionaries(
        {"job_id": st.one_of(st.text(max_size=6), st.integers(), st.just("12_3"))},
        optional={"cells": JSON_VALUES, "submitted": JSON_VALUES},
    ).map(json.dumps),
)
RECORD_CONTENTS = st.one_of(
    st.binary(max_size=60),
    JSON_VALUES.map(lambda value: json.dumps(value).encode()),
    st.fixed_dictionaries(
        {"status": st.sampled_from(["completed", "failed", "running", 3])},
        optional={"cell_id": JSON_VALUES, "epochs_done": JSON_VALUES, "metrics": JSON_VALUES},
    ).map(lambda value: json.dumps(value).encode()),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    job_lines=st.lists(JOB_LINES, max_size=4),
    torn_tail=st.text(max_size=20),
    result=RECORD_CONTENTS,
    state_file=RECORD_CONTENTS,
    command=st.sampled_from(["status", "cancel"]),
)
def test_damaged_bookkeeping_never_breaks_status_or_cancel(
    sweep, fake_scheduler, capsys, job_lines, torn_tail, result, state_file, command
):
    sweep_dir, cells = sweep
    layout = SweepLayout(sweep_dir)
    layout.jobs.write_text("\n".join(job_lines) + "\n" + torn_tail)
    run = layout.run(cells[0])
    run.create()
    run.result.write_bytes(result)
    run.state.write_bytes(state_file)
    fake_scheduler.answer(sacct="12_3|RUNNING|None\n")

    code = main([command, str(sweep_dir)])
    out, err = capsys.readouterr()

    assert code in (0, 1)
    assert "Traceback" not in out + err
    # One warning per damaged line of jobs.jsonl (as JSON Lines split it: a generated line may
    # hold newlines) or damaged file.
    written_lines = [line for line in layout.jobs.read_text().split("\n") if line.strip()]
    assert len(err.splitlines()) <= len(written_lines) + 3
    assert all(line.startswith("warning: ") for line in err.splitlines())
