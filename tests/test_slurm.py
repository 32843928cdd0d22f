"""The SLURM path on a live single-machine cluster (slurm/testcluster.sh): arrays, packing, GPU
requests, failures, requeue and resume, relaunch, status and cancel."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mnistsweep.execute import limits, scheduler, slurm
from mnistsweep.execute import plan as planning
from mnistsweep.sweep import records, state
from mnistsweep.sweep.layout import SweepLayout
from mnistsweep.sweep.spec import load_spec
from mnistsweep.train import pace

pytestmark = pytest.mark.slurm
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def cluster() -> None:
    """The live cluster: already up, or started here where this machine allows it; else skip."""
    script = ["bash", str(REPO / "slurm" / "testcluster.sh")]
    if subprocess.run([*script, "status"], capture_output=True, check=False).returncode == 0:
        return
    if os.geteuid() != 0:
        pytest.skip("no SLURM test cluster: slurm/testcluster.sh up needs root")
    started = subprocess.run(
        [*script, "up"], capture_output=True, text=True, timeout=600, check=False
    )
    if started.returncode != 0:
        reason = (started.stderr or started.stdout).strip().splitlines()[-1:]
        pytest.skip(f"no SLURM test cluster: {' '.join(reason)}")


def write_spec(
    tmp_path: Path, name: str, grid: dict, train: dict | None = None, **executor
) -> Path:
    document = {
        "name": name,
        "grid": grid,
        "train": {"epochs": 1, "train_subset": 1000, **(train or {})},
        "executor": {
            "backend": "slurm",
            **executor,
            "slurm": {
                "cpus_per_task": 1,
                "mem_gb": 2,
                "timeout_min": 10,
                **executor.pop("slurm", {}),
            },
        },
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def cli(
    tmp_path: Path, mnist_dir: Path, *args: str, env: dict | None = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    environment = {**os.environ, "MNISTSWEEP_DATA": str(mnist_dir), "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "mnistsweep", *args, "--results-dir", str(tmp_path / "out")]
        if args[0] == "launch"
        else [sys.executable, "-m", "mnistsweep", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=timeout,
        cwd=tmp_path,
    )


def sacct_tasks(array_id: str, count: int) -> dict[str, str]:
    """Poll sacct until its records settle (it lags the jobs by a few seconds)."""
    deadline = time.time() + 30
    while True:
        states = scheduler.sacct_states([f"{array_id}_{i}" for i in range(count)])
        if (
            states and all(s in scheduler.ENDED_STATES for s in states.values())
        ) or time.time() > deadline:
            return states
        time.sleep(1)


def result_of(sweep_dir: Path, cell) -> records.RunResult | None:
    return records.read(records.RunResult, SweepLayout(sweep_dir).run(cell).result)


def status_of(sweep_dir: Path, cell) -> str | None:
    result = result_of(sweep_dir, cell)
    return result.status if result else None


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.time() + seconds
    while not condition():
        if time.time() > deadline:
            pytest.fail(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.5)


def test_packed_sweep_runs_as_one_array_with_a_failure_isolated(cluster, tmp_path, mnist_dir):
    spec_path = write_spec(
        tmp_path, "packed", {"arch": ["linear", "mlp"], "seed": [0, 1, 2]}, cells_per_job=2
    )
    cells = load_spec(spec_path).cells()
    doomed = cells[3]
    result = cli(
        tmp_path,
        mnist_dir,
        "launch",
        str(spec_path),
        "--wait",
        env={"MNISTSWEEP_FAIL_CELLS": doomed.id},
    )
    assert result.returncode == 1, result.stdout + result.stderr  # one cell failed
    assert "submitted 6 cells in 3 job(s) as 1 array(s)" in result.stdout
    sweep_dir = tmp_path / "out" / "packed"

    statuses = {c.id: status_of(sweep_dir, c) for c in cells}
    assert statuses.pop(doomed.id) == "failed"
    assert set(statuses.values()) == {"completed"}
    failure = result_of(sweep_dir, doomed)
    assert failure and "injected failure" in (failure.error or "") and failure.error_tail
    assert f"failed {doomed.name}" in result.stdout  # shown, not hidden behind "completed"

    jobs = [json.loads(line) for line in (sweep_dir / "jobs.jsonl").read_text().splitlines()]
    assert len(jobs) == 3 and all(len(job["cells"]) == 2 for job in jobs)
    array_id = jobs[0]["job_id"].split("_")[0]
    assert {job["job_id"].split("_")[0] for job in jobs} == {array_id}
    tasks = sacct_tasks(array_id, 3)
    assert tasks == {f"{array_id}_{i}": "COMPLETED" for i in range(3)}
    env = (result_of(sweep_dir, cells[0]) or pytest.fail("no result")).env or {}
    assert env["slurm"]["slurm_array_job_id"] == array_id

    status = cli(tmp_path, mnist_dir, "status", str(sweep_dir))
    assert status.returncode == 1  # a cell failed
    assert "5 completed" in status.stdout and "1 failed" in status.stdout
    assert "injected failure" in status.stdout

    again = cli(tmp_path, mnist_dir, "launch", str(spec_path))
    assert again.returncode == 1  # the failed cell is kept: the launch says so, and exits 1
    assert "0 to train" in again.stdout and "skipping 5" in again.stdout
    assert len((sweep_dir / "jobs.jsonl").read_text().splitlines()) == 3  # nothing submitted

    retry = cli(tmp_path, mnist_dir, "launch", str(spec_path), "--retry-failed", "--wait")
    assert retry.returncode == 0, retry.stdout + retry.stderr
    assert "1 to train" in retry.stdout
    assert status_of(sweep_dir, doomed) == "completed"


def test_gpu_request_is_granted_on_fake_gres(cluster, tmp_path, mnist_dir):
    spec_path = write_spec(tmp_path, "gpu", {"arch": ["linear"]}, slurm={"gpus_per_node": 1})
    result = cli(tmp_path, mnist_dir, "launch", str(spec_path), "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    cell = load_spec(spec_path).cells()[0]
    env = (result_of(tmp_path / "out" / "gpu", cell) or pytest.fail("no result")).env or {}
    assert env["cuda_visible_devices"] == "0"  # SLURM gave the job one (fake) GPU


def test_dry_run_shows_the_exact_sbatch_script(cluster, tmp_path, mnist_dir):
    spec_path = write_spec(
        tmp_path,
        "dry",
        {"seed": [0, 1, 2, 3]},
        {"arch": "linear"},
        cells_per_job=2,
        slurm={
            "gpus_per_node": 1,
            "partition": "debug",
            "array_parallelism": 5,
            "setup": ["echo set-up-line"],
        },
    )
    result = cli(tmp_path, mnist_dir, "launch", str(spec_path), "--dry-run")
    assert result.returncode == 0, result.stderr
    for fragment in (
        "#SBATCH --array=0-1%",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --partition=debug",
        "echo set-up-line",
        "srun",
        "PYTHONPATH",
    ):
        assert fragment in result.stdout, fragment
    assert not (tmp_path / "out").exists()


def test_requeued_job_resumes_from_a_later_epoch(cluster, tmp_path, mnist_dir):
    """`scontrol requeue` while the job is verifiably running, two epochs committed and six to
    go. The pace (3 s an epoch, on 1,000 images) leaves 18 s of work at that point on any
    machine, far beyond the 5 s KillWait in which a job could still finish before the requeue
    takes effect."""
    spec_path = write_spec(tmp_path, "requeue", {"seed": [0]}, train={"arch": "mlp", "epochs": 8})
    paced = {pace.EPOCH_SECONDS_ENV: "3"}
    result = cli(tmp_path, mnist_dir, "launch", str(spec_path), env=paced)
    assert result.returncode == 0, result.stderr
    sweep_dir = tmp_path / "out" / "requeue"
    cell = load_spec(spec_path).cells()[0]
    run = SweepLayout(sweep_dir).run(cell)
    job_id = scheduler.read_jobs(sweep_dir)[cell.id]

    def mid_training() -> bool:
        return 2 <= state.committed_epochs(run) <= 4 and squeue_state(job_id) == "RUNNING"

    wait_for(mid_training, 240, "the job running with two epochs committed")
    subprocess.run(["scontrol", "requeue", job_id], check=True)
    wait_for(lambda: run.result.exists(), 400, "the requeued job to finish")

    final = result_of(sweep_dir, cell)
    assert final is not None and final.status == "completed"
    assert final.resumed_at_epochs and final.resumed_at_epochs[0] >= 2
    assert final.metrics.epochs_run == 8
    assert (final.env or {})["slurm"].get("slurm_restart_count") == "1"
    log = json.loads(run.history.read_text())
    assert len(log["val_accuracy"]) == 8
    final = final.model_dump()  # for the print below
    print(
        f"requeue epoch log: resumed at {final['resumed_at_epochs']}, "
        f"epoch seconds {[round(s, 1) for s in final['timing']['epoch_seconds']]}"
    )


def squeue_state(job_id: str) -> str:
    """The job's state as squeue shows it now ("" once it has left the queue)."""
    shown = subprocess.run(
        ["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, check=False
    )
    return shown.stdout.strip()


def test_status_and_cancel_against_pending_jobs(cluster, tmp_path, mnist_dir, monkeypatch):
    spec_path = write_spec(
        tmp_path,
        "later",
        {"seed": [0, 1, 2]},
        {"arch": "linear"},
        slurm={"additional": {"begin": "now+600"}},
    )
    launched = cli(tmp_path, mnist_dir, "launch", str(spec_path))
    assert launched.returncode == 0, launched.stderr
    assert "follow with: python -m mnistsweep status" in launched.stdout
    sweep_dir = tmp_path / "out" / "later"

    def pending() -> bool:
        return "3 queued" in cli(tmp_path, mnist_dir, "status", str(sweep_dir)).stdout

    wait_for(pending, 30, "status to show the pending array")
    cancelled = cli(tmp_path, mnist_dir, "cancel", str(sweep_dir))
    assert cancelled.returncode == 0 and "cancelled 1 job(s)" in cancelled.stdout
    array_id = next(iter(scheduler.read_jobs(sweep_dir).values())).split("_")[0]
    wait_for(
        lambda: set(scheduler.sacct_states([f"{array_id}_0"]).values()) == {"CANCELLED"},
        30,
        "sacct to show the cancellation",
    )
    assert "3 cancelled" in cli(tmp_path, mnist_dir, "status", str(sweep_dir)).stdout


def test_arrays_are_split_below_max_array_size(cluster, tmp_path, mnist_dir, monkeypatch):
    spec_path = write_spec(
        tmp_path,
        "split",
        {"seed": list(range(7))},
        {"arch": "linear"},
        slurm={"additional": {"begin": "now+600"}},
    )
    plan = planning.plan_launch(load_spec(spec_path), tmp_path / "out", "slurm")
    try:
        submission = slurm.submit(plan, mnist_dir, plan.batches, max_array_size=3)
        jobs, arrays = submission.jobs, submission.arrays
        per_array = [sum(job.job_id.split("_")[0] == array for job in jobs) for array in arrays]
        assert per_array == [3, 3, 1]  # no index reaches MaxArraySize
        assert max(int(job.job_id.partition("_")[2] or 0) for job in jobs) == 2
    finally:
        scheduler.cancel(plan.sweep_dir)


def test_real_max_array_size_is_read_from_the_cluster(cluster):
    size = limits.read_limits().max_array_size
    assert isinstance(size, int) and size >= 1


def test_the_launcher_runs_as_a_batch_job_that_waits_and_reports(cluster, tmp_path, mnist_dir):
    """slurm/launch.sbatch: submit the launcher from a login node and log out; it submits the
    sweep's array, waits for it, aggregates and writes the report."""
    spec_path = write_spec(tmp_path, "batch", {"arch": ["linear"], "seed": [0, 1]})
    environment = {
        **os.environ,
        "MNISTSWEEP_DATA": str(mnist_dir),
        "MNISTSWEEP_PYTHON": sys.executable,
        "COLUMNS": "200",
    }
    script = REPO / "slurm" / "launch.sbatch"
    command = ["sbatch", "--wait", str(script), str(spec_path), "--results-dir", "out"]
    submitted = subprocess.run(
        ["timeout", "300", *command],
        capture_output=True,
        text=True,
        env=environment,
        cwd=tmp_path,
        check=False,
    )
    logs = list(tmp_path.glob("mnistsweep-launch-*.out"))
    log = logs[0].read_text() if logs else ""
    assert submitted.returncode == 0, submitted.stderr + log
    assert "submitted 2 cells" in log and "2 completed" in log and "| linear" in log
    sweep_dir = tmp_path / "out" / "batch"
    for cell in load_spec(spec_path).cells():
        assert status_of(sweep_dir, cell) == "completed"
    assert "## Results per configuration" in (sweep_dir / "report.md").read_text()
