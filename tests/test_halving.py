"""Successive halving: the rung rule's properties, its decisions kept in the sweep folder (late
promotions included), and a promoted cell that resumes bit for bit through the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from mnistsweep.sweep import rungs, state
from mnistsweep.sweep.layout import SweepLayout
from mnistsweep.sweep.sampling import EarlyStopping

REPO = Path(__file__).resolve().parents[1]

values_at_a_rung = st.dictionaries(
    st.from_regex(r"[0-9a-f]{12}", fullmatch=True),
    st.floats(0.0, 5.0) | st.sampled_from([0.5, 1.0]),  # ties too
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(values=values_at_a_rung, reduction=st.integers(2, 6), extra=st.integers(0, 10))
def test_the_best_share_goes_on(values, reduction, extra):
    for higher_is_better in (False, True):
        block_size = len(values) + extra
        going = rungs.survivors(
            values, reduction, higher_is_better=higher_is_better, block_size=block_size
        )
        expected = len(values) // reduction
        if extra == 0 and values:
            expected = max(expected, 1)  # the whole block is here: someone goes on
        assert len(going) == expected
        sign = -1 if higher_is_better else 1
        left = [cell for cell in values if cell not in going]
        assert all(sign * values[k] <= sign * values[o] for k in going for o in left)


@settings(max_examples=100, deadline=None)
@given(values=values_at_a_rung, reduction=st.integers(2, 6), data=st.data())
def test_more_arrivals_never_shrink_the_share(values, reduction, data):
    order = data.draw(st.permutations(sorted(values)))
    sizes = [
        len(
            rungs.survivors(
                {cell: values[cell] for cell in order[:n]},
                reduction,
                higher_is_better=False,
                block_size=len(values) + 1,
            )
        )
        for n in range(len(order) + 1)
    ]
    assert sizes == sorted(sizes)


def test_rungs_sit_at_min_epochs_times_reduction_powers_below_the_budget():
    assert rungs.rung_epochs(EarlyStopping(min_epochs=1, reduction=3), 9) == (1, 3)
    assert rungs.rung_epochs(EarlyStopping(min_epochs=2, reduction=2), 17) == (2, 4, 8, 16)
    assert rungs.rung_epochs(EarlyStopping(min_epochs=5, reduction=3), 5) == ()


# --- Decisions from the files ------------------------------------------------------------------


def halving_for(sweep: SweepLayout, cell_id: str, block_size: int, epochs: int = 9):
    run = sweep.run_named(f"cell--{cell_id}")
    run.create()
    return rungs.Halving(
        sweep=sweep,
        run=run,
        cell_id=cell_id,
        block=0,
        block_size=block_size,
        epochs=epochs,
        options=EarlyStopping(metric="val_loss", min_epochs=1, reduction=3),
    )


def commit_epochs(run, epochs: int) -> None:
    """What the trainer leaves at an epoch's end: state.json with the epochs committed."""
    run.state.write_text(json.dumps({"cell_id": run.root.name, "epochs_done": epochs}))


def test_a_stopped_cell_is_promoted_when_weaker_cells_reach_its_rung(tmp_path):
    sweep = SweepLayout(tmp_path)
    best, weaker, weakest = (halving_for(sweep, cell, 6) for cell in ("a" * 12, "b" * 12, "c" * 12))
    for halving in (best, weaker, weakest):
        commit_epochs(halving.run, 1)
    assert not best.goes_on(1, {"val_loss": [0.3]})  # alone at the rung: it waits
    assert state.derive(best.run).state is state.CellState.STOPPED_EARLY
    assert "val_loss 0.3" in state.derive(best.run).detail
    assert not weaker.goes_on(1, {"val_loss": [0.5]})
    assert not weakest.goes_on(1, {"val_loss": [0.9]})  # three there: the best third goes on
    assert state.derive(best.run).state is state.CellState.INTERRUPTED  # a relaunch resumes it
    assert state.derive(weakest.run).state is state.CellState.STOPPED_EARLY
    assert best.goes_on(1, {"val_loss": [0.3]})  # asked again on resume: the decision on record
    assert not weaker.goes_on(1, {"val_loss": [0.5]})
    assert not best.run.stopped_early.exists()
    record = json.loads(sweep.rungs(0).read_text())
    assert {cell: entry["promoted"] for cell, entry in record["rungs"]["1"].items()} == {
        "a" * 12: True,
        "b" * 12: False,
        "c" * 12: False,
    }
    assert best.goes_on(2, {"val_loss": [0.3, 0.2]})  # no rung at epoch 2


def test_a_stale_marker_does_not_hold_a_cell_that_went_past_it(tmp_path):
    halving = halving_for(SweepLayout(tmp_path), "d" * 12, 3)
    assert not halving.goes_on(1, {"val_loss": [0.3]})
    commit_epochs(halving.run, 2)
    assert state.derive(halving.run).state is state.CellState.INTERRUPTED


