"""Run identity: a run folder counts only when its name, its records' cell id, its config and the
sweep's recorded spec agree. Foreign folders are generated (copied from another sweep, copied
under another cell's name or a made-up one, config edited, cell id changed) and must be named in
one warning by status, aggregate and report, never counted, never deleted or changed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnistsweep.__main__ import main
from mnistsweep.analysis import runs as sweep_runs
from mnistsweep.sweep import guard, identity, records
from mnistsweep.sweep.layout import SweepLayout
from mnistsweep.sweep.spec import Cell, load_spec

SETTINGS = settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def make_sweep(root: Path, tiny_spec, name: str, **train) -> tuple[Path, list[Cell]]:
    """A recorded sweep of 4 cells, each completed with a result of its own."""
    spec = load_spec(tiny_spec(name=name, **train))
    sweep_dir = root / name
    guard.record_spec(SweepLayout(sweep_dir), spec)
    for number, cell in enumerate(spec.cells()):
        finish(sweep_dir, cell, accuracy=0.5 + number / 10)
    return sweep_dir, spec.cells()


def finish(sweep_dir: Path, cell: Cell, accuracy: float) -> None:
    run = SweepLayout(sweep_dir).run(cell)
    run.create()
    metrics = {"test_accuracy": accuracy, "best_val_accuracy": accuracy, "epochs_run": 1}
    records.write(
        run.result,
        records.RunResult.model_validate(
            {
                "status": "completed",
                "cell_id": cell.id,
                "cell_name": cell.name,
                "axes": list(cell.axes),
                "config": dict(cell.config),
                "metrics": metrics,
            }
        ),
    )
    records.write(run.state, records.RunState(cell_id=cell.id, epochs_done=1))


@pytest.fixture
def sweeps(tmp_path_factory, tiny_spec):
    """Two sweeps of the same grid and different train settings: A (the one checked) and B."""
    root = tmp_path_factory.mktemp("sweeps")
    first = make_sweep(root, tiny_spec, "a")
    second = make_sweep(root, tiny_spec, "b", learning_rate=0.01)
    return first, second


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


made_up_names = st.text(st.sampled_from("abcxyz=,._-0123456789"), min_size=1, max_size=30).filter(
    lambda name: name not in (".", "..")
)


@st.composite
def foreign_folders(draw, sweeps) -> tuple[str, str]:
    """(kind, folder name) of one foreign folder planted in sweep A: a new folder, or cell 3's
    own folder made foreign."""
    (a_dir, a_cells), (b_dir, b_cells) = sweeps
    runs = SweepLayout(a_dir).runs
    kind = draw(
        st.sampled_from(["other sweep", "own under another cell", "made-up", "config", "id"])
    )
    source = draw(st.sampled_from(a_cells[:3]))
    if kind == "other sweep":
        other = draw(st.sampled_from(b_cells))
        shutil.copytree(SweepLayout(b_dir).run(other).root, runs / other.dirname)
        return kind, other.dirname
    if kind == "own under another cell":
        target = a_cells[3].dirname
        shutil.rmtree(runs / target)
        shutil.copytree(SweepLayout(a_dir).run(source).root, runs / target)
        return kind, target
    if kind == "made-up":
        name = draw(made_up_names.filter(lambda n: n not in {c.dirname for c in a_cells}))
        shutil.copytree(SweepLayout(a_dir).run(source).root, runs / name)
        return kind, name
    run = SweepLayout(a_dir).run(a_cells[3])
    result = records.read(records.RunResult, run.result)
    assert result is not None
    if kind == "config":
        key = draw(st.sampled_from(["epochs", "learning_rate", "seed", "arch"]))
        edited = {"epochs": 7, "learning_rate": 0.5, "seed": 99, "arch": "vgg"}[key]
        result.config = {**result.config, key: edited}
    else:
        which = draw(st.sampled_from(["result", "state"]))
        other_id = draw(st.sampled_from([c.id for c in a_cells[:3]] + ["0123456789ab"]))
        if which == "state":
            records.write(run.state, records.RunState(cell_id=other_id, epochs_done=1))
            return kind, run.root.name
        result.cell_id = other_id
    records.write(run.result, result)
    return kind, run.root.name


def reset(sweeps) -> None:
    """Sweep A back to its four own runs (one example's plant must not leak into the next)."""
    (a_dir, a_cells), _ = sweeps
    shutil.rmtree(SweepLayout(a_dir).runs)
    for number, cell in enumerate(a_cells):
        finish(a_dir, cell, accuracy=0.5 + number / 10)


@SETTINGS
@given(data=st.data())
def test_every_kind_of_foreign_folder_is_named_and_never_counted(sweeps, data, capsys):
    reset(sweeps)
    (a_dir, a_cells), _ = sweeps
    kind, planted = data.draw(foreign_folders(sweeps), label="foreign")
    record = guard.read_record(a_dir)
    before = snapshot(a_dir / "runs")

    owner = identity.SweepIdentity.of(record)
    assert owner.check(SweepLayout(a_dir).runs / planted) is not None, kind
    own = [SweepLayout(a_dir).run(c).root for c in a_cells if c.dirname != planted]
    assert all(owner.check(run) is None for run in own if run.is_dir())

    loaded = sweep_runs.load_runs(a_dir)
    assert planted not in {Path(run).name for run in loaded.frame["run_dir"]}
    assert set(loaded.frame["cell_id"]) <= {c.id for c in a_cells}
    assert len(set(loaded.frame["cell_id"])) == len(loaded.frame)  # no cell counted twice
    assert sum("foreign" in problem and planted in problem for problem in loaded.problems) == 1

    assert main(["aggregate", str(a_dir)]) == 0
    out, err = capsys.readouterr()
    assert f"{len(loaded.frame)} runs in" in out
    assert [line for line in (out + err).splitlines() if "foreign" in line] != []

    main(["status", str(a_dir)])
    out, err = capsys.readouterr()
    foreign_lines = [line for line in err.splitlines() if "foreign" in line]
    assert len(foreign_lines) == 1 and planted in foreign_lines[0]
    in_place = kind in ("own under another cell", "config", "id")
    assert f"{3 if in_place else 4} completed" in out.splitlines()[0]
    assert snapshot(a_dir / "runs") == before  # nothing deleted, nothing rewritten


def test_the_warning_is_one_line_with_a_count_and_the_first_names():
    foreign = [identity.Foreign(f"run-{i}", "made up") for i in range(7)]
    line = identity.warning(foreign)
    assert "\n" not in line and line.startswith("7 foreign")
    assert "run-0" in line and "run-2" in line and "run-3" not in line and "4 more" in line


def test_report_names_the_foreign_folders_once_and_counts_none(sweeps, tmp_path, capsys):
    reset(sweeps)
    (a_dir, a_cells), (b_dir, b_cells) = sweeps
    runs = SweepLayout(a_dir).runs
    shutil.copytree(SweepLayout(b_dir).run(b_cells[0]).root, runs / b_cells[0].dirname)
    shutil.copytree(SweepLayout(a_dir).run(a_cells[0]).root, runs / "made-up")
    capsys.readouterr()
    assert main(["report", str(a_dir), "--data-dir", str(tmp_path / "no-data")]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "foreign" in line]
    assert len(err) == 1 and err[0].startswith("warning: 2 foreign run folder(s)")
    assert "made-up" in err[0] and b_cells[0].dirname in err[0]
    report = (a_dir / "report.md").read_text()
    assert "2 foreign run folder(s)" in report
    assert "| completed | 4 |" in report and "n = 2)" in report  # 2 seeds: n = 2, never 3


@pytest.mark.parametrize("planted", ["a copy of cell 0's run", "cell 0's resume point"])
def test_a_relaunch_never_trains_into_a_folder_holding_another_cells_records(
    sweeps, tiny_spec, capsys, planted
):
    reset(sweeps)
    (a_dir, a_cells), _ = sweeps
    layout = SweepLayout(a_dir)
    target = layout.run(a_cells[3]).root
    shutil.rmtree(target)
    if planted.startswith("a copy"):
        shutil.copytree(layout.run(a_cells[0]).root, target)
    else:
        target.mkdir()
        (target / "checkpoint-0001.npz").write_bytes(b"cell 0's weights")
        records.write(target / "state.json", records.RunState(cell_id=a_cells[0].id, epochs_done=1))
    before = snapshot(layout.runs)
    spec_path = tiny_spec(name="a")  # the spec that filled sweep A
    main(["launch", str(spec_path), "--results-dir", str(a_dir.parent)])
    assert "nothing to train" in capsys.readouterr().out
    assert snapshot(layout.runs) == before
    assert main(["status", str(a_dir)]) == 1
    line = next(line for line in capsys.readouterr().out.splitlines() if a_cells[3].name in line)
    assert line.split()[0] == "damaged" and identity.FOREIGN_DETAIL in line
