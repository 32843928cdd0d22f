"""Jobs are bound to the sweep folder that submitted them: a copy of the folder never cancels,
follows or counts the original's jobs (with a faked scheduler, and live on the test cluster)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from test_slurm import cli, cluster, wait_for, write_spec  # noqa: F401 (cluster: a fixture)
from test_status import FakeScheduler, give_jobs, sweep  # noqa: F401 (sweep: a fixture)

from mnistsweep.__main__ import main
from mnistsweep.execute import scheduler
from mnistsweep.sweep import records
from mnistsweep.sweep.layout import SweepLayout


def test_a_copy_ignores_the_originals_jobs_and_cancels_nothing(
    sweep,  # noqa: F811
    tmp_path,
    monkeypatch,
    capsys,
):
    sweep_dir, cells = sweep
    give_jobs(sweep_dir, {"12_0": cells[:2], "12_1": cells[2:]})
    copy = tmp_path / "copied" / sweep_dir.name
    shutil.copytree(sweep_dir, copy)
    fake = FakeScheduler(tmp_path / "bin", monkeypatch)
    fake.answer(sacct="12_0|PENDING|BeginTime\n12_1|PENDING|BeginTime\n")

    assert set(scheduler.load_jobs(sweep_dir).owners.values()) == {"12_0", "12_1"}
    copied = scheduler.load_jobs(copy)
    assert copied.jobs == [] and len(copied.problems) == 1
    assert str(sweep_dir.resolve()) in copied.problems[0]

    assert main(["cancel", str(copy)]) == 0
    out, err = capsys.readouterr()
    assert "cancelled 0 job(s)" in out and not any(c.startswith("scancel") for c in fake.calls)
    assert len([line for line in err.splitlines() if "copy or was moved" in line]) == 1
    main(["status", str(copy)])
    assert "4 not started" in capsys.readouterr().out  # not "queued" in someone else's job
    main(["status", str(sweep_dir)])
    assert "4 queued" in capsys.readouterr().out


def test_a_job_recorded_without_its_folder_is_ignored_with_one_warning(sweep):  # noqa: F811
    sweep_dir, cells = sweep
    line = records.JobRecord(job_id="7", cells=[cells[0].id], submitted="then")
    records.append_job(SweepLayout(sweep_dir).jobs, line)
    jobs = scheduler.load_jobs(sweep_dir)
    assert jobs.jobs == [] and len(jobs.problems) == 1 and "older mnistsweep" in jobs.problems[0]


@pytest.mark.slurm
def test_cancel_in_a_copied_sweep_folder_leaves_the_originals_job_queued(
    cluster,  # noqa: F811
    tmp_path,
    mnist_dir,
):
    spec_path = write_spec(
        tmp_path,
        "held",
        {"seed": [0]},
        {"arch": "linear"},
        slurm={"additional": {"begin": "now+600"}},
    )
    assert cli(tmp_path, mnist_dir, "launch", str(spec_path)).returncode == 0
    original = tmp_path / "out" / "held"
    (job_id,) = scheduler.read_jobs(original).values()
    copy_root = tmp_path / "copy"
    shutil.copytree(original, copy_root / "held")
    try:
        cancelled = cli(tmp_path, mnist_dir, "cancel", str(copy_root / "held"))
        assert cancelled.returncode == 0 and "cancelled 0 job(s)" in cancelled.stdout
        relaunched = subprocess.run(
            [sys.executable, "-m", "mnistsweep", "launch", str(spec_path), "--results-dir", "copy"],
            capture_output=True,
            text=True,
            env={**os.environ, "MNISTSWEEP_DATA": str(mnist_dir)},
            cwd=tmp_path,
            timeout=600,
        )
        assert relaunched.returncode == 0, relaunched.stderr
        (own_job,) = scheduler.read_jobs(copy_root / "held").values()
        assert own_job != job_id  # the copy's cell is not "already queued" in the original's job
        cancelled = cli(tmp_path, mnist_dir, "cancel", str(copy_root / "held"))
        assert f"cancelled 1 job(s): {own_job.split('_')[0]}" in cancelled.stdout
        wait_for(
            lambda: scheduler.sacct_states([own_job]).get(own_job) == "CANCELLED",
            30,
            "the copy's own job to be cancelled",
        )
        assert scheduler.sacct_states([job_id])[job_id] == "PENDING"
    finally:
        assert cli(tmp_path, mnist_dir, "cancel", str(original)).returncode == 0
