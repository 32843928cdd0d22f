"""A submit limit the launch cannot read (slurmdbd down: sacctmgr answers nothing), enforced by
sbatch all the same: the sweep is sent in the part sbatch takes, the rest is left to the feeder,
and only a job that no queue room would let through is refused. The stand-in sbatch has a room
of R tasks (an array of N tasks takes N) and refuses what would pass it, as slurmctld does."""

import os
import tempfile
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_submit import write_spec

from mnistsweep.errors import MnistsweepError
from mnistsweep.execute import feeder
from mnistsweep.execute.launch import LaunchRequest, launch
from mnistsweep.sweep import records
from mnistsweep.sweep.spec import load_spec

POLICY = "Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)"
ROOMY_SBATCH = """#!/bin/sh
# stand-in sbatch with a submit limit: takes what fits in the room left, refuses the rest
n=$(ls "{calls}" | wc -l)
cp "$1" "{calls}/$n.sh"
last=$(sed -n 's/^#SBATCH --array=0-\\([0-9]*\\).*/\\1/p' "$1")
tasks=$(( ${{last:--1}} + 1 ))
[ "$tasks" -eq 0 ] && tasks=1
room=$(cat "{room}")
if [ "$tasks" -gt "$room" ]; then
  echo "sbatch: error: Batch job submission failed: {policy}" >&2
  exit 1
fi
echo $((room - tasks)) > "{room}"
echo "Submitted batch job $((100 + n))"
"""


class Cluster:
    """Tools first on PATH: the roomy sbatch; scontrol says the limits are enforced; sacctmgr
    answers nothing (accounting down); squeue lists `queued` jobs of this user."""

    def __init__(self, root: Path, room: int, queued: int) -> None:
        self.root, self.tools, self.calls = root, root / "bin", root / "calls"
        self.tools.mkdir()
        self.calls.mkdir()
        self.room = root / "room"
        self.room.write_text(f"{room}\n")
        answers = {
            "scontrol": "AccountingStorageEnforce = associations,limits,qos\n",
            "squeue": "ada|normal\n" * queued,
            "sacct": "",
            "sacctmgr": "",
        }
        for tool, text in answers.items():
            (root / f"{tool}-says").write_text(text)
            self.tool(tool, f'#!/bin/sh\ncat "{root}/{tool}-says"\nexit 0\n')
        self.tool("srun", "#!/bin/sh\nexit 1\n")
        self.tool("sbatch", ROOMY_SBATCH.format(calls=self.calls, room=self.room, policy=POLICY))

    def tool(self, name: str, body: str) -> None:
        (self.tools / name).write_text(body)
        (self.tools / name).chmod(0o755)

    def environment(self) -> dict[str, str]:
        return {"PATH": f"{self.tools}{os.pathsep}{os.environ['PATH']}", "USER": "ada"}


def sent_cells(request: LaunchRequest) -> list[str]:
    jobs, _ = records.read_jobs(request.layout.jobs)
    return [cell for job in jobs for cell in job.cells]


@settings(max_examples=12, deadline=None)
@given(jobs=st.integers(2, 6), room=st.integers(1, 8))
def test_a_limit_nobody_could_read_sends_what_sbatch_takes_and_leaves_the_rest(
    jobs, room, mnist_dir
):
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        cluster = Cluster(root, room, queued=0)
        with mock.patch.dict(os.environ, cluster.environment()):
            os.environ.pop("SLURM_JOB_ID", None)
            spec = load_spec(write_spec(root, seeds=2 * jobs))  # 2 cells a job
            request = LaunchRequest(spec, root / "out", mnist_dir)
            outcome = launch(request, feeder.JobLog())
        sent = sent_cells(request)
        cells = {cell.id for cell in spec.cells()}
        assert 1 <= len(sent) // 2 <= min(room, jobs), "sbatch's room was passed or left empty"
        assert len(set(sent)) == len(sent) and set(sent) <= cells
        assert outcome.jobs_left == jobs - len(sent) // 2
        if outcome.jobs_left:
            record = records.read(records.FeedingRecord, request.layout.feeding)
            assert record is not None and record.cells_left == len(cells) - len(sent)
            assert bool(record.feeder) == (room > len(sent) // 2)  # a place left for it
        else:
            assert not request.layout.feeding.exists()


@pytest.mark.parametrize("queued", [0, 3])
def test_a_queue_with_no_room_refuses_only_a_job_that_breaks_a_limit(queued, mnist_dir, tmp_path):
    """No room at all: with this user's jobs in the queue, the queue is full (nothing sent, no
    error, the rest is left); with none, the job itself breaks a limit: the refusal stands."""
    cluster = Cluster(tmp_path, room=0, queued=queued)
    with mock.patch.dict(os.environ, cluster.environment()):
        os.environ.pop("SLURM_JOB_ID", None)
        spec = load_spec(write_spec(tmp_path, seeds=4))
        request = LaunchRequest(spec, tmp_path / "out", mnist_dir)
        if queued:
            outcome = launch(request, feeder.JobLog())
            assert outcome.jobs_left == 2 and sent_cells(request) == []
        else:
            with pytest.raises(MnistsweepError, match="accounting/QOS policy"):
                launch(request, feeder.JobLog())
            assert not (tmp_path / "out" / spec.name / "jobs.jsonl").exists()
