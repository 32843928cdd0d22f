"""`train --out` into a folder holding another cell's run: one `error:` line, exit 2, nothing in
the folder deleted or changed; the cell's own resume point is still resumed."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnistsweep.__main__ import main
from mnistsweep.cli.train import choose_cell
from mnistsweep.sweep import records
from mnistsweep.sweep.layout import RunLayout
from mnistsweep.train import trainer

SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
settings_lists = st.fixed_dictionaries(
    {"arch": st.sampled_from(["linear", "mlp"]), "seed": st.integers(0, 5)},
    optional={"epochs": st.integers(1, 4)},
).map(lambda values: [f"{key}={value}" for key, value in values.items()])


@pytest.fixture
def no_training(monkeypatch) -> list[Path]:
    """trainer.run_cell replaced: the folders it was asked to train in."""
    asked: list[Path] = []

    def fake_run_cell(cell, run_dir, data_dir):
        asked.append(Path(run_dir))
        metrics = {"test_accuracy": 0.9, "best_val_accuracy": 0.9, "best_epoch": 0}
        return {"status": "completed", "metrics": metrics}

    monkeypatch.setattr(trainer, "run_cell", fake_run_cell)
    return asked


def as_args(settings_list: list[str]) -> list[str]:
    return [part for setting in settings_list for part in ("--set", setting)]


def plant(run: RunLayout, kind: str, other_settings: list[str]) -> None:
    """Another cell's records in `run`: its resume point (checkpoints and all) or its result."""
    other = choose_cell(None, None, other_settings)
    run.root.mkdir(parents=True, exist_ok=True)
    if kind == "damaged state":
        run.state.write_text('{"cell_id": ')
        return
    run.training_state_after(2).write_bytes(b"another cell's checkpoint")
    records.write(
        run.state, records.RunState(cell_id=other.id, epochs_done=2, checkpoint="checkpoint-0002")
    )
    if kind == "result":
        records.write(
            run.result,
            records.RunResult(
                status="failed", cell_id=other.id, cell_name=other.name, config=dict(other.config)
            ),
        )


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != ".lock"}


@SETTINGS
@given(
    mine=settings_lists,
    other=settings_lists,
    kind=st.sampled_from(["state", "result", "damaged state"]),
)
def test_a_folder_of_another_cell_is_refused_and_left_as_it_is(
    tmp_path_factory, no_training, capsys, mine, other, kind
):
    # The same cell may be written in another order: compare identities, not the parsed settings.
    if (
        kind != "damaged state"
        and choose_cell(None, None, mine).id == choose_cell(None, None, other).id
    ):
        other = [*other, "l2=0.5"]
    no_training.clear()  # the fixture lives for the whole test, not for one example
    run = RunLayout(tmp_path_factory.mktemp("out") / "run")
    plant(run, kind, other)
    before = files(run.root)
    capsys.readouterr()
    assert main(["train", *as_args(mine), "--out", str(run.root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "choose another --out" in err[0]
    assert files(run.root) == before
    assert no_training == []


def test_the_cells_own_resume_point_is_resumed(tmp_path, no_training, capsys):
    run = RunLayout(tmp_path / "run")
    mine = ["arch=linear", "seed=1"]
    cell = choose_cell(None, None, mine)
    run.root.mkdir()
    records.write(run.state, records.RunState(cell_id=cell.id, epochs_done=1))
    assert main(["train", *as_args(mine), "--out", str(run.root)]) == 0
    assert no_training == [run.root]
