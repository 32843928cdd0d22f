"""Feeding the queue without a launcher, and one parallelism cap for the whole sweep, decided
against a stand-in scheduler (sbatch keeps each script; sacct, squeue, scontrol and sacctmgr say
what the test writes): what goes out now, the feeder job that sends the rest, what a feeder does
when it runs, and the dependencies that chain the sweep's arrays."""

import fcntl
import os
import pickle
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_submit import cli, fake_slurm, write_spec  # noqa: F401  (fake_slurm: a fixture)

from mnistsweep import fsio
from mnistsweep.execute import feeder, limits, slurm
from mnistsweep.execute import plan as planning
from mnistsweep.execute.launch import LaunchRequest, launch
from mnistsweep.sweep import identity, records
from mnistsweep.sweep.layout import SweepLayout
from mnistsweep.sweep.spec import load_spec

ENFORCED = "AccountingStorageEnforce = associations,limits,qos\n"


@pytest.fixture
def queue(fake_slurm, mnist_dir, monkeypatch):  # noqa: F811
    """A cluster that enforces submit limits, with an empty queue and this user called ada."""
    monkeypatch.setenv("MNISTSWEEP_DATA", str(mnist_dir))
    monkeypatch.setenv("USER", "ada")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    (fake_slurm.root / "scontrol-says").write_text(ENFORCED)
    return fake_slurm


def says(queue, tool: str, text: str) -> None:
    (queue.root / f"{tool}-says").write_text(text)


def scripts(queue) -> list[str]:
    return [(queue.calls / f"{n}.sh").read_text() for n in range(len(os.listdir(queue.calls)))]


def status(sweep_dir: str) -> str:
    command = [sys.executable, "-m", "mnistsweep", "status", sweep_dir]
    return subprocess.run(command, capture_output=True, text=True, timeout=60).stdout


def request_of(tmp_path, mnist_dir, **slurm_options) -> LaunchRequest:
    spec = load_spec(write_spec(tmp_path, **slurm_options))
    return LaunchRequest(spec, tmp_path / "out", mnist_dir)


def feeding(request: LaunchRequest) -> records.FeedingRecord | None:
    return records.read(records.FeedingRecord, request.layout.feeding)


def test_a_full_queue_sends_what_fits_and_a_feeder_job_after_it(tmp_path, queue, mnist_dir):
    says(queue, "sacctmgr", "limited|2\n")  # MaxSubmitJobsPerUser 2 in the sweep's QOS
    queue.replies.write_text("3\n4\n")
    request = request_of(tmp_path, mnist_dir, seeds=8, qos="limited")  # 4 jobs of 2 cells
    outcome = launch(request, feeder.JobLog())
    array, feeder_script = scripts(queue)
    assert "#SBATCH --array=0-1%2" in array
    assert "#SBATCH --dependency=afterany:3\n" in feeder_script
    assert "#SBATCH --job-name=mnistsweep-golden-feeder" in feeder_script
    for option in ("--qos", "--gpus", "--gres", "--array"):  # its own QOS, no GPU, one job
        assert option not in feeder_script
    assert (outcome.jobs_left, outcome.feeder) == (2, "4")
    assert feeding(request) == records.FeedingRecord(
        cells_left=4,
        jobs_left=2,
        limits=outcome.queue_limits,
        feeder="4",
    )
    jobs, _ = records.read_jobs(request.layout.jobs)
    assert [(job.job_id, len(job.cells)) for job in jobs] == [("3_0", 2), ("3_1", 2), ("4", 0)]


def test_a_limit_the_feeder_counts_in_keeps_a_place_for_it(tmp_path, queue, mnist_dir):
    says(queue, "sacctmgr", "3\n")  # the user's association: every job of theirs counts
    queue.replies.write_text("3\n4\n")
    request = request_of(tmp_path, mnist_dir, seeds=8)
    outcome = launch(request, feeder.JobLog())
    assert "#SBATCH --array=0-1%2" in scripts(queue)[0]  # 2 jobs and the feeder make 3
    assert (outcome.jobs_left, outcome.feeder) == (2, "4")


def test_a_limit_too_small_for_the_feeders_place_sends_what_fits(
    tmp_path, queue, mnist_dir, monkeypatch
):
    says(queue, "sacctmgr", "2\n")  # the association: the running feeder and one more job
    says(queue, "squeue", "ada|normal\n")  # the feeder itself
    monkeypatch.setenv("SLURM_JOB_ID", "4")
    queue.replies.write_text("5\nrefuse Job violates accounting/QOS policy\n")
    request = request_of(tmp_path, mnist_dir, seeds=8)
    feeder.feed(feeder.portable(request), [])
    assert "--job-name=mnistsweep-golden\n" in scripts(queue)[0]  # a job sent, not a feeder
    assert feeding(request).jobs_left == 3 and feeding(request).feeder == ""


