"""What a sweep folder says it is, and advice that works: the spec recorded in sweep.json is the
one shown and used (a hand-edited spec.yaml changes nothing), a relaunch with nothing to train
rewrites a missing report, one HParams file per sweep, and each command a message of `status`
or `train` suggests is run here and does what it says."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
from tensorboard.compat.proto.event_pb2 import Event
from test_identity import finish, snapshot
from test_identity_train import no_training  # noqa: F401 (a fixture)

from mnistsweep.__main__ import main
from mnistsweep.report.build import write_report
from mnistsweep.sweep import guard, records
from mnistsweep.sweep.layout import SweepLayout
from mnistsweep.sweep.spec import load_spec


def launched(tmp_path: Path, tiny_spec, **train) -> tuple[Path, Path]:
    """A spec recorded as a launch records it, each cell finished: (spec file, sweep folder)."""
    spec_path = tiny_spec(name="done", **train)
    spec = load_spec(spec_path)
    sweep_dir = tmp_path / "out" / "done"
    guard.record_spec(SweepLayout(sweep_dir), spec)
    for number, cell in enumerate(spec.cells()):
        finish(sweep_dir, cell, accuracy=0.8 + number / 100)
    return spec_path, sweep_dir


def test_each_launch_rewrites_the_one_hparams_file_of_the_sweep(tmp_path, tiny_spec):
    _, sweep_dir = launched(tmp_path, tiny_spec)
    guard.record_spec(SweepLayout(sweep_dir), load_spec(tiny_spec(name="done")))  # a relaunch
    events = list(sweep_dir.glob("*tfevents*"))
    assert len(events) == 1
    loaded = [Event.FromString(raw) for raw in RawEventFileLoader(str(events[0])).Load()]
    plugins = {v.metadata.plugin_data.plugin_name for e in loaded for v in e.summary.value}
    assert plugins == {"hparams"}


def test_a_hand_edited_spec_yaml_is_neither_shown_nor_used(tmp_path, tiny_spec, capsys):
    _, sweep_dir = launched(tmp_path, tiny_spec, epochs=3)
    layout = SweepLayout(sweep_dir)
    cells = load_spec(tiny_spec(name="done", epochs=3)).cells()
    layout.run(cells[0]).result.unlink()
    edited = yaml.safe_load(layout.spec_copy.read_text())
    edited["train"]["epochs"] = 77
    edited["grid"] = {"arch": ["vgg"], "seed": [5]}
    layout.spec_copy.write_text(yaml.safe_dump(edited))

    assert main(["status", str(sweep_dir)]) == 0
    out = capsys.readouterr().out
    assert "4 cells: 1 interrupted, 3 completed" in out
    (suggested,) = re.findall(r"python -m mnistsweep (logs \S+) CELL", out)  # and it works:
    assert main([*suggested.split(), cells[0].name]) == 0
    assert "no task log yet" in capsys.readouterr().out
    write_report(sweep_dir, data_dir=tmp_path / "no-data")
    spec_section = layout.report_md.read_text().split("## Spec", 1)[1].split("\n## ", 1)[0]
    assert "epochs: 3" in spec_section and "77" not in spec_section and "vgg" not in spec_section


def test_a_relaunch_with_nothing_to_train_rewrites_a_missing_report(tmp_path, tiny_spec, capsys):
    spec_path, sweep_dir = launched(tmp_path, tiny_spec)
    layout = SweepLayout(sweep_dir)
    assert not layout.report_md.exists()
    arguments = ["launch", str(spec_path), "--results-dir", str(tmp_path / "out")]
    assert main(arguments) == 0
    assert "nothing to train" in capsys.readouterr().out
    assert layout.report_md.is_file() and layout.report_html.is_file()


def test_the_commands_train_suggests_work(
    tmp_path,
    tiny_spec,
    capsys,
    no_training,  # noqa: F811
):
    spec_path = tiny_spec(name="pick")
    assert main(["train", "--spec", str(spec_path), "--cell", "nosuchcell"]) == 2
    assert "launch --dry-run lists them" in capsys.readouterr().err
    assert main(["launch", str(spec_path), "--dry-run", "--results-dir", str(tmp_path)]) == 0
    listed = capsys.readouterr().out
    cells = load_spec(spec_path).cells()
    assert all(f"{cell.id}  {cell.name}" in listed for cell in cells)
    settings = ["train", "--spec", str(spec_path), "--cell"]
    assert main([*settings, cells[1].id, "--out", str(tmp_path / "x")]) == 0  # it names a cell

    taken = SweepLayout(tmp_path).run(cells[0])  # another cell's resume point
    taken.create()
    records.write(taken.state, records.RunState(cell_id=cells[0].id, epochs_done=1))
    assert main([*settings, cells[2].id, "--out", str(taken.root)]) == 2
    assert "choose another --out" in capsys.readouterr().err
    assert main([*settings, cells[2].id, "--out", str(tmp_path / "fresh")]) == 0
    assert no_training[-1] == tmp_path / "fresh"


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    key=st.sampled_from(["epochs", "learning_rate", "train_subset"]),
    command=st.sampled_from(["status", "aggregate", "report", "logs"]),
)
def test_a_sweep_json_edited_by_hand_is_one_error_line(
    tmp_path_factory, tiny_spec, capsys, key, command
):
    _, sweep_dir = launched(tmp_path_factory.mktemp("edited"), tiny_spec)
    layout = SweepLayout(sweep_dir)
    record = json.loads(layout.record.read_text())
    record["train"][key] = {"epochs": 9, "learning_rate": 0.5, "train_subset": 100}[key]
    layout.record.write_text(json.dumps(record))  # the fingerprint is left as it was
    before = snapshot(sweep_dir / "runs")
    capsys.readouterr()
    arguments = [command, str(sweep_dir), *(["arch=linear,seed=0"] if command == "logs" else [])]
    assert main(arguments) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {layout.record}: ")
    assert "fingerprint" in err[0]
    assert snapshot(sweep_dir / "runs") == before
