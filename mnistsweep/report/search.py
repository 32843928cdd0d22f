"""The report's search section: sampled axes as scatter plots, the rungs of successive halving,
and the budget early stopping saved. Empty for a sweep with neither.

Stopped cells have no result.json, so every cell of the spec is read here from its folder: the
result when there is one, else the history and the marker the rungs left (sweep/rungs.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from mnistsweep.errors import MnistsweepError
from mnistsweep.report import figures, formatting
from mnistsweep.report.context import Attachments, Findings, Inputs
from mnistsweep.report.document import Section, paragraph, strong
from mnistsweep.report.history import read_history
from mnistsweep.sweep import records, rungs, sampling
from mnistsweep.sweep.sampling import EarlyStopping
from mnistsweep.sweep.spec import TRAIN_SETTINGS, Spec, load_spec

STOPPED = "stopped early"


def search(inputs: Inputs, findings: Findings, files: Attachments) -> list[Section]:
    """Nothing unless the spec kept beside the runs samples an axis or stops early."""
    del findings  # the section reads every cell itself: stopped ones have no result
    spec = _spec(inputs)
    if spec is None or not (spec.samples or spec.early_stopping):
        return []
    cells = cell_table(inputs, spec)
    section = Section("Search: sampled axes and early stopping")
    options = spec.early_stopping
    if options is not None:
        section.add(*budget(cells, options, _rungs(spec, options)))
    for block, kinds in sampled_kinds(spec).items():
        done = cells[(cells["block"] == block) & cells["val_accuracy"].notna()]
        if len(done):
            name = f"search_block{block + 1}.png"
            caption = (
                "Each sampled value against the validation accuracy; hollow: stopped early, "
                "at the epoch it stopped"
            )
            section.add(files.figure(name, scatter(done, kinds), caption))
    if options is not None and len(cells):
        caption = f"{options.metric} per epoch; x: where a rung stopped a cell"
        figure = rung_curves(cells, options.metric, _rungs(spec, options))
        section.add(files.figure("search_rungs.png", figure, caption))
    return [section]


def _spec(inputs: Inputs) -> Spec | None:
    try:
        return load_spec(inputs.layout.spec_copy, allow_large=True)
    except MnistsweepError:
        return None


def _rungs(spec: Spec, options: EarlyStopping) -> tuple[int, ...]:
    longest = max((int(cell.config["epochs"]) for cell in spec.cells()), default=0)
    return rungs.rung_epochs(options, longest)


def sampled_kinds(spec: Spec) -> dict[int, dict[str, str]]:
    """For each block with sampled axes: axis -> distribution (uniform, loguniform, ...)."""
    raw = spec.document.get("grid")
    blocks = raw if isinstance(raw, list) else [raw]
    found = {}
    for index, block in enumerate(blocks):
        if not isinstance(block, Mapping):
            continue
        sampled = sampling.split_block(block, list(TRAIN_SETTINGS))[1]
        if sampled is not None:
            found[index] = {key: axis.kind for key, axis in sampled.axes.items()}
    return found


def cell_table(inputs: Inputs, spec: Spec) -> pd.DataFrame:
    """One row per cell: block, config, state (completed, stopped early, ...), epochs trained
    and budgeted, the validation accuracy reached, and its history."""
    rows = []
    for cell in spec.cells():
        run = inputs.layout.run(cell)
        try:
            result = records.read(records.RunResult, run.result)
            marker = rungs.stopped_at(run)
        except records.DamagedRecord:
            result, marker = None, None
        history = read_history(run) or {}
        if result is not None and result.status == "completed":
            state, accuracy = "completed", result.metrics.best_val_accuracy
        elif marker is not None:
            state, accuracy = STOPPED, max(history.get("val_accuracy") or [float("nan")])
        else:
            state, accuracy = "other", None
        rows.append(
            {
                **dict(cell.config),
                "block": cell.block,
                "state": state,
                "epochs_trained": len(history.get("loss", [])),
                "budget": int(cell.config["epochs"]),
                "val_accuracy": accuracy,
                "history": history,
            }
        )
    return pd.DataFrame(rows)


def budget(cells: pd.DataFrame, options: EarlyStopping, at: tuple[int, ...]) -> list[Any]:
    trained, full = int(cells["epochs_trained"].sum()), int(cells["budget"].sum())
    shown = pd.DataFrame(
        {
            "cells": [str(len(cells))],
            "completed": [str(int((cells["state"] == "completed").sum()))],
            STOPPED: [str(int((cells["state"] == STOPPED).sum()))],
            "epochs trained": [str(trained)],
            "full budget": [str(full)],
            "saved": [f"{1 - trained / full:.0%}" if full else "-"],
        }
    )
    rung_list = ", ".join(str(rung) for rung in at) or "none"
    return [
        paragraph(
            strong("Successive halving"),
            f" on {options.metric}: rungs after epoch {rung_list}; at each, the best "
            f"1/{options.reduction} of a block's cells that reached it go on.",
        ),
        formatting.table(shown),
    ]


def scatter(cells: pd.DataFrame, kinds: Mapping[str, str]) -> Figure:
    figure = figures.new_figure(3.2)
    panels = figure.subplots(1, len(kinds), squeeze=False)[0]
    stopped = cells["state"] == STOPPED
    for axes, (axis, kind) in zip(panels, kinds.items(), strict=True):
        numeric = kind != "choice" or pd.api.types.is_numeric_dtype(cells[axis])
        x = cells[axis] if numeric else cells[axis].astype(str)
        axes.scatter(x[~stopped], cells["val_accuracy"][~stopped], label="completed")
        hollow = {"facecolors": "none", "edgecolors": "grey", "label": STOPPED}
        axes.scatter(x[stopped], cells["val_accuracy"][stopped], **hollow)
        if kind == "loguniform":
            axes.set_xscale("log")
        axes.set_xlabel(f"{axis} ({kind})")
        axes.set_ylabel("validation accuracy")
    panels[0].legend(fontsize="small")
    return figure


def rung_curves(cells: pd.DataFrame, metric: str, at: tuple[int, ...]) -> Figure:
    figure = figures.new_figure(3.6)
    axes = figure.subplots()
    for _, cell in cells.iterrows():
        values = cell["history"].get(metric) or []
        if not values:
            continue
        epochs = list(range(1, len(values) + 1))
        if cell["state"] == STOPPED:
            axes.plot(epochs, values, color="grey", alpha=0.5, linewidth=0.8)
            axes.plot(epochs[-1:], values[-1:], "x", color="grey")
        else:
            axes.plot(epochs, values, linewidth=1.2)
    for rung in at:
        axes.axvline(rung, color="black", linestyle=":", linewidth=0.8)
    figures.integer_epochs(axes, int(cells["budget"].max()))
    axes.set_xlabel("epoch")
    axes.set_ylabel(metric)
    if metric == "val_loss":
        axes.set_yscale("log")
    return figure
