"""Submitting on the live test cluster (slurm/testcluster.sh): the jobs import the code snapshot,
a relaunch and a concurrent launch submit nothing twice, refused submissions are one line and
leave nothing, a failing setup line stops its job, several GPUs reach the job, and a sweep larger
than the queue's room goes out in pieces. Each test takes well under a minute."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mnistsweep.execute import limits
from mnistsweep.sweep import records
from mnistsweep.sweep.layout import SweepLayout
from mnistsweep.sweep.spec import load_spec

pytestmark = pytest.mark.slurm
REPO = Path(__file__).resolve().parents[1]
TESTCLUSTER = ["bash", str(REPO / "slurm" / "testcluster.sh")]


@pytest.fixture(scope="module")
def cluster() -> None:
    if not shutil.which("sbatch"):
        pytest.skip("no SLURM here (sbatch not on PATH)")
    status = subprocess.run([*TESTCLUSTER, "status"], capture_output=True, check=False)
    if status.returncode != 0:
        pytest.skip("the SLURM test cluster is not up: bash slurm/testcluster.sh up")


def write_spec(tmp_path: Path, name: str, seeds: int = 1, **slurm_options) -> Path:
    document = {
        "name": name,
        "grid": {"seed": list(range(seeds))},
        "train": {"arch": "linear", "epochs": 1, "train_subset": 1000},
        "executor": {
            "backend": "slurm",
            "slurm": {"cpus_per_task": 1, "mem_gb": 2, "timeout_min": 10, **slurm_options},
        },
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def launch(
    tmp_path: Path, mnist_dir: Path, spec: Path, *options: str, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "mnistsweep", "launch", str(spec)]
    return subprocess.run(
        [*command, "--results-dir", str(tmp_path / "out"), *options],
        capture_output=True,
        text=True,
        cwd=cwd or tmp_path,
        env=environment(mnist_dir),
        timeout=300,
        check=False,
    )


def environment(mnist_dir: Path) -> dict[str, str]:
    environ = {**os.environ, "MNISTSWEEP_DATA": str(mnist_dir), "COLUMNS": "200"}
    environ.pop("PYTHONSAFEPATH", None)
    return environ


def job_ids(sweep_dir: Path) -> list[str]:
    jobs, _ = records.read_jobs(SweepLayout(sweep_dir).jobs)
    return [job.job_id for job in jobs]


def cancel(sweep_dir: Path) -> None:
    arrays = sorted({job_id.split("_")[0] for job_id in job_ids(sweep_dir)})
    if arrays:
        subprocess.run(["scancel", *arrays], check=False)


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.time() + seconds
    while not condition():
        if time.time() > deadline:
            pytest.fail(f"timed out after {seconds} s waiting for {what}")
        time.sleep(1)


def test_queued_jobs_import_the_snapshot_not_a_checkout_broken_meanwhile(
    cluster, tmp_path, mnist_dir
):
    """Launch from a throwaway copy of the checkout (cwd = that copy), break the copy's package
    while the job waits for its begin time: the job still trains with the snapshot."""
    checkout = tmp_path / "checkout"
    shutil.copytree(
        REPO / "mnistsweep", checkout / "mnistsweep", ignore=shutil.ignore_patterns("__pycache__")
    )
    spec = write_spec(tmp_path, "snapshot", additional={"begin": "now+10"})
    started = time.perf_counter()
    launched = launch(tmp_path, mnist_dir, spec, cwd=checkout)
    assert launched.returncode == 0, launched.stdout + launched.stderr
    (checkout / "mnistsweep" / "__init__.py").write_text("this is not python (\n")
    sweep_dir = tmp_path / "out" / "snapshot"
    run = SweepLayout(sweep_dir).run(load_spec(spec).cells()[0])
    try:
        wait_for(run.result.exists, 300, "the cell's result (the cluster may be busy)")
    finally:
        cancel(sweep_dir)
    result = records.read(records.RunResult, run.result)
    assert result is not None and result.status == "completed", result
    print(f"snapshot isolation: launch to result {time.perf_counter() - started:.1f} s")


def test_a_relaunch_and_a_concurrent_launch_submit_nothing_twice(cluster, tmp_path, mnist_dir):
    spec = write_spec(tmp_path, "twice", seeds=3, additional={"begin": "now+600"})
    sweep_dir = tmp_path / "out" / "twice"
    command = [sys.executable, "-m", "mnistsweep", "launch", str(spec)]
    command += ["--results-dir", str(tmp_path / "out")]
    try:
        together = [
            subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=tmp_path,
                env=environment(mnist_dir),
            )
            for _ in range(2)
        ]
        outputs = [process.communicate(timeout=120) for process in together]
        assert [process.returncode for process in together] == [0, 0], outputs
        assert len(job_ids(sweep_dir)) == 3  # one launch submitted, the other found them live
        said = "".join(out for out, _ in outputs)
        assert said.count("submitted 3 cells") == 1
        assert "leaving 3 cell(s) to job(s)" in said

        again = launch(tmp_path, mnist_dir, spec)
        assert again.returncode == 0, again.stderr
        array = job_ids(sweep_dir)[0].split("_")[0]
        assert f"leaving 3 cell(s) to job(s) {array}_0, {array}_1, {array}_2" in again.stdout
        assert "0 to train" in again.stdout and len(job_ids(sweep_dir)) == 3
    finally:
        cancel(sweep_dir)


@pytest.mark.parametrize(
    "options, reason",
    [
        ({"partition": "nosuchpartition"}, "Invalid partition name specified"),
        ({"gpus_per_node": 8}, "Requested node configuration is not available"),
        ({"mem_gb": 500}, "Requested node configuration is not available"),
    ],
)
def test_a_refused_submission_is_one_line_and_leaves_nothing(
    cluster, tmp_path, mnist_dir, options, reason
):
    spec = write_spec(tmp_path, "refused", seeds=2, **options)
    refused = launch(tmp_path, mnist_dir, spec)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.count("\n") == 1 and "sbatch: error" not in refused.stdout
    assert refused.stderr.startswith("error: sbatch refused the sweep refused: ")
    assert reason in refused.stderr
    assert not (tmp_path / "out").exists()


def test_a_failing_setup_line_stops_the_job_with_a_clear_message(cluster, tmp_path, mnist_dir):
    spec = write_spec(tmp_path, "setup", setup=["module load nosuch/1.0"])
    done = launch(tmp_path, mnist_dir, spec, "--wait")
    assert done.returncode == 1, done.stdout + done.stderr  # the cell has no result
    sweep_dir = tmp_path / "out" / "setup"
    log = SweepLayout(sweep_dir).task_log(job_ids(sweep_dir)[0]).read_text()
    assert "mnistsweep: setup line failed: module load nosuch/1.0" in log
    run = SweepLayout(sweep_dir).run(load_spec(spec).cells()[0])
    assert not run.root.exists()  # no training was attempted


def test_two_gpus_per_task_reach_the_job(cluster, tmp_path, mnist_dir):
    spec = write_spec(tmp_path, "gpus", gpus_per_node=2)
    done = launch(tmp_path, mnist_dir, spec, "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    run = SweepLayout(tmp_path / "out" / "gpus").run(load_spec(spec).cells()[0])
    result = records.read(records.RunResult, run.result)
    assert result is not None and result.env is not None
    assert result.env["cuda_visible_devices"] == "0,1"


@pytest.fixture
def submit_limit_of_3():
    """MaxSubmitJobsPerUser=3 on the QOS `limited` (no daemon restart: only jobs asking for that
    QOS are limited, so other users of the cluster are not); back to unlimited afterwards."""

    def up(**knobs: str) -> None:
        done = subprocess.run(
            [*TESTCLUSTER, "up"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            env={**os.environ, **knobs},
        )
        if done.returncode != 0:
            pytest.skip(f"testcluster.sh up failed: {done.stderr.strip()[-300:]}")

    up(SLURM_LOCAL_MAX_SUBMIT_JOBS="3")
    yield
    up()


def test_a_sweep_larger_than_the_queue_allows_goes_out_in_pieces(
    cluster, submit_limit_of_3, tmp_path, mnist_dir
):
    spec = write_spec(tmp_path, "pieces", seeds=5, qos="limited", additional={"begin": "now+600"})
    sweep_dir = tmp_path / "out" / "pieces"
    try:
        first = launch(tmp_path, mnist_dir, spec)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "submitted 3 cells in 3 job(s)" in first.stdout
        assert "2 job(s) wait for room in the queue" in first.stdout  # a feeder job sends them
        full = launch(tmp_path, mnist_dir, spec)
        assert full.returncode == 0 and "leaving 3 cell(s)" in full.stdout
        assert len(job_ids(sweep_dir)) == 4  # 3 jobs and the one feeder job
        cancel(sweep_dir)
        wait_for(lambda: limits.queued_jobs("limited").own_in_qos == 0, 30, "the cancellation")
        rest = launch(tmp_path, mnist_dir, spec)
        assert rest.returncode == 0, rest.stdout + rest.stderr
        assert "submitted 3 cells" in rest.stdout and "2 job(s) wait for room" in rest.stdout
    finally:
        cancel(sweep_dir)
