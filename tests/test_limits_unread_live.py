"""With accounting down (slurmdbd stopped, so sacctmgr cannot tell the submit limits), a sweep
larger than its QOS's MaxSubmitJobsPerUser on the live test cluster: slurmctld still enforces the
limit it knows, sbatch refuses the whole array, and the launch sends the part sbatch takes and a
feeder job for the rest, which completes with the launcher gone. slurmdbd is started again after
the test, whatever happens."""

import subprocess
import time
from pathlib import Path

import pytest
from test_feeding_live import (
    QOS,
    cancel_all,
    completed,
    feeding_qos,  # noqa: F401  (a fixture)
    mnistsweep,
    poll,
    qos_submit_limit,
    squeue,
    write_spec,
)
from test_submit_live import cluster  # noqa: F401  (a fixture)

from mnistsweep.sweep import records
from mnistsweep.sweep.layout import SweepLayout

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
PID_FILE = Path("/var/spool/slurm-local/slurmdbd.pid")


def accounting_answers() -> bool:
    return qos_submit_limit() == "3"


@pytest.fixture
def accounting_down(feeding_qos):  # noqa: F811
    if not PID_FILE.exists():
        pytest.skip("no slurmdbd of slurm/testcluster.sh here")
    subprocess.run(["kill", PID_FILE.read_text().strip()], check=False, timeout=10)
    deadline = time.monotonic() + 30
    while accounting_answers():
        if time.monotonic() > deadline:
            pytest.fail("slurmdbd did not stop")
        time.sleep(0.5)
    try:
        yield
    finally:
        subprocess.run(["/usr/sbin/slurmdbd"], check=False, timeout=30)
        deadline = time.monotonic() + 60
        while not accounting_answers() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert accounting_answers(), "slurmdbd did not come back"


def test_a_submit_limit_nobody_can_read_is_met_not_refused(accounting_down, tmp_path, mnist_dir):
    spec = write_spec(tmp_path, "unread", seeds=6, qos=QOS)
    sweep_dir = tmp_path / "out" / "unread"
    try:
        launched = mnistsweep(
            mnist_dir, "launch", str(spec), "--results-dir", str(tmp_path / "out")
        )
        assert launched.returncode == 0, launched.stdout + launched.stderr
        assert "submitted 3 cells in 3 job(s)" in launched.stdout, launched.stdout
        assert "feeder job" in launched.stdout, launched.stdout
        most = [0]

        def count() -> None:
            in_qos = sum(1 for _, _, qos in squeue("mnistsweep-unread") if qos == QOS)
            most[0] = max(most[0], in_qos)

        poll(completed(mnist_dir, sweep_dir, 6), count, "every cell completing")
        assert most[0] <= 3
        jobs, _ = records.read_jobs(SweepLayout(sweep_dir).jobs)
        sent = [cell for job in jobs for cell in job.cells]
        assert len(sent) == len(set(sent)) == 6  # every cell sent once
        poll(lambda: not squeue("mnistsweep-unread-feeder"), lambda: None, "the feeder ending")
    finally:
        cancel_all(sweep_dir)
