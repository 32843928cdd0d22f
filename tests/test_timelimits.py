"""Live SLURM: a cell outlives many real time limits, and status and the GPUs as a job sees them.

Slow by nature: `time: 2` gives each attempt about 45-105 s before the warning signal
(SLURM checks limits every 30 s and may signal up to a minute early), so a cell of many
epochs needs several attempts.
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
from mnistsweep.sweep import guard, records
from mnistsweep.sweep.layout import SweepLayout
from mnistsweep.sweep.spec import Cell, load_spec

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
        records.JobRecord(job_id=task.job_id, cells=[c.id for c in cells], submitted="now"),
    )
    return task


@pytest.mark.slow
def test_a_cell_resumes_through_five_real_time_limits(
    cluster, tmp_path, tiny_spec, mnist_dir, monkeypatch
):
    """Each attempt: about 20 s of imports and compiling, then epochs of 3-5 s (batches of 32
    over 54,000 images on this 2-core machine) until the warning signal, 45-105 s after the
    start, so 15-25 epochs per attempt: 150 epochs take six attempts or more (10-20 minutes).
    An unlucky attempt may commit nothing, so the job may take a few of those in a row here."""
    monkeypatch.setenv(MAX_ATTEMPTS_ENV, "6")  # jobs inherit the environment of sbatch
    spec = load_spec(
        tiny_spec(
            name="limits", grid={"arch": ["mlp"]}, epochs=150, train_subset=None, batch_size=32
        )
    )
    sweep_dir = tmp_path / "limits"
    guard.record_spec(SweepLayout(sweep_dir), spec)
    cell = spec.cells()[0]
    run = SweepLayout(sweep_dir).run(cell)
    task = submit(sweep_dir, [cell], mnist_dir, 1, time=2, signal_delay_s=15)

    seen: set[str] = set()

    def finished() -> bool:
        seen.update(row.view.state.value for row in scheduler.sweep_status(sweep_dir).rows)
        return run.result.exists()

    wait_for(finished, 3000, "the cell to finish through its time limits")
    result = records.read(records.RunResult, run.result)
    assert result is not None and result.status == "completed", result
    limits = len(result.resumed_at_epochs)
    print(f"time limits survived: {limits}; resumed at epochs {result.resumed_at_epochs}")
    assert limits >= 5
    assert result.metrics.epochs_run == 150
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