@settings(max_examples=60, deadline=None)
@given(
    submit=st.none() | st.integers(0, 50),
    in_qos=st.none() | st.integers(0, 50),
    job_count=st.none() | st.integers(0, 100),
    own=st.integers(0, 60),
    qos=st.sampled_from(["normal", "limited"]),
)
def test_the_feeders_place_is_kept_in_every_limit_it_counts_in(submit, in_qos, job_count, own, qos):
    cluster = limits.ClusterLimits(
        max_job_count=job_count,
        max_submit_jobs=submit,
        max_submit_jobs_in_qos=in_qos,
        qos=qos,
        enforced=True,
    )
    counts = limits.QueueCounts(own=own, own_in_qos=own, everyone=own)
    room, kept = cluster.room(counts), cluster.room(counts, feeder=True)
    if room is None:
        assert kept is None
        return
    assert kept is not None and room - 1 <= kept <= room
    if qos == "normal":  # the feeder's own QOS: every limit counts it
        assert kept == max(0, room - 1)
    elif submit is None and job_count is None:  # only the sweep's QOS limits: not the feeder
        assert kept == room


def test_a_relaunch_while_a_feeder_waits_sends_no_second_one(tmp_path, queue, mnist_dir):
    says(queue, "sacctmgr", "limited|2\n")
    queue.replies.write_text("3\n4\n5\n")
    request = request_of(tmp_path, mnist_dir, seeds=8, qos="limited")
    launch(request, feeder.JobLog())
    says(queue, "sacct", "3_0|RUNNING|None\n3_1|RUNNING|None\n4|PENDING|None\n")
    says(queue, "squeue", "ada|limited\n")  # one of the user's jobs left: room for one more
    again = launch(request, feeder.JobLog())
    assert len(scripts(queue)) == 3 and "--job-name=mnistsweep-golden\n" in scripts(queue)[2]
    assert "#SBATCH --dependency=afterany:3\n" in scripts(queue)[2]  # after the live array
    assert (again.jobs_left, again.feeder) == (1, "4")
    assert feeding(request).feeder == "4"


def test_a_feeder_sends_the_rest_through_the_launch_round_and_chains_the_next(
    tmp_path, queue, mnist_dir, monkeypatch
):
    says(queue, "sacctmgr", "limited|2\n")
    queue.replies.write_text("3\n4\n5\n6\n7\n")
    request = request_of(tmp_path, mnist_dir, seeds=12, qos="limited")  # 6 jobs
    launch(request, feeder.JobLog())
    # the first jobs' cells are theirs (sacct); the queue has room again (squeue is empty)
    says(queue, "sacct", "3_0|RUNNING|None\n3_1|RUNNING|None\n4|RUNNING|None\n")
    monkeypatch.setenv("SLURM_JOB_ID", "4")  # the feeder itself is running
    assert feeder.feed(feeder.portable(request), ["3_0", "3_1"]) == "fed"
    next_feeder = scripts(queue)[3]
    assert "#SBATCH --array=0-1%2" in scripts(queue)[2]
    assert "#SBATCH --dependency=afterany:5\n" in next_feeder
    assert feeding(request).feeder == "6" and feeding(request).cells_left == 4
    says(
        queue,
        "sacct",
        "3_0|RUNNING|None\n3_1|RUNNING|None\n5_0|RUNNING|None\n5_1|RUNNING|None\n6|RUNNING|None\n",
    )
    monkeypatch.setenv("SLURM_JOB_ID", "6")
    assert feeder.feed(feeder.portable(request), ["5_0", "5_1"]) == "fed"
    assert len(scripts(queue)) == 5  # the last 2 jobs fit: no feeder after them
    assert feeding(request) is None
    jobs, _ = records.read_jobs(request.layout.jobs)
    sent = [cell for job in jobs for cell in job.cells]
    assert sorted(sent) == sorted(cell.id for cell in request.spec.cells())  # each once


def test_a_feeder_after_cancelled_jobs_sends_nothing(tmp_path, queue, mnist_dir):
    says(queue, "sacctmgr", "limited|2\n")
    queue.replies.write_text("3\n4\n5\n")
    request = request_of(tmp_path, mnist_dir, seeds=8, qos="limited")
    launch(request, feeder.JobLog())
    says(queue, "sacct", "3_0|COMPLETED|None\n3_1|CANCELLED by 0|None\n")  # a user's scancel
    pickled = request.layout.root / "submitit" / "4" / "4_submitted.pkl"
    submitted = pickle.loads(pickled.read_bytes())  # what the feeder job will run
    assert submitted.function is feeder.feed
    assert submitted.function(*submitted.args) == "cancelled"
    assert len(scripts(queue)) == 2


