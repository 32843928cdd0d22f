"""Live SLURM: a cell outlives many real time limits, and status and the GPUs as a job sees them.

Slow by nature: SLURM's limits come in whole minutes and are checked every 30 s, so each real
time limit costs most of a minute; the trainer's test pace makes the work per attempt, and so
the events, the same on every machine.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import submitit

import mnistsweep
from mnistsweep.__main__ import main
from mnistsweep.execute import scheduler
from mnistsweep.execute.job import MAX_ATTEMPTS_ENV, CellBatch
from mnistsweep.sweep import guard, identity, records
from mnistsweep.sweep.layout import SweepLayout
from mnistsweep.sweep.spec import Cell, load_spec
from mnistsweep.train import pace

pytestmark = pytest.mark.slurm
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster() -> None:
    script = ["bash", str(REPO / "slurm" / "testcluster.sh"), "status"]
    if not shutil.which("sbatch") or subprocess.run(script, capture_output=True).returncode:
        pytest.skip("no SLURM test cluster (bash slurm/testcluster.sh up)")


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.time() + seconds
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(2)


def submit(sweep_dir: Path, cells: list[Cell], data_dir: Path, concurrent: int, **slurm):
    """Submit one task the way a launch does (code snapshot, jobs.jsonl), with the time and
    GPU settings a test needs."""
    snapshot = sweep_dir / "code" / "test"
    shutil.copytree(Path(mnistsweep.__file__).parent, snapshot / "mnistsweep")
    executor = submitit.SlurmExecutor(folder=SweepLayout(sweep_dir).submitit)
    executor.update_parameters(
        job_name="mnistsweep-test",
        cpus_per_task=2,
        mem="3000MB",
        setup=[f"export PYTHONPATH={snapshot}"],
        **slurm,
    )
    task = executor.submit(CellBatch(), str(sweep_dir), cells, str(data_dir), concurrent)
    records.append_job(
        SweepLayout(sweep_dir).jobs,
        records.JobRecord(
            job_id=task.job_id,
            cells=[c.id for c in cells],
            submitted="now",
            sweep_dir=identity.jobs_owner(sweep_dir),
        ),
    )
    return task


@pytest.mark.slow
def test_a_cell_resumes_through_five_real_time_limits(
    cluster, tmp_path, tiny_spec, mnist_dir, monkeypatch
):
    """Twelve epochs, two per attempt (the trainer's test pace), then each attempt waits for its
    time limit: the warning signal comes 20-80 s after the start (`time: 2`, 40 s delay, SLURM
    checking every 30 s), long after the attempt's two epochs on 1,000 images on any machine.
    So every machine sees the same events: five real time limits, resumed at epochs 2, 4, 6, 8
    and 10, and the sixth attempt completes (about six minutes)."""
    monkeypatch.setenv(MAX_ATTEMPTS_ENV, "6")  # jobs inherit the environment of sbatch
    monkeypatch.setenv(pace.EPOCHS_PER_ATTEMPT_ENV, "2")
    spec = load_spec(tiny_spec(name="limits", grid={"arch": ["mlp"]}, epochs=12, train_subset=1000))
    sweep_dir = tmp_path / "limits"
    guard.record_spec(SweepLayout(sweep_dir), spec)
    cell = spec.cells()[0]
    run = SweepLayout(sweep_dir).run(cell)
    task = submit(sweep_dir, [cell], mnist_dir, 1, time=2, signal_delay_s=40)

    seen: set[str] = set()

    def finished() -> bool:
        seen.update(row.view.state.value for row in scheduler.sweep_status(sweep_dir).rows)
        return run.result.exists()

    wait_for(finished, 1500, "the cell to finish through its time limits")
    result = records.read(records.RunResult, run.result)
    assert result is not None and result.status == "completed", result
    print(f"time limits survived: resumed at epochs {result.resumed_at_epochs}")
    assert result.resumed_at_epochs == [2, 4, 6, 8, 10]
    assert result.metrics.epochs_run == 12
    assert task.result()[0]["status"] == "completed"
    assert "training" in seen and not seen & {"failed", "lost", "damaged"}, seen


def test_status_right_after_submit_and_each_worker_gets_its_own_gpu(
    cluster, tmp_path, tiny_spec, mnist_dir, capsys
):
    """Two cells trained side by side in one task with two (fake) GPUs: each worker sees one,
    a different one. And status, from the first second, never says "unknown"."""
    spec = load_spec(tiny_spec(name="gpus", grid={"arch": ["linear"], "seed": [0, 1]}))
    sweep_dir = tmp_path / "gpus"
    guard.record_spec(SweepLayout(sweep_dir), spec)
    cells = spec.cells()
    task = submit(sweep_dir, cells, mnist_dir, 2, time=10, gpus_per_node=2)

    assert main(["status", str(sweep_dir)]) == 0
    shown = capsys.readouterr().out
    assert "2 cells: 2 queued" in shown or "training" in shown, shown
    assert "unknown" not in shown

    assert [outcome["status"] for outcome in task.result()] == ["completed", "completed"]
    devices = []
    for cell in cells:
        result = records.read(records.RunResult, SweepLayout(sweep_dir).run(cell).result)
        assert result is not None and result.env is not None
        devices.append(result.env["cuda_visible_devices"])
    assert sorted(devices) == ["0", "1"], devices
    assert main(["status", str(sweep_dir)]) == 0
    assert "2 cells: 2 completed" in capsys.readouterr().out
