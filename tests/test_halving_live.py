"""Successive halving on the live SLURM test cluster: three cells packed in one task that is
stopped by its time limit and requeued after each epoch; the rungs decide across the attempts
from the sweep folder alone, and the late promotion is trained on in the requeued task."""

from __future__ import annotations

import pytest
from test_timelimits import cluster, submit, wait_for  # noqa: F401  (cluster: a fixture)

from mnistsweep.execute.job import MAX_ATTEMPTS_ENV
from mnistsweep.sweep import guard, records, state
from mnistsweep.sweep.layout import SweepLayout
from mnistsweep.sweep.spec import load_spec
from mnistsweep.train import pace

pytestmark = pytest.mark.slurm


@pytest.mark.slow
def test_rungs_decide_across_requeued_attempts_of_a_packed_task(
    cluster,  # noqa: F811
    tmp_path,
    tiny_spec,
    mnist_dir,
    monkeypatch,
):
    """One epoch per attempt (the test pace), then the time limit: attempt 1 trains the best
    cell's first epoch; attempt 2 finds it alone at the rung (it waits) and trains the second
    cell's; attempt 3 stops that one and trains the third's; attempt 4 sees all three there,
    promotes the first, stops the third, and trains the first to its end (about five minutes).
    With one epoch per attempt, finishing at all takes three requeues."""
    monkeypatch.setenv(MAX_ATTEMPTS_ENV, "8")
    monkeypatch.setenv(pace.EPOCHS_PER_ATTEMPT_ENV, "1")
    path = tiny_spec(
        name="halving-live",
        grid={"learning_rate": [1e-2, 1e-6, 1e-7]},
        arch="linear",
        epochs=2,
        train_subset=600,
    )
    text = path.read_text()
    path.write_text(text + "search: {early_stopping: {metric: val_loss, min_epochs: 1}}\n")
    spec = load_spec(path)
    sweep_dir = tmp_path / "halving-live"
    layout = SweepLayout(sweep_dir)
    guard.record_spec(layout, spec)
    cells = spec.cells()
    task = submit(sweep_dir, cells, mnist_dir, 1, time=2, signal_delay_s=40)

    best = layout.run(cells[0])
    wait_for(best.result.exists, 900, "the promoted cell to finish")
    assert [outcome["status"] for outcome in task.result()] == [
        "completed",
        "stopped early",
        "stopped early",
    ]
    result = records.read(records.RunResult, best.result)
    assert result is not None and result.status == "completed"
    assert result.resumed_at_epochs == [1] and result.metrics.epochs_run == 2
    for cell in cells[1:]:
        assert state.derive(layout.run(cell)).state is state.CellState.STOPPED_EARLY
