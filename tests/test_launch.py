"""Local launches through the command line, as a user runs them: real training, real submitit."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mnistsweep.execute import job
from mnistsweep.sweep import records, state
from mnistsweep.sweep.layout import SweepLayout
from mnistsweep.sweep.spec import load_spec
from mnistsweep.train import trainer

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, data_dir: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MNISTSWEEP_DATA": str(data_dir), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "mnistsweep", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
    )


@pytest.mark.slow
def test_launch_trains_every_cell_then_relaunch_skips_them(tmp_path, tiny_spec, mnist_dir):
    spec_path = tiny_spec()
    launch = ("launch", str(spec_path), "--results-dir", "out")
    part = cli(*launch, "--only", "arch=linear", data_dir=mnist_dir, cwd=tmp_path)
    assert part.returncode == 0, part.stderr
    assert "2 to train" in part.stdout and "leaving 2 unfinished cells out" in part.stdout
    assert "Partial report" in (tmp_path / "out" / "tiny" / "report.md").read_text()

    first = cli(*launch, data_dir=mnist_dir, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "skipping 2 cells" in first.stdout and "2 to train" in first.stdout
    assert "| mlp" in first.stdout and "| linear" in first.stdout
    table = pd.read_csv(tmp_path / "out" / "tiny" / "summary.csv")
    assert sorted(table["arch"]) == ["linear", "mlp"] and list(table["n"]) == [2, 2]
    assert (table["test_acc_mean"] > 0.5).all()
    local_jobs = SweepLayout(tmp_path / "out" / "tiny").local_submitit
    assert list(local_jobs.glob("*_result.pkl"))  # via submitit
    report = (tmp_path / "out" / "tiny" / "report.md").read_text()
    assert "Partial report" not in report and "## Results per configuration" in report

    results_before = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("result.json")}
    assert len(results_before) == 4
    second = cli(*launch, data_dir=mnist_dir, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "skipping 4 cells" in second.stdout and "0 to train" in second.stdout
    assert {p: p.stat().st_mtime_ns for p in results_before} == results_before

    aggregate = cli("aggregate", "out/tiny", data_dir=mnist_dir, cwd=tmp_path)
    assert aggregate.returncode == 0 and "| mlp" in aggregate.stdout


@pytest.mark.parametrize(
    "selection, fragment",
    [
        ("arch=resnet", "--only arch=resnet: the sweep has no such value; allowed: linear, mlp"),
        ("depth=3", "--only depth: not an axis of this sweep; axes: arch, seed"),
        ("arch", "expected AXIS=VALUE"),
    ],
)
def test_only_with_a_value_the_sweep_lacks_is_one_line_exit_2(
    tmp_path, tiny_spec, mnist_dir, selection, fragment
):
    result = cli(
        "launch",
        str(tiny_spec()),
        "--only",
        selection,
        "--results-dir",
        "out",
        data_dir=mnist_dir,
        cwd=tmp_path,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and fragment in result.stderr
    assert not (tmp_path / "out").exists()


def test_only_selects_cells_by_axis_values(tmp_path, tiny_spec, mnist_dir):
    spec_path = tiny_spec(grid={"arch": ["linear", "mlp"], "dropout": [None, 0.25], "seed": [0]})
    result = cli(
        "launch",
        str(spec_path),
        "--dry-run",
        "--only",
        "dropout=0.25",
        "--only",
        "arch=mlp,linear",
        "--results-dir",
        "out",
        data_dir=mnist_dir,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "2 to train" in result.stdout and "leaving 2 unfinished cells out" in result.stdout
    selected = [line for line in result.stdout.splitlines() if line.strip().startswith("todo")]
    assert len(selected) == 2 and all("dropout=0.25" in line for line in selected)


def test_dry_run_lists_cells_and_trains_nothing(tmp_path, tiny_spec, mnist_dir):
    spec_path = tiny_spec()
    result = cli(
        "launch",
        str(spec_path),
        "--dry-run",
        "--results-dir",
        "out",
        data_dir=mnist_dir,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    for cell in load_spec(spec_path).cells():
        assert cell.id in result.stdout and cell.name in result.stdout
    assert not (tmp_path / "out").exists()


def test_results_dir_from_environment(tmp_path, tiny_spec, mnist_dir, monkeypatch):
    monkeypatch.setenv("MNISTSWEEP_RESULTS", str(tmp_path / "elsewhere"))
    from mnistsweep.cli.common import default_results_dir

    assert default_results_dir() == tmp_path / "elsewhere"


def test_changed_spec_under_same_name_is_refused(tmp_path, tiny_spec, mnist_dir):
    from mnistsweep.sweep import guard

    spec = load_spec(tiny_spec())
    guard.record_spec(SweepLayout(tmp_path / "out" / "tiny"), spec)
    changed = tiny_spec(epochs=2)
    result = cli("launch", str(changed), "--results-dir", "out", data_dir=mnist_dir, cwd=tmp_path)
    assert result.returncode == 2
    assert "differ from the spec that filled" in result.stderr and "new name" in result.stderr


def test_failing_cell_is_recorded_and_the_others_go_on(tmp_path, tiny_spec, monkeypatch):
    cells = load_spec(tiny_spec()).cells()
    broken = cells[1]

    def fake_run_cell(cell, run_dir, data_dir, sweep_dir=None):
        if cell.id == broken.id:
            raise MemoryError("out of memory in a convolution")
        result = records.RunResult(
            status="completed",
            cell_id=cell.id,
            cell_name=cell.name,
            config=dict(cell.config),
            metrics=records.RunMetrics(test_accuracy=0.9, best_val_accuracy=0.9),
        )
        records.write(Path(run_dir) / "result.json", result)
        return result.model_dump(mode="json")

    monkeypatch.setattr(trainer, "run_cell", fake_run_cell)
    outcomes = job.CellBatch()(str(tmp_path), cells, None)
    assert [o["status"] for o in outcomes] == ["completed", "failed", "completed", "completed"]
    run = SweepLayout(tmp_path).run(broken)
    result = records.read(records.RunResult, run.result)
    assert result is not None and result.status == "failed"
    assert result.error == "MemoryError: out of memory in a convolution"
    assert "MemoryError" in result.error_tail[-1]
    assert "Traceback" in run.error.read_text()


def test_a_cell_locked_by_another_launch_is_not_trained_twice(tmp_path, tiny_spec, monkeypatch):
    cell = load_spec(tiny_spec()).cells()[0]

    monkeypatch.setattr(trainer, "run_cell", lambda *a: pytest.fail("trained a locked cell"))
    with state.training_lock(SweepLayout(tmp_path).run(cell)) as acquired:
        assert acquired
        assert job.CellBatch()(str(tmp_path), [cell], None)[0]["status"] == "training"


def test_shipped_quick_sweep_is_small_enough_for_a_cpu():
    spec = load_spec(REPO / "sweeps" / "quick.yaml")
    assert spec.size <= 16 and spec.train["epochs"] <= 3
    assert yaml.safe_load((REPO / "sweeps" / "quick.yaml").read_text())["name"] == "quick"


@pytest.mark.slow
def test_cells_of_one_job_can_train_concurrently_with_the_same_results(
    tmp_path, tiny_spec, mnist_dir
):
    cells = load_spec(tiny_spec(grid={"arch": ["linear"], "seed": [0, 1]})).cells()
    together = job.CellBatch()(str(tmp_path / "together"), cells, str(mnist_dir), 2)
    alone = job.CellBatch()(str(tmp_path / "alone"), cells, str(mnist_dir), 1)
    assert [o["status"] for o in together] == [o["status"] for o in alone] == ["completed"] * 2
    for cell in cells:
        results = [
            records.read(records.RunResult, SweepLayout(tmp_path / where).run(cell).result)
            for where in ("together", "alone")
        ]
        assert results[0] is not None and results[1] is not None
        assert results[0].metrics.test_accuracy == results[1].metrics.test_accuracy


def _as_a_terminal_foreground_job() -> None:
    """A terminal's foreground job gets SIGINT at its default. A shell without job control starts
    background commands with SIGINT ignored, and Python then keeps it ignored: a suite started with
    `&` (or under nohup) would otherwise test a launch that Ctrl-C cannot reach at all."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_ctrl_c_of_a_local_launch_is_one_line_and_the_run_resumes(tmp_path, tiny_spec, mnist_dir):
    """Ctrl-C reaches the whole foreground process group, submitit's controller and the job
    included: the user sees our one line, no traceback, and a relaunch resumes the cell."""
    import signal
    import time

    from mnistsweep.sweep import records
    from mnistsweep.train import pace

    # The test pace keeps the cell training for a minute on any machine: Ctrl-C always lands
    # mid-training, never after a fast machine has finished the cell.
    spec_path = tiny_spec(name="ctrlc", grid={"arch": ["mlp"]}, epochs=30, train_subset=2000)
    run = SweepLayout(tmp_path / "out" / "ctrlc").run(load_spec(spec_path).cells()[0])
    launch = subprocess.Popen(
        [sys.executable, "-m", "mnistsweep", "launch", str(spec_path), "--results-dir", "out"],
        cwd=tmp_path,
        env={
            **os.environ,
            "MNISTSWEEP_DATA": str(mnist_dir),
            "TF_CPP_MIN_LOG_LEVEL": "3",
            pace.EPOCH_SECONDS_ENV: "2",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own group, as a terminal's foreground job
        preexec_fn=_as_a_terminal_foreground_job,
    )
    try:
        deadline = time.monotonic() + 300
        while not run.state.exists():
            assert launch.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        os.killpg(launch.pid, signal.SIGINT)
        _, stderr = launch.communicate(timeout=120)
    finally:
        if launch.poll() is None:
            os.killpg(launch.pid, signal.SIGKILL)
    assert launch.returncode == 130
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert stderr.strip().splitlines() == [stderr.strip()] and "interrupted" in stderr
    state = records.read(records.RunState, run.state)
    assert state is not None and state.epochs_done >= 1
    assert not run.result.exists()


@pytest.mark.slow
def test_a_cell_another_launch_is_training_is_reported_as_such(tmp_path, tiny_spec, mnist_dir):
    """The job finds the cell's lock held and leaves it; the launch says so and exits 0."""
    spec_path = tiny_spec(name="busy", grid={"arch": ["linear"]})
    run = SweepLayout(tmp_path / "out" / "busy").run(load_spec(spec_path).cells()[0])
    with state.training_lock(run) as acquired:
        assert acquired
        launched = cli(
            "launch", str(spec_path), "--results-dir", "out", data_dir=mnist_dir, cwd=tmp_path
        )
    assert launched.returncode == 0, launched.stdout + launched.stderr
    assert "leaving 1 cell(s) to a process on this machine" in launched.stdout
    assert "nothing to train here" in launched.stdout and "has a result" not in launched.stdout


WARM_UP = """
import sys, time
from mnistsweep.cli.launch_output import import_while_waiting
import_while_waiting(["mnistsweep.report.build", "no_such_module_for_the_test"])
deadline = time.monotonic() + 120
while not hasattr(sys.modules.get("mnistsweep.report.build"), "write_report"):
    assert time.monotonic() < deadline, "the report's modules were never imported"
    time.sleep(0.05)
print("matplotlib.figure" in sys.modules and "pandas" in sys.modules)
"""


def test_the_report_modules_are_imported_while_the_launcher_waits_and_quietly():
    """The launcher's wait imports what its report needs; a module that fails there says nothing
    (the report imports it again and says what failed), and the main thread goes on."""
    done = subprocess.run(
        [sys.executable, "-c", WARM_UP], capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True" and done.stderr == ""
