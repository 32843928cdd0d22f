"""Out of memory on the live test cluster, which enforces each job's --mem as a cluster without
cgroups does (slurm/testcluster.sh: JobAcctGatherParams=OverMemoryKill, polled every second):
a cell alone in its job and the cells packed into one job, killed for their memory, read out of
memory in `launch --wait` and `status` (exit 1), with the memory the job had and the advice;
raising executor.slurm.mem_gb as advised and launching again trains them."""

from __future__ import annotations

import pytest
from test_slurm import cli, cluster, status_of, write_spec  # noqa: F401 (cluster: a fixture)

from mnistsweep.sweep.spec import load_spec

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("cluster")]

# Far below what Python with Keras and MNIST holds (~1 GB): the job is killed while it starts.
TOO_LITTLE_GB = 0.25
TOO_LITTLE = f"{round(TOO_LITTLE_GB * 1024)}M"
ADVICE = "raise executor.slurm.mem_gb or lower executor.concurrent_cells, then launch again"


def ran_out(tmp_path, mnist_dir, name: str, seeds: list[int], **executor) -> None:
    """Launch with too little memory and wait: every cell reads out of memory, nowhere lost."""
    spec_path = write_spec(
        tmp_path,
        name,
        {"seed": seeds},
        {"arch": "linear"},
        **executor,
        slurm={"mem_gb": TOO_LITTLE_GB},
    )
    done = cli(tmp_path, mnist_dir, "launch", str(spec_path), "--wait")
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"{len(seeds)} out of memory" in done.stdout, done.stdout
    for seed in seeds:
        shown = next(line for line in done.stdout.splitlines() if f" seed={seed}: " in line)
        assert shown.lstrip().startswith("out of memory"), shown
        assert f"with {TOO_LITTLE}" in shown and ADVICE in shown, shown

    sweep_dir = tmp_path / "out" / name
    status = cli(tmp_path, mnist_dir, "status", str(sweep_dir))
    assert status.returncode == 1, status.stdout + status.stderr
    assert f"{len(seeds)} cells: {len(seeds)} out of memory" in status.stdout, status.stdout
    assert "lost" not in status.stdout and "exceeded memory limit" in status.stdout

    raised = write_spec(
        tmp_path, name, {"seed": seeds}, {"arch": "linear"}, **executor, slurm={"mem_gb": 3}
    )
    again = cli(tmp_path, mnist_dir, "launch", str(raised), "--wait")
    assert again.returncode == 0, again.stdout + again.stderr
    for cell in load_spec(raised).cells():
        assert status_of(sweep_dir, cell) == "completed"


def test_a_cell_alone_over_its_memory_reads_out_of_memory_and_trains_with_more(tmp_path, mnist_dir):
    ran_out(tmp_path, mnist_dir, "alone", [0], cells_per_job=1)


def test_cells_packed_over_their_job_s_memory_read_out_of_memory_each(tmp_path, mnist_dir):
    ran_out(tmp_path, mnist_dir, "packed", [0, 1], cells_per_job=2, concurrent_cells=2)
