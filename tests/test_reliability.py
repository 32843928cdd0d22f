"""Reliability (issue 6): what no other test file covers.

A launch killed with SIGKILL resumes where it stopped; files written atomically survive SIGKILL at
any moment; sweep names and cell folders cannot leave the results directory; absurd numbers and
oversized grids are refused in one line; final cells are never trained again, even by a job
planned before another launch finished them; unreadable results are reported and skipped.
"""

from __future__ import annotations

import io
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import time
import types
import zipfile
from pathlib import Path
from typing import Any

import h5py
import pandas as pd
import pytest
import yaml
from fake_sweeps import record_sweep, result_of, run_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import VALID_TRAIN_VALUES

import mnistsweep.train
from mnistsweep import fsio
from mnistsweep.__main__ import main
from mnistsweep.analysis import runs as sweep_runs
from mnistsweep.execute import job
from mnistsweep.execute import plan as planning
from mnistsweep.sweep import guard, records
from mnistsweep.sweep.layout import RunLayout, SweepLayout
from mnistsweep.sweep.spec import (
    MAX_CELLS,
    TRAIN_SETTINGS,
    Cell,
    SpecError,
    load_spec,
    parse_spec,
)


def cli(*args: str, data_dir: Path, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """The command line as a user runs it: a fresh interpreter, MNIST from MNISTSWEEP_DATA."""
    return subprocess.run(
        [sys.executable, "-m", "mnistsweep", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=cli_environment(data_dir),
        timeout=timeout,
    )


def cli_environment(data_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "MNISTSWEEP_DATA": str(data_dir),
        "COLUMNS": "200",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }


def write_yaml(path: Path, document: Any) -> Path:
    path.write_text(yaml.safe_dump(document))
    return path


def assert_one_line_error(stderr: str, *fragments: str) -> None:
    """The CLI's contract for user errors: one line, no traceback, naming what was wrong."""
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    for fragment in fragments:
        assert fragment in lines[0]


# --- 1. A launch killed with SIGKILL resumes from its last completed epoch ---------------------

RESUME_EPOCHS = 8


def process_identity(pid: int) -> tuple[int, int] | None:
    """(pid, start time): a pid alone could be reused by an unrelated process after the kill."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return pid, int(fields[19])


def descendants(root: int) -> set[tuple[int, int]]:
    """Every process below `root` (submitit's controller and the job), from /proc parent links:
    they are found whatever session or process group they put themselves in."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found: set[int] = set()
    frontier = [root]
    while frontier:
        for child in children.get(frontier.pop(), []):
            if child not in found:
                found.add(child)
                frontier.append(child)
    return {identity for pid in found if (identity := process_identity(pid))}


def is_running(identity: tuple[int, int]) -> bool:
    """A zombie counts as dead: it holds no lock and writes no file."""
    pid, _ = identity
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return process_identity(pid) == identity and state not in ("Z", "X")


def optimizer_steps(model_file: Path) -> int:
    """Adam's step counter saved in a .keras file: the only integer scalar among its variables."""
    with zipfile.ZipFile(model_file) as archive:
        weights = h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r")
    counters = [
        int(dataset[()])
        for dataset in weights["optimizer/vars"].values()
        if dataset.shape == () and dataset.dtype.kind in "iu"
    ]
    assert len(counters) == 1, counters
    return counters[0]


@pytest.mark.slow
def test_launch_killed_with_sigkill_resumes_from_its_last_epoch(tmp_path, tiny_spec, mnist_dir):
    """kill -9 of the launcher and its job mid-training, then a relaunch: the cell completes from
    the saved epoch with its optimizer state, and its history has each epoch exactly once."""
    spec_path = tiny_spec(name="resume", grid={"arch": ["mlp"]}, epochs=RESUME_EPOCHS)
    cell = load_spec(spec_path).cells()[0]
    files = SweepLayout(tmp_path / "out" / "resume").run(cell)
    command = ("launch", str(spec_path), "--executor", "local", "--results-dir", "out")

    with open(tmp_path / "killed-plan.log", "w") as log:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "mnistsweep", *command],
            cwd=tmp_path,
            env=cli_environment(mnist_dir),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, killed as a whole below
        )
    try:
        deadline = time.monotonic() + 300
        while committed_epochs(files) < 1:
            assert launcher.poll() is None, (tmp_path / "killed-plan.log").read_text()
            assert time.monotonic() < deadline, "no epoch finished within 5 minutes"
            time.sleep(0.05)
        tree = descendants(launcher.pid)
        os.killpg(launcher.pid, signal.SIGKILL)
        for identity in tree:  # any process that left the group (its own session) dies too
            if is_running(identity):
                os.kill(identity[0], signal.SIGKILL)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
        launcher.wait(timeout=60)
    assert tree, "the launch ran no job process below it"
    deadline = time.monotonic() + 30
    while any(is_running(identity) for identity in tree) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(is_running(identity) for identity in tree)

    assert not files.result.exists(), "the cell finished before the kill: nothing to resume"
    epochs_at_kill = committed_epochs(files)
    assert 1 <= epochs_at_kill < RESUME_EPOCHS

    relaunch = cli(*command, data_dir=mnist_dir, cwd=tmp_path)
    assert relaunch.returncode == 0, relaunch.stdout + relaunch.stderr
    assert "1 to train" in relaunch.stdout and "1 completed" in relaunch.stdout

    result = records.read(records.RunResult, files.result)
    assert result is not None and result.status == "completed"
    assert result.resumed_at_epochs == [epochs_at_kill]
    assert result.metrics.epochs_run == RESUME_EPOCHS
    assert len(result.timing.epoch_seconds) == RESUME_EPOCHS
    history = json.loads(files.history.read_text())
    assert {key: len(values) for key, values in history.items()} == {
        key: RESUME_EPOCHS for key in ("loss", "accuracy", "val_loss", "val_accuracy", "seconds")
    }
    assert result.metrics.best_val_loss == min(history["val_loss"])
    # model.keras holds the best epoch's weights and optimizer (save_weights keeps both): a
    # resume that rebuilt the model would count fewer steps, one that replayed an epoch more.
    steps = optimizer_steps(files.model)
    assert result.metrics.best_epoch is not None
    assert steps == (result.metrics.best_epoch + 1) * steps_per_epoch(cell)
    assert not list(files.root.glob("checkpoint-*")), "a final run keeps no resume point"


def committed_epochs(run: RunLayout) -> int:
    """Epochs state.json commits (0 while it is missing or mid-replacement)."""
    try:
        state = records.read(records.RunState, run.state)
    except records.DamagedRecord:
        return 0
    return state.epochs_done if state else 0


def steps_per_epoch(cell: Cell) -> int:
    return math.ceil(cell.config["train_subset"] / cell.config["batch_size"])


@pytest.mark.slow
def test_a_kill_between_checkpoint_and_state_leaves_a_consistent_resume_point(
    tmp_path, mnist_dir, monkeypatch
):
    """The resume point is state.json plus the checkpoint it names: whenever the process dies,
    that checkpoint must hold exactly the epochs state.json says are done."""
    import numpy as np

    from mnistsweep.train import trainer  # Keras: imported only by the tests that train

    cell = parse_spec(
        {"name": "t", "train": {"arch": "linear", "epochs": 3, "train_subset": 2000}},
        tmp_path / "t.yaml",
    ).cells()[0]
    run = RunLayout(tmp_path / "run")
    write = records.write

    def killed_before_state_of_epoch_2(path: Path, record: records.Record) -> Path:
        if path == run.state and getattr(record, "epochs_done", 0) == 2:
            raise KeyboardInterrupt  # the process dies here: checkpoint saved, state not
        return write(path, record)

    monkeypatch.setattr(records, "write", killed_before_state_of_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        trainer.run_cell(cell, run.root, mnist_dir)
    state = records.read(records.RunState, run.state)
    assert state is not None and state.epochs_done == 1
    assert run.training_state_after(2).exists(), "the kill came before the epoch-2 checkpoint"
    with np.load(run.named(state.checkpoint)) as saved:
        counters = [
            int(saved[key])
            for key in saved.files
            if saved[key].shape == () and saved[key].dtype.kind in "iu"
        ]
    assert counters == [state.epochs_done * steps_per_epoch(cell)]


# --- 2. SIGKILL while writing: a file is absent or complete, never half written ----------------

JSON_WRITER = """
import json
import os
import sys
from pathlib import Path
from mnistsweep.fsio import write_json

target, payload = Path(sys.argv[1]), list(range(int(sys.argv[2])))
identity = json.loads(sys.argv[3])  # the cell's id, name and config
for _ in sys.stdin:  # each line: fork one more writer, say its pid, reap it once killed
    writer = os.fork()
    if writer == 0:
        generation = 0
        while True:
            generation += 1
            record = {
                "status": "completed", **identity,
                "metrics": {"test_accuracy": 0.9, "best_val_accuracy": 0.9},
                "generation": generation, "payload": payload,
            }
            write_json(target, {**record, "end": generation})
    print(writer, flush=True)
    os.waitpid(writer, 0)
    print("reaped", flush=True)
"""
JSON_PAYLOAD_SIZE = 30_000  # about 300 kB with indent=1: each write takes tens of milliseconds
JSON_KILLS = 30


def start_writer(script: str, *args: str) -> subprocess.Popen:
    """A Python process running `script`, stdin and stdout piped to talk with the test."""
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )


def temporaries(folder: Path, final_name: str) -> list[Path]:
    return [path for path in folder.iterdir() if path.name != final_name]


def test_atomic_json_writes_leave_no_half_written_file_under_sigkill(tmp_path):
    """30 writers killed at random moments: result.json is always absent or one whole version,
    and the temporaries the kills leave behind are never read as results."""
    sweep_dir = tmp_path / "sweep"
    cell, other = record_sweep(sweep_dir, {"seed": [0, 1]})
    target = run_of(sweep_dir, cell).result
    identity = {"cell_id": cell.id, "cell_name": cell.name, "config": dict(cell.config)}
    generator = random.Random(6)
    complete_seen = 0
    # Writers forked from one process that imported fsio once: 30 kills in seconds, not 30
    # interpreter start-ups.
    target.parent.mkdir(parents=True)
    forker = start_writer(JSON_WRITER, str(target), str(JSON_PAYLOAD_SIZE), json.dumps(identity))
    writer: int | None = None  # a writer not yet reaped: its pid cannot belong to another process
    try:
        for _ in range(JSON_KILLS):
            forker.stdin.write("start\n")
            forker.stdin.flush()
            writer = int(forker.stdout.readline())
            time.sleep(generator.uniform(0.0, 0.15))
            os.kill(writer, signal.SIGKILL)
            assert forker.stdout.readline().strip() == "reaped"  # dead, not merely signalled
            writer = None
            if target.exists():
                content = json.loads(target.read_text())  # raises on a half-written file
                assert content["end"] == content["generation"] >= 1
                assert content["payload"] == list(range(JSON_PAYLOAD_SIZE))
                complete_seen += 1
    finally:
        if writer is not None:
            os.kill(writer, signal.SIGKILL)
        forker.kill()
        forker.wait()
    leftovers = temporaries(target.parent, target.name)
    assert complete_seen > 0, "no write ever finished: the kills came too early to test anything"
    assert leftovers, "no kill landed mid-write: the test exercised nothing"
    assert all(path.name.startswith(".result.json.") for path in leftovers)

    # A run killed before its first result.json holds only a temporary: not a result either.
    unfinished = run_of(sweep_dir, other).root
    unfinished.mkdir()
    os.replace(leftovers[0], unfinished / leftovers[0].name)
    runs = sweep_runs.load_runs(sweep_dir)
    assert list(runs.frame["status"]) == ["completed"]
    assert runs.problems == [f"{unfinished.name}: no result.json yet (skipped)"]


CHECKPOINT_WRITER = """
import sys
from pathlib import Path
import keras
from mnistsweep.train.checkpoint import save_training_state

# Big enough (about 40 MB with Adam's moments) that a save takes a good part of each loop.
model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(4096), keras.layers.Dense(10)])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
model.optimizer.build(model.trainable_variables)
print("ready", flush=True)
while True:
    save_training_state(Path(sys.argv[1]), model)
"""
MAX_CHECKPOINT_WRITERS = 10  # each imports Keras (seconds): stop once both outcomes were seen


@pytest.mark.slow
def test_checkpoint_save_leaves_no_half_written_checkpoint_under_sigkill(tmp_path):
    """The per-epoch checkpoint is what a resume loads: after SIGKILL it must be a whole
    archive with every variable, or absent."""
    import numpy as np

    generator = random.Random(6)
    complete: list[Path] = []
    leftovers: list[Path] = []
    for index in range(MAX_CHECKPOINT_WRITERS):  # one at a time: imports only compete for CPU
        target = RunLayout(tmp_path / f"run{index}").training_state_after(1)
        target.parent.mkdir()
        writer = start_writer(CHECKPOINT_WRITER, str(target))
        try:
            assert writer.stdout.readline().strip() == "ready"
            time.sleep(generator.uniform(0.2, 1.0))
        finally:
            writer.kill()
            writer.wait()
        complete += [target] if target.exists() else []
        leftovers += temporaries(target.parent, target.name)
        if complete and leftovers:
            break
    for target in complete:
        with np.load(target) as saved:
            shapes = [saved[key].shape for key in saved.files]
        assert (784, 4096) in shapes and (4096, 10) in shapes
    assert complete, "no save ever finished: the kills came too early to test anything"
    assert leftovers, "no kill landed mid-save: the test exercised nothing"
    assert all(path.name.startswith(".tmp-") for path in leftovers)


def fake_result(cell: Cell, test_accuracy: float) -> dict[str, Any]:
    return result_of(
        cell,
        metrics={
            "test_accuracy": test_accuracy,
            "best_val_accuracy": test_accuracy,
            "test_loss": 0.3,
            "best_val_loss": 0.3,
            "best_epoch": 0,
            "epochs_run": 1,
        },
        timing={"total_seconds": 1.0},
    )


def test_unreadable_results_are_reported_and_skipped_by_aggregate_and_report(tmp_path, capsys):
    """Truncated, binary or wrongly shaped result.json files: each is named as a problem, and
    both commands still succeed on the rest."""
    spec = parse_spec(
        {"name": "broken", "grid": {"arch": ["linear", "mlp"], "seed": [0, 1]}},
        tmp_path / "broken.yaml",
    )
    sweep_dir = tmp_path / "out" / "broken"
    guard.record_spec(SweepLayout(sweep_dir), spec)
    good, truncated, binary, not_a_record = spec.cells()
    good_result = SweepLayout(sweep_dir).run(good).result
    fsio.write_json(good_result, fake_result(good, 0.9))
    whole = json.dumps(fake_result(truncated, 0.95))
    broken_files = [
        (truncated, whole[: len(whole) // 2].encode()),
        (binary, b"\x00\xff\xfe garbage \x89PNG"),
        (not_a_record, b'["completed"]'),
    ]
    for cell, content in broken_files:
        SweepLayout(sweep_dir).run(cell).root.mkdir(parents=True)
        (SweepLayout(sweep_dir).run(cell).root / "result.json").write_bytes(content)
    expected = [
        f"{SweepLayout(sweep_dir).run(cell).result}: " for cell, _ in broken_files
    ]  # each problem names the file, then says what is wrong

    problems = sweep_runs.load_runs(sweep_dir).problems
    assert len(problems) == len(expected)
    assert all(any(problem.startswith(name) for problem in problems) for name in expected)

    assert main(["aggregate", str(sweep_dir)]) == 0
    printed = capsys.readouterr().out
    assert all(cell.dirname in printed for cell, _ in broken_files)
    assert list(pd.read_csv(sweep_dir / "summary.csv")["n"]) == [1]

    assert main(["report", str(sweep_dir), "--data-dir", str(tmp_path / "no-data")]) == 0
    markdown = (sweep_dir / "report.md").read_text()
    assert "1 of 4 cells have a final result; 3 are missing" in markdown
    warnings = markdown.split("## Warnings while reading the runs", 1)[1]
    unescaped = warnings.replace("\\", "")  # Markdown escapes the paths' _ and .
    assert all(cell.dirname in unescaped for cell, _ in broken_files)


# --- 3. Nothing a spec says can put a file outside <results>/<name>/runs/ ----------------------


@pytest.mark.parametrize(
    "name",
    ["../evil", "/abs", "a/b", "..", ".", "", "evil\n", "a b", "x" * 65, "-rf", 5],
    ids=repr,
)
def test_a_sweep_name_that_is_not_one_folder_name_is_refused_in_one_line(tmp_path, capsys, name):
    """The name becomes <results>/<name>: a path, a dot name or a control character in it
    would write elsewhere or break the sbatch script's lines."""
    spec_path = write_yaml(tmp_path / "spec.yaml", {"name": name, "train": {"arch": "linear"}})
    results_dir = tmp_path / "out"
    launch_args = ["launch", str(spec_path), "--dry-run", "--executor", "local"]
    assert main([*launch_args, "--results-dir", str(results_dir)]) == 2
    assert_one_line_error(capsys.readouterr().err, str(spec_path), "name: got", "(a folder name)")
    assert not results_dir.exists()


FOLDER_CHARACTERS = st.sampled_from("aZ09._-")
ODD_CHARACTERS = st.sampled_from(["/", "\\", " ", "\n", "\r", "\t", "\x00", ":", "~", "é"])
# Plain names with odd characters mixed in or stuck at the end (where a regex's `$` lets a
# trailing newline through), and any text at all.
SWEEP_NAMES = st.one_of(
    st.text(FOLDER_CHARACTERS | ODD_CHARACTERS, max_size=70),
    st.builds(
        str.__add__,
        st.text(FOLDER_CHARACTERS, min_size=1, max_size=66),
        st.text(ODD_CHARACTERS, min_size=1, max_size=2),
    ),
    st.text(max_size=70),
)


@settings(max_examples=300, deadline=None)
@given(SWEEP_NAMES)
def test_every_accepted_sweep_name_is_one_plain_folder_inside_the_results(name):
    """Whatever the name, a spec either refuses it in its own words or names one plain folder
    directly under the results directory."""
    results_dir = Path("/results")
    try:
        spec = parse_spec({"name": name}, Path("n.yaml"))
    except SpecError as error:
        assert str(error).startswith("n.yaml: name: ")
        return
    assert re.fullmatch(r"[A-Za-z0-9._-]{1,64}", spec.name) and spec.name not in (".", "..")
    assert Path(os.path.normpath(results_dir / spec.name)).parent == results_dir


MAX_PROPERTY_CELLS = 64


def test_the_cell_folder_property_draws_every_train_key():
    """A new train key (perhaps free text) must be added to VALID_TRAIN_VALUES to be checked."""
    assert set(VALID_TRAIN_VALUES) == set(TRAIN_SETTINGS)


@st.composite
def valid_grids(draw: st.DrawFn) -> dict[str, list[Any]]:
    """Any grid the spec accepts: distinct values per axis, small enough to expand quickly."""
    axes = draw(st.lists(st.sampled_from(sorted(VALID_TRAIN_VALUES)), min_size=1, unique=True))
    grid: dict[str, list[Any]] = {}
    cells = 1
    for axis in axes:
        values, canonical = [], []
        for value in draw(st.lists(VALID_TRAIN_VALUES[axis], min_size=1, max_size=3)):
            checked = TRAIN_SETTINGS[axis].check(value)
            if checked not in canonical and cells * (len(values) + 1) <= MAX_PROPERTY_CELLS:
                values.append(value)
                canonical.append(checked)
        grid[axis] = values
        cells *= len(values)
    return grid


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_grids())
def test_every_cell_folder_is_a_distinct_direct_child_of_runs(grid):
    """Cell folder names come from config values: whatever the values, each folder is one safe
    name directly under runs/, short enough for any filesystem, and no two cells share one."""
    spec = parse_spec({"name": "p", "grid": grid}, Path("p.yaml"))
    runs_root = Path("/results") / spec.name / "runs"
    cells = spec.cells()
    for cell in cells:
        folder = SweepLayout(runs_root.parent).run(cell).root
        assert Path(os.path.normpath(folder)).parent == runs_root
        assert re.fullmatch(r"[A-Za-z0-9=.,_-]+--[0-9a-f]{12}", cell.dirname), cell.dirname
        assert len(cell.dirname.encode()) <= 255
    assert len({cell.dirname for cell in cells}) == len(cells) == spec.size


# --- 4. Absurd numbers and oversized grids: refused in one line, exit 2 ------------------------


@pytest.mark.parametrize(
    ("document", "fragments"),
    [
        ({"train": {"epochs": 10**9}}, ["train.epochs", "1000000000", "[1, 10000]"]),
        ({"train": {"batch_size": 0}}, ["train.batch_size", "[1, 60000]"]),
        ({"grid": {"seed": [0, -1]}}, ["grid.seed[1]", "-1", "[0, 2147483647]"]),
        ({"train": {"learning_rate": math.nan}}, ["train.learning_rate", "nan", "(0.0, 10.0]"]),
        ({"train": {"l2": math.inf}}, ["train.l2", "inf", "[0.0, 1.0]"]),
        ({"train": {"train_subset": 5}}, ["train.train_subset", "[10, 60000] or null"]),
        ({"train": {"validation_split": 0}}, ["train.validation_split", "(0.0, 0.5]"]),
        ({"executor": {"local_parallel": 0}}, ["executor.local_parallel", "[1, 1024]"]),
        ({"executor": {"slurm": {"mem_gb": 1e9}}}, ["executor.slurm.mem_gb", "(0, 4096]"]),
        ({"executor": {"cells_per_job": "4"}}, ["executor.cells_per_job", "'4'"]),
        ({"executor": {"slurm": {"setup": "module load x"}}}, ["executor.slurm.setup", "list"]),
        ({"train": ["epochs", 1]}, ["train", "must be a mapping, got list"]),
    ],
)
def test_absurd_numbers_and_wrong_types_are_one_line_exit_2(tmp_path, capsys, document, fragments):
    spec_path = write_yaml(tmp_path / "absurd.yaml", {"name": "absurd", **document})
    launch_args = ["launch", str(spec_path), "--dry-run", "--executor", "local"]
    assert main([*launch_args, "--results-dir", str(tmp_path / "out")]) == 2
    assert_one_line_error(capsys.readouterr().err, str(spec_path), *fragments)


def test_a_grid_over_the_limit_is_refused_unless_allow_large(
    tmp_path, mnist_dir, capsys, monkeypatch
):
    """A typo in an axis must not flood a queue; the flag is the deliberate way past the limit.
    (A product of two axes: one 10,001-value list takes seconds just to validate.)"""
    seeds, rates = list(range(101)), [step / 1000 for step in range(1, 101)]
    assert len(seeds) * len(rates) > MAX_CELLS
    grid = {"seed": seeds, "learning_rate": rates}
    spec_path = write_yaml(tmp_path / "huge.yaml", {"name": "huge", "grid": grid})
    dry_run = ("launch", str(spec_path), "--dry-run", "--executor", "local", "--results-dir", "out")
    refused = cli(*dry_run, data_dir=mnist_dir, cwd=tmp_path, timeout=120)
    assert refused.returncode == 2
    assert_one_line_error(
        refused.stderr, str(spec_path), "grid: expands to 10,100 cells", "--allow-large"
    )
    monkeypatch.chdir(tmp_path)
    assert main([*dry_run, "--allow-large"]) == 0
    assert "10100 cells" in capsys.readouterr().out


# --- Relaunch: final cells are never trained again ----------------------------------------------


def record_outcome(sweep_dir: Path, cell: Cell, status: str) -> Path:
    path = SweepLayout(sweep_dir).run(cell).root / "result.json"
    fsio.write_json(path, {**fake_result(cell, 0.9), "status": status})
    return path


def test_relaunch_plans_no_training_for_final_cells_and_failed_ones_only_on_request(tmp_path):
    spec = parse_spec({"name": "plan", "grid": {"seed": [0, 1, 2, 3]}}, tmp_path / "plan.yaml")
    completed, diverged, failed, untouched = spec.cells()
    sweep_dir = tmp_path / "plan"
    guard.record_spec(SweepLayout(sweep_dir), spec)
    for cell, status in ((completed, "completed"), (diverged, "diverged"), (failed, "failed")):
        record_outcome(sweep_dir, cell, status)

    plan = planning.plan_launch(spec, tmp_path, "local")
    assert plan.todo == [untouched]
    assert plan.statuses == {
        completed.id: "completed",
        diverged.id: "diverged",
        failed.id: "failed",
        untouched.id: "todo",
    }
    retry = planning.plan_launch(spec, tmp_path, "local", retry_failed=True)
    assert retry.todo == [failed, untouched]


@pytest.mark.parametrize("status", ["completed", "diverged"])
def test_a_job_planned_before_another_launch_finished_its_cell_does_not_retrain_it(
    tmp_path, monkeypatch, status
):
    """Two launches at once may both plan a cell: the one that gets the lock second finds the
    result and leaves it alone, byte for byte."""
    cell = parse_spec({"name": "race", "train": {"arch": "linear"}}, tmp_path / "r.yaml").cells()[0]
    result_path = record_outcome(tmp_path, cell, status)
    before = result_path.read_bytes()

    def must_not_train(*args: Any) -> dict[str, Any]:
        pytest.fail("a cell with a final result was trained again")

    fake_train = types.SimpleNamespace(run_cell=must_not_train)
    monkeypatch.setitem(sys.modules, "mnistsweep.train.trainer", fake_train)
    monkeypatch.setattr(mnistsweep.train, "trainer", fake_train, raising=False)
    outcomes = job.CellBatch()(str(tmp_path), [cell], None)
    assert outcomes == [{"cell_id": cell.id, "cell_name": cell.name, "status": status}]
    assert result_path.read_bytes() == before