def test_a_feeder_leaves_the_round_to_whoever_holds_the_lock(tmp_path, queue, mnist_dir):
    says(queue, "sacctmgr", "limited|2\n")
    queue.replies.write_text("3\n4\n5\n")
    request = request_of(tmp_path, mnist_dir, seeds=8, qos="limited")
    launch(request, feeder.JobLog())
    descriptor = fsio.open_lock(request.layout.launch_lock)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert feeder.feed(feeder.portable(request), ["3_0", "3_1"]) == "lock held"
    finally:
        os.close(descriptor)
    assert len(scripts(queue)) == 2


def test_a_refused_feeder_is_one_warning_and_the_sent_jobs_stay(tmp_path, queue, mnist_dir):
    says(queue, "sacctmgr", "limited|2\n")
    queue.replies.write_text("3\nrefuse Invalid qos specification\n")
    request = request_of(tmp_path, mnist_dir, seeds=8, qos="limited")
    launched = cli(tmp_path, "launch", str(write_spec(tmp_path, seeds=8, qos="limited")))
    assert launched.returncode == 0, launched.stderr
    assert "warning: no feeder job (Batch job submission failed: Invalid qos" in launched.stdout
    assert "2 job(s) not submitted" in launched.stdout and "launch again" in launched.stdout
    assert feeding(request).feeder == ""


def test_status_says_what_waits_to_be_sent_and_who_sends_it(tmp_path, queue, mnist_dir):
    says(queue, "sacctmgr", "limited|2\n")
    queue.replies.write_text("3\n4\n")
    request = request_of(tmp_path, mnist_dir, seeds=8, qos="limited")
    launch(request, feeder.JobLog())
    sweep_dir = str(request.layout.root)
    says(queue, "sacct", "3_0|RUNNING|None\n3_1|RUNNING|None\n4|PENDING|None\n")
    shown = status(sweep_dir)
    assert "4 cell(s) waiting to be sent (QOS limited MaxSubmitJobsPerUser=2" in shown
    assert "feeder job 4 sends them as room frees" in shown
    says(queue, "sacct", "3_0|RUNNING|None\n3_1|RUNNING|None\n4|CANCELLED by 0|None\n")
    shown = status(sweep_dir)
    assert "no feeder job is queued; launch again to send them" in shown


@settings(max_examples=25, deadline=None)
@given(content=st.binary(max_size=200))
def test_a_damaged_feeding_record_is_no_line_and_no_traceback(tmp_path_factory, content):
    sweep_dir = tmp_path_factory.mktemp("sweep")
    SweepLayout(sweep_dir).feeding.write_bytes(content)
    line = feeder.waiting_line(sweep_dir)
    assert line is None or "waiting to be sent" in line


# --- array_parallelism for the whole sweep -----------------------------------------------------


def test_an_array_sent_while_the_sweeps_arrays_live_starts_after_them(tmp_path, queue):
    spec = load_spec(write_spec(tmp_path))
    cells = spec.cells()
    layout = SweepLayout(tmp_path / "out" / spec.name)
    records.append_job(
        layout.jobs,
        records.JobRecord(
            job_id="9_0",
            cells=[c.id for c in cells[:2]],
            submitted="now",
            sweep_dir=identity.jobs_owner(layout.root),
        ),
    )
    says(queue, "sacct", "9_0|RUNNING|None\n")
    queue.replies.write_text("10\n")
    plan = planning.plan_launch(spec, tmp_path / "out", "slurm")
    slurm.submit(plan, None, plan.batches, None)
    assert "#SBATCH --dependency=afterany:9\n" in scripts(queue)[0]
    assert "#SBATCH --dependency=afterany:9\n" in slurm.render_script(plan, None, 1)


def test_arrays_split_by_max_array_size_run_one_after_the_other(tmp_path, queue):
    queue.replies.write_text("3\n4\n5\n")
    plan = planning.plan_launch(
        load_spec(write_spec(tmp_path, seeds=10)), tmp_path / "out", "slurm"
    )
    slurm.submit(plan, None, plan.batches, 2)  # 5 jobs in arrays of at most 2
    first, second, third = scripts(queue)
    assert "--dependency" not in first
    assert "#SBATCH --dependency=afterany:3\n" in second
    assert "#SBATCH --dependency=afterany:4\n" in third
