"""States that say what happened, on the live test cluster: a held array cancelled with
`mnistsweep cancel` reads cancelled (exit 0) and a relaunch would resume it; a job whose setup
line fails reads failed, with that line, in `status` and in the launch's own outcome."""

from __future__ import annotations

import pytest
from test_slurm import cli, cluster, wait_for, write_spec  # noqa: F401 (cluster: a fixture)

from mnistsweep.execute import plan as planning
from mnistsweep.sweep.spec import load_spec

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("cluster")]


def test_a_held_array_cancelled_by_mnistsweep_cancel_reads_cancelled(tmp_path, mnist_dir):
    spec_path = write_spec(
        tmp_path,
        "held",
        {"seed": [0, 1]},
        {"arch": "linear"},
        slurm={"additional": {"begin": "now+600"}},
    )
    launched = cli(tmp_path, mnist_dir, "launch", str(spec_path))
    assert launched.returncode == 0, launched.stdout + launched.stderr
    sweep_dir = tmp_path / "out" / "held"
    cancelled = cli(tmp_path, mnist_dir, "cancel", str(sweep_dir))
    assert cancelled.returncode == 0 and "cancelled 1 job(s)" in cancelled.stdout

    def reads_cancelled() -> bool:
        return "2 cells: 2 cancelled" in cli(tmp_path, mnist_dir, "status", str(sweep_dir)).stdout

    wait_for(reads_cancelled, 60, "status to read the cancelled cells")
    status = cli(tmp_path, mnist_dir, "status", str(sweep_dir))
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.count("launch again to resume") == 2 and "lost" not in status.stdout
    plan = planning.plan_launch(load_spec(spec_path), tmp_path / "out", "slurm")
    assert len(plan.todo) == 2  # a relaunch resumes them


def test_a_failing_setup_line_reads_failed_with_that_line(tmp_path, mnist_dir):
    spec_path = write_spec(
        tmp_path,
        "setup",
        {"seed": [0]},
        {"arch": "linear"},
        slurm={"setup": ["module load nosuch/1.0"]},
    )
    done = cli(tmp_path, mnist_dir, "launch", str(spec_path), "--wait")
    assert done.returncode == 1, done.stdout + done.stderr
    # The log's first error line: the shell's (no `module` here) or Lmod's, before mnistsweep's.
    first_error = ("module: command not found", "setup line failed: module load nosuch/1.0")
    shown = next(line for line in done.stdout.splitlines() if "failed seed=0: " in line)
    assert shown.endswith(first_error), shown

    status = cli(tmp_path, mnist_dir, "status", str(tmp_path / "out" / "setup"))
    assert status.returncode == 1
    line = next(line for line in status.stdout.splitlines() if "seed=0" in line)
    assert line.split()[0] == "failed" and "lost" not in status.stdout
    assert line.endswith(first_error), line
