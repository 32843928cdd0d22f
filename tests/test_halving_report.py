"""The report's search section: scatter plots of the sampled axes (log x for log-uniform),
stopped cells marked, the rungs, and the budget saved, from a sweep folder written by hand."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from mnistsweep.report import search
from mnistsweep.report.build import write_report
from mnistsweep.sweep import guard, records, rungs
from mnistsweep.sweep.layout import SweepLayout
from mnistsweep.sweep.spec import load_spec

SPEC = {
    "name": "searched",
    "grid": {
        "arch": ["mlp"],
        "learning_rate": {"loguniform": [1e-4, 1e-1]},
        "dropout": {"uniform": [0.0, 0.5]},
        "samples": 6,
    },
    "train": {"epochs": 9},
    "search": {"early_stopping": {"metric": "val_loss", "min_epochs": 1, "reduction": 3}},
}


def history(epochs: int, quality: float) -> dict[str, list[float]]:
    return {
        "loss": [1.0 / (e + quality) for e in range(1, epochs + 1)],
        "accuracy": [0.5] * epochs,
        "val_loss": [1.0 / (e + quality) for e in range(1, epochs + 1)],
        "val_accuracy": [min(0.99, 0.5 + quality / 10 + e / 100) for e in range(1, epochs + 1)],
        "seconds": [1.0] * epochs,
    }


def searched_sweep(tmp_path: Path) -> SweepLayout:
    """Two cells completed their 9 epochs; four were stopped at the first rung."""
    path = tmp_path / "searched.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    spec = load_spec(path)
    layout = SweepLayout(tmp_path / "results" / "searched")
    guard.record_spec(layout, spec)
    for index, cell in enumerate(spec.cells()):
        run = layout.run(cell)
        run.create()
        epochs = 9 if index < 2 else 1
        found = history(epochs, quality=3 - index * 0.5)
        run.history.write_text(json.dumps(found))
        if epochs == 9:
            metrics = records.RunMetrics(
                epochs_run=9, test_accuracy=0.9, best_val_accuracy=found["val_accuracy"][-1]
            )
            result = records.RunResult(
                status="completed",
                cell_id=cell.id,
                cell_name=cell.name,
                axes=list(cell.axes),
                config=dict(cell.config),
                metrics=metrics,
            )
            records.write(run.result, result)
        else:
            marker = rungs.StoppedMarker(rung=1, metric="val_loss", value=found["val_loss"][0])
            records.write(run.stopped_early, marker)
            state = {"cell_id": cell.id, "epochs_done": 1, "history": found}
            run.state.write_text(json.dumps(state))
    return layout


def test_the_report_shows_the_sampled_axes_the_rungs_and_the_budget_saved(tmp_path):
    layout = searched_sweep(tmp_path)
    write_report(layout.root)
    markdown = layout.report_md.read_text()
    assert "## Search: sampled axes and early stopping" in markdown
    # the spec's own blocks (yaml.safe_dump sorted its keys), not sweep.json's one per draw
    shown = markdown.replace("\\_", "_")
    assert "Grid: 6 samples of dropout, learning_rate x 1 arch = 6 cells" in shown
    assert "rungs after epoch 1, 3" in markdown
    # 2 cells x 9 epochs + 4 x 1 of a budget of 6 x 9: 22 of 54, 59% saved
    assert "| 6 | 2 | 4 | 22 | 54 | 59% |" in markdown.replace("|   ", "| ").replace("  ", " ")
    assert layout.report_file("search_block1.png").stat().st_size > 1000
    assert layout.report_file("search_rungs.png").stat().st_size > 1000


def test_a_log_uniform_axis_is_drawn_on_a_log_scale_and_stopped_cells_hollow(tmp_path):
    layout = searched_sweep(tmp_path)
    spec = load_spec(layout.spec_copy)
    inputs = type("Inputs", (), {"layout": layout})()
    cells = search.cell_table(inputs, spec)  # type: ignore[arg-type]
    assert sorted(cells["state"]) == ["completed"] * 2 + ["stopped early"] * 4
    kinds = search.sampled_kinds(spec)[0]
    assert kinds == {"learning_rate": "loguniform", "dropout": "uniform"}
    figure = search.scatter(cells, kinds)
    panels = {axes.get_xlabel(): axes for axes in figure.axes}
    learning_rate, dropout = panels["learning_rate (loguniform)"], panels["dropout (uniform)"]
    assert learning_rate.get_xscale() == "log" and dropout.get_xscale() == "linear"
    completed, stopped = learning_rate.collections
    assert len(completed.get_offsets()) == 2 and len(stopped.get_offsets()) == 4
    assert (stopped.get_facecolors()[:, 3] == 0).all()  # hollow


def test_cells_stopped_early_are_not_reported_as_missing_results(tmp_path):
    """A stopped cell has no result.json by design: the search section shows it, and the
    report's problems do not list it as a result still to come."""
    from mnistsweep.analysis.runs import load_runs

    layout = searched_sweep(tmp_path)
    stopped = [run for run in layout.run_folders() if run.stopped_early.exists()]
    assert len(stopped) == 4
    loaded = load_runs(layout.root)
    assert len(loaded.frame) == 2
    assert not any("no result.json" in problem for problem in loaded.problems), loaded.problems
    stopped[0].stopped_early.unlink()  # no longer stopped: its missing result is news again
    assert sum("no result.json" in p for p in load_runs(layout.root).problems) == 1