DECIDE = """
import json, sys
from pathlib import Path
from mnistsweep.sweep import rungs
from mnistsweep.sweep.layout import SweepLayout
from mnistsweep.sweep.sampling import EarlyStopping
sweep = SweepLayout(Path(sys.argv[1]))
for cell, value in json.loads(sys.argv[2]):
    run = sweep.run_named("cell--" + cell)
    run.create()
    halving = rungs.Halving(sweep, run, cell, 0, 27, 9, EarlyStopping(reduction=3))
    halving.goes_on(1, {"val_loss": [value]})
"""


def test_processes_deciding_at_once_keep_every_arrival(tmp_path):
    """Four processes record 27 arrivals at one rung together: the lock loses none, and the
    block's best third goes on."""
    values = np.random.default_rng(0).permutation(27).tolist()
    cells = [(f"{i:012x}", float(value)) for i, value in enumerate(values)]
    workers = [
        subprocess.Popen([sys.executable, "-c", DECIDE, str(tmp_path), json.dumps(cells[i::4])])
        for i in range(4)
    ]
    assert all(worker.wait(timeout=120) == 0 for worker in workers)
    rung = json.loads(SweepLayout(tmp_path).rungs(0).read_text())["rungs"]["1"]
    assert len(rung) == 27
    promoted = {cell for cell, entry in rung.items() if entry["promoted"]}
    best_third = {cell for cell, value in cells if value < 9}
    assert best_third <= promoted  # late arrivals never take a promotion back
    held = {p.parent.name[6:] for p in (tmp_path / "runs").glob("*/stopped-early.json")}
    assert held == set(rung) - promoted


# --- A late promotion resumes exactly, through the command line --------------------------------


def launch(spec: Path, results: Path, mnist_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MNISTSWEEP_DATA": str(mnist_dir)}
    command = ["launch", str(spec), "--results-dir", str(results), *extra]
    return subprocess.run(
        [sys.executable, "-m", "mnistsweep", *command],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=600,
    )


@pytest.mark.slow
def test_a_late_promotion_resumes_bit_identically(tmp_path, mnist_dir):
    """Three linear cells, 2 epochs, a rung after epoch 1: the best arrives first and waits, the
    two weaker ones arrive and stop, the best is promoted and its job resumes it: the same
    history and probabilities as the same cell trained without early stopping."""
    document = {
        "name": "halving",
        # the best first: Adam at 1e-2 learns in one epoch, at 1e-6 and 1e-7 it barely moves
        "grid": {"learning_rate": [1e-2, 1e-6, 1e-7]},
        "train": {"arch": "linear", "epochs": 2, "train_subset": 600, "batch_size": 64},
        "executor": {"backend": "local"},
        "search": {"early_stopping": {"metric": "val_loss", "min_epochs": 1, "reduction": 3}},
    }
    stopping = tmp_path / "halving.yaml"
    stopping.write_text(yaml.safe_dump(document))
    plain = tmp_path / "plain.yaml"
    plain.write_text(
        yaml.safe_dump({**document, "search": None, "grid": {"learning_rate": [1e-2]}})
    )

    first = launch(stopping, tmp_path / "results", mnist_dir)
    assert first.returncode == 0, first.stderr
    assert "1 completed, 0 diverged, 0 failed, 0 without a result, 2 stopped early" in first.stdout
    sweep = SweepLayout(tmp_path / "results" / "halving")
    views = {run.root.name.split("--")[0]: state.derive(run) for run in sweep.run_folders()}
    assert {name: view.state.value for name, view in views.items()} == {
        "learning_rate=0.01": "completed",  # promoted after it stopped, then trained on in its job
        "learning_rate=1e-06": "stopped early",
        "learning_rate=1e-07": "stopped early",
    }
    again = launch(stopping, tmp_path / "results", mnist_dir, "--dry-run")
    assert again.returncode == 0 and " todo " not in again.stdout, again.stdout
    assert launch(plain, tmp_path / "plain", mnist_dir).returncode == 0

    (resumed,) = (run for run in sweep.run_folders() if "0.01" in run.root.name)
    (alone,) = SweepLayout(tmp_path / "plain" / "halving").run_folders()
    assert state.derive(resumed).state is state.CellState.COMPLETED
    result = json.loads(resumed.result.read_text())
    assert result["resumed_at_epochs"] == [1]
    histories = [json.loads(run.history.read_text()) for run in (resumed, alone)]
    for history in histories:
        del history["seconds"]  # the wall clock
    assert histories[0] == histories[1]
    for probabilities in ("probs_val.npy", "probs_test.npy"):
        np.testing.assert_array_equal(
            np.load(resumed.root / probabilities), np.load(alone.root / probabilities)
        )
    stopped = [run for run in sweep.run_folders() if "0.01" not in run.root.name]
    assert all(state.derive(run).state is state.CellState.STOPPED_EARLY for run in stopped)
    assert all(run.stopped_early.exists() and not run.result.exists() for run in stopped)
