"""Typed records: what was written reads back equal; anything else is a DamagedRecord, one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnistsweep.sweep import records

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
FIXTURE_OK = [HealthCheck.function_scoped_fixture]  # each example overwrites the same file
RESULT_KEYS = ("status", "cell_id", "cell_name", "axes", "config", "metrics", "timing", "error")


def completed_result() -> records.RunResult:
    return records.RunResult(
        status="completed",
        cell_id="abc123",
        cell_name="arch=mlp,seed=0",
        axes=["arch", "seed"],
        config={"arch": "mlp", "seed": 0, "dropout": None},
        metrics=records.RunMetrics(test_accuracy=0.97, best_val_accuracy=0.975, epochs_run=3),
    )


def test_a_record_reads_back_as_written(tmp_path):
    path = tmp_path / "result.json"
    records.write(path, completed_result())
    assert records.read(records.RunResult, path) == completed_result()


def test_missing_is_none_and_unusable_is_damaged(tmp_path):
    assert records.read(records.RunResult, tmp_path / "nothing.json") is None
    path = tmp_path / "result.json"
    path.write_text('{"status": "completed", "cell_id": "a", "cell_name": "b", "config": {}}')
    with pytest.raises(records.DamagedRecord, match=r"result\.json: .*completed run without"):
        records.read(records.RunResult, path)
    path.write_text('{"status": "comp')  # half written
    with pytest.raises(records.DamagedRecord, match="not JSON"):
        records.read(records.RunResult, path)


def test_a_resume_state_keeps_infinity(tmp_path):
    path = tmp_path / "state.json"
    records.write(path, records.RunState(cell_id="x"))
    state = records.read(records.RunState, path)
    assert state is not None and math.isinf(state.best_val_loss)


@given(
    content=st.one_of(
        json_values,
        st.fixed_dictionaries({key: json_values for key in RESULT_KEYS}),
    )
)
@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_any_json_is_a_record_or_one_damaged_line(tmp_path, content):
    path = tmp_path / "result.json"
    path.write_text(json.dumps(content))
    for kind in (records.RunResult, records.RunState, records.SweepRecord):
        try:
            records.read(kind, path)
        except records.DamagedRecord as damaged:
            assert str(damaged).startswith(str(path)) and "\n" not in str(damaged)


@given(lines=st.lists(st.one_of(json_values.map(json.dumps), st.text(max_size=30)), max_size=8))
@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_jobs_log_keeps_the_good_lines_and_names_the_bad(tmp_path, lines):
    good = records.JobRecord(job_id="12_3", cells=["a", "b"], submitted="now")
    path = tmp_path / "jobs.jsonl"
    path.write_text("\n".join([good.model_dump_json(), *lines]) + "\n")
    jobs, problems = records.read_jobs(path)
    assert jobs[0] == good
    pieces = "\n".join(lines).split("\n") if lines else []
    assert len(jobs) + len(problems) == 1 + sum(1 for piece in pieces if piece.strip())
    assert all(problem.startswith(f"{path}: line ") for problem in problems)


def test_an_old_sweep_record_still_reads(tmp_path: Path):
    """Folders written before the typed records: one grid as a mapping, no fingerprint."""
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps({"name": "old", "axes": ["seed"], "grid": {"seed": [0, 1]}}))
    record = records.read(records.SweepRecord, path)
    assert record is not None and record.grid == [{"seed": [0, 1]}]
