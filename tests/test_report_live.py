"""The report and `status` agree on every cell's state on a live cluster: a cell whose job waits
in the queue is "queued" in both, never "not started" in the report."""

from __future__ import annotations

import re

import pytest
from test_slurm import cli, cluster, wait_for, write_spec  # noqa: F401  (cluster: a fixture)

from mnistsweep.execute import scheduler
from mnistsweep.report import context

pytestmark = pytest.mark.slurm


def report_counts(markdown: str) -> dict[str, int]:
    """The Progress section's `| state | cells |` rows."""
    progress = markdown.split("## Progress", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\|\s*([a-z ]+?)\s*\|\s*(\d+)\s*\|$", progress, flags=re.MULTILINE)
    return {state: int(cells) for state, cells in rows}


@pytest.mark.usefixtures("cluster")
def test_a_queued_cell_is_queued_in_the_report_as_in_status(tmp_path, mnist_dir):
    spec_path = write_spec(
        tmp_path,
        "queued",
        {"seed": [0, 1]},
        {"arch": "linear"},
        slurm={"additional": {"begin": "now+600"}},  # pending on its start time
    )
    sweep_dir = tmp_path / "out" / "queued"
    try:
        launched = cli(tmp_path, mnist_dir, "launch", str(spec_path))
        assert launched.returncode == 0, launched.stderr
        wait_for(
            lambda: "2 queued" in cli(tmp_path, mnist_dir, "status", str(sweep_dir)).stdout,
            30,
            "status to show the pending jobs",
        )
        reported = cli(tmp_path, mnist_dir, "report", str(sweep_dir), "--data-dir", str(mnist_dir))
        assert reported.returncode == 0, reported.stderr
        status = {
            row.cell.name: row.view.state.value for row in scheduler.sweep_status(sweep_dir).rows
        }
        assert set(status.values()) == {"queued"}
        counts = report_counts((sweep_dir / "report.md").read_text())
        assert counts.get("queued") == 2 and "not started" not in counts, counts
        inputs = context.load(sweep_dir, None, mnist_dir)
        states = context.analyse(inputs).cell_states
        assert states is not None
        assert dict(zip(states["cell"], states["state"], strict=True)) == status
    finally:
        cli(tmp_path, mnist_dir, "cancel", str(sweep_dir))
