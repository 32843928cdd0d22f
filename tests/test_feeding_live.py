"""Feeding the queue and the sweep-wide parallelism cap on the live test cluster
(slurm/testcluster.sh), with the launcher gone: `launch` without --wait returns, and the test
only polls squeue and `status`. The submit limit is the QOS `feeding` of these tests (set through
sacctmgr, no daemon restart): only jobs asking for it are limited, nobody else's."""

import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from test_submit_live import cluster, environment, job_ids  # noqa: F401  (cluster: a fixture)

from mnistsweep.execute import limits
from mnistsweep.sweep import records
from mnistsweep.sweep.layout import SweepLayout

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
QOS = "feeding"
DEADLINE_S = 480  # each test needs ~2 minutes on an idle cluster; others' jobs share its 2 CPUs


def sacctmgr(*words: str) -> None:
    subprocess.run(["sacctmgr", "-i", *words], capture_output=True, timeout=30, check=False)


@pytest.fixture
def feeding_qos(cluster):  # noqa: F811
    """The QOS `feeding` with MaxSubmitJobsPerUser=3, open to this user."""
    sacctmgr("add", "qos", QOS)
    sacctmgr("modify", "qos", "where", f"name={QOS}", "set", "MaxSubmitJobsPerUser=3")
    sacctmgr("modify", "user", "where", f"name={limits.user()}", "set", f"qos+={QOS}")
    if qos_submit_limit() != "3":
        pytest.skip(f"could not set MaxSubmitJobsPerUser=3 on the QOS {QOS}")


def qos_submit_limit() -> str | None:
    """MaxSubmitJobsPerUser of the QOS `feeding` as sacctmgr tells it; None when it cannot."""
    shown = subprocess.run(
        ["sacctmgr", "-n", "-P", "show", "qos", f"name={QOS}", "format=MaxSubmitPU"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return shown.stdout.strip() if shown.returncode == 0 else None


def scontrol(action: str, job_id: str) -> None:
    subprocess.run(["scontrol", action, job_id], capture_output=True, timeout=30, check=False)


def write_spec(tmp_path: Path, name: str, seeds: int, **slurm_options) -> Path:
    document = {
        "name": name,
        "grid": {"seed": list(range(seeds))},
        "train": {"arch": "linear", "epochs": 1, "train_subset": 500},
        "executor": {
            "backend": "slurm",
            "slurm": {"cpus_per_task": 1, "mem_gb": 2, "timeout_min": 3, **slurm_options},
        },
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def mnistsweep(mnist_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mnistsweep", *args],
        capture_output=True,
        text=True,
        env=environment(mnist_dir),
        timeout=120,
        check=False,
    )


def squeue(name: str) -> list[tuple[str, str, str]]:
    """(job id, state, qos) of each task of the sweep's jobs in the queue now."""
    listing = subprocess.run(
        ["squeue", "-h", "-r", "-n", name, "-o", "%i|%T|%q"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stdout
    return [tuple(line.split("|")) for line in listing.split() if line.count("|") == 2]


def poll(until: Callable[[], bool], each: Callable[[], None], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not until():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {DEADLINE_S} s")
        each()
        time.sleep(1)


def completed(mnist_dir: Path, sweep_dir: Path, cells: int) -> Callable[[], bool]:
    def check() -> bool:
        shown = mnistsweep(mnist_dir, "status", str(sweep_dir)).stdout
        return f"{cells} cells: {cells} completed" in shown

    return check


def cancel_all(sweep_dir: Path) -> None:
    arrays = sorted({job_id.split("_")[0] for job_id in job_ids(sweep_dir)})
    if arrays:
        subprocess.run(["scancel", *arrays], check=False)


def test_a_sweep_larger_than_max_submit_jobs_finishes_with_the_launcher_gone(
    feeding_qos, tmp_path, mnist_dir
):
    spec = write_spec(tmp_path, "fed", seeds=10, qos=QOS)
    sweep_dir = tmp_path / "out" / "fed"
    started = time.monotonic()
    try:
        launched = mnistsweep(
            mnist_dir, "launch", str(spec), "--results-dir", str(tmp_path / "out")
        )
        assert launched.returncode == 0, launched.stdout + launched.stderr
        assert "submitted 3 cells in 3 job(s)" in launched.stdout
        assert re.search(r"7 job\(s\) wait for room .*: feeder job \d+", launched.stdout)
        feeder = re.search(r"feeder job (\d+)", launched.stdout).group(1)
        array = re.search(r"as 1 array\(s\): (\d+)", launched.stdout).group(1)
        scontrol("hold", array)  # the feeder cannot start before the checks below are done
        shown = mnistsweep(mnist_dir, "status", str(sweep_dir)).stdout
        assert "7 cell(s) waiting to be sent (" in shown and "sends them as room frees" in shown
        again = mnistsweep(mnist_dir, "launch", str(spec), "--results-dir", str(tmp_path / "out"))
        assert "\nsubmitted" not in again.stdout and f"feeder job {feeder} " in again.stdout
        subprocess.run(["scancel", feeder], check=False, timeout=30)  # the feeding stops...
        poll(lambda: not squeue("mnistsweep-fed-feeder"), lambda: None, "the feeder's cancel")
        shown = mnistsweep(mnist_dir, "status", str(sweep_dir)).stdout
        assert "no feeder job is queued; launch again to send them" in shown
        again = mnistsweep(mnist_dir, "launch", str(spec), "--results-dir", str(tmp_path / "out"))
        assert re.search(rf"feeder job (?!{feeder} )\d+ submits", again.stdout)  # ...and goes on
        scontrol("release", array)
        most = [0]

        def count() -> None:
            most[0] = max(most[0], sum(1 for _, _, qos in squeue("mnistsweep-fed") if qos == QOS))

        poll(completed(mnist_dir, sweep_dir, 10), count, "every cell completing")
        print(f"10 cells under MaxSubmitJobs=3: {time.monotonic() - started:.0f} s")
        assert most[0] <= 3
        jobs, _ = records.read_jobs(SweepLayout(sweep_dir).jobs)
        sent = [cell for job in jobs for cell in job.cells]
        assert len(sent) == len(set(sent)) == 10  # every cell sent once
        assert not SweepLayout(sweep_dir).feeding.exists()
        poll(lambda: not squeue("mnistsweep-fed-feeder"), lambda: None, "the last feeder ending")
    finally:
        cancel_all(sweep_dir)


def test_a_sweep_split_into_arrays_never_runs_more_than_its_parallelism(
    cluster,  # noqa: F811
    tmp_path,
    mnist_dir,
):
    spec = write_spec(tmp_path, "capped", seeds=4, array_parallelism=1)
    sweep_dir = tmp_path / "out" / "capped"
    results = ["--results-dir", str(tmp_path / "out")]
    try:
        first = mnistsweep(mnist_dir, "launch", str(spec), "--only", "seed=0,1", *results)
        assert first.returncode == 0, first.stdout + first.stderr
        rest = mnistsweep(mnist_dir, "launch", str(spec), *results)  # a second array
        assert rest.returncode == 0 and "submitted 2 cells in 2 job(s) as 1 array" in rest.stdout
        assert len({job_id.split("_")[0] for job_id in job_ids(sweep_dir)}) == 2
        most = [0]

        def count() -> None:
            running = sum(1 for _, state, _ in squeue("mnistsweep-capped") if state == "RUNNING")
            most[0] = max(most[0], running)

        poll(completed(mnist_dir, sweep_dir, 4), count, "every cell completing")
        assert most[0] == 1
    finally:
        cancel_all(sweep_dir)
