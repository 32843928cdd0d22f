"""The report's sections about runs and configurations, in the order a reader meets them.

Each function returns plain blocks (document.py); text read from the sweep folder goes in as it
is, and the templates escape it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from mnistsweep import fsio
from mnistsweep.analysis import ensemble, reference, tables
from mnistsweep.errors import MnistsweepError
from mnistsweep.report import figures, formatting, history
from mnistsweep.report.context import MAX_CONFIGURATIONS_SHOWN, Attachments, Findings, Inputs
from mnistsweep.report.document import (
    Block,
    CodeBlock,
    Inline,
    Section,
    bullets,
    code,
    note,
    paragraph,
    strong,
)
from mnistsweep.sweep import guard, state
from mnistsweep.sweep.layout import RunLayout

MAX_CURVES = 8  # more bands than this on one plot cannot be told apart
MAX_CELLS_LISTED = 20
MAX_SPEC_BYTES = 1024 * 1024
UNFINISHED = ("not started", "queued", "training", "requeued", "interrupted", "lost")


# --- the first lines: the headline ensemble and the best configuration ----------------------------


def lead(inputs: Inputs, findings: Findings, generated: str) -> list[Block]:
    blocks: list[Block] = []
    found = findings.ensembles
    if found is not None:
        headline = found.headline
        what = {"greedy": "greedy ensemble", "top-k": "top-k ensemble", "single": "single run"}
        size = f" of {headline.size} runs" if headline.method != "single" else ""
        blocks.append(
            paragraph(
                strong("Headline: "),
                f"{what.get(headline.method, headline.method)}{size}, test accuracy ",
                strong(f"{formatting.percent(headline.test_accuracy)}%"),
                f" (validation {formatting.percent(headline.val_accuracy)}%, chosen on "
                "validation only).",
            )
        )
    table = findings.configurations
    if len(table):
        best = table.iloc[0]
        blocks.append(
            paragraph(
                strong("Best configuration: "),
                code(findings.labels[0]),
                ": test accuracy ",
                strong(f"{formatting.mean_and_std(best['test_acc_mean'], best['test_acc_std'])}%"),
                f" (mean ± std over seeds, n = {int(best['n'])}), validation "
                f"{formatting.percent(best['val_acc_mean'])}%.",
            )
        )
    blocks.append(paragraph("Sweep folder ", code(str(inputs.layout.root)), f" · {generated}."))
    return blocks


# --- what is finished, what is missing ------------------------------------------------------------


def progress(inputs: Inputs) -> list[Section]:
    section = Section("Progress")
    states = cell_states(inputs)
    if states is None:
        return [section.add(paragraph("The grid's cells could not be listed from sweep.json."))]
    counts = states["state"].value_counts()
    order = [state.value for state in state.CellState]
    shown = pd.DataFrame(
        {"state": order, "cells": [str(int(counts.get(name, 0))) for name in order]}
    )
    shown = shown[(shown["cells"] != "0") | shown["state"].isin(["completed"])]
    unfinished = states[~states["state"].isin(["completed", "diverged", "failed"])]
    if len(unfinished):
        section.add(
            note(
                strong("Partial report."),
                f" {len(states) - len(unfinished)} of {len(states)} cells have a final result; "
                f"{len(unfinished)} are missing (listed below). Tables, plots and the ensemble "
                "use the completed runs only.",
            )
        )
    section.add(formatting.table(shown))
    for name in ("failed", "damaged", *UNFINISHED):
        chosen = states[states["state"] == name]
        if len(chosen):
            section.add(paragraph(strong(f"{name.capitalize()}"), f" ({len(chosen)}):"))
            section.add(cell_list(chosen))
    return [section]


def cell_states(inputs: Inputs) -> pd.DataFrame | None:
    """One row per cell of the recorded grid: its name, state and any error."""
    try:
        cells = guard.recorded_cells(inputs.layout.root)
    except MnistsweepError:
        return None
    frame = inputs.runs.frame
    known = (
        dict(zip(frame["cell_id"], zip(frame["status"], frame["error"], strict=True), strict=True))
        if len(frame)
        else {}
    )
    rows = []
    for cell in cells:
        cell_id = cell.id  # a hash of the config: computed once, it shows at 10,000 cells
        if cell_id in known:
            status, error = known[cell_id]
        else:
            view = state.derive(inputs.layout.run(cell))
            status, error = view.state.value, view.detail or None
        rows.append({"cell": cell.name, "state": status, "error": error})
    return pd.DataFrame(rows, columns=["cell", "state", "error"])


def cell_list(cells: pd.DataFrame) -> Block:
    items: list[tuple[Inline, ...]] = []
    for _, row in cells.head(MAX_CELLS_LISTED).iterrows():
        error = row["error"] if isinstance(row["error"], str) and row["error"] else None
        items.append((code(str(row["cell"])), f": {error}") if error else (code(str(row["cell"])),))
    if len(cells) > MAX_CELLS_LISTED:
        items.append((f"... and {len(cells) - MAX_CELLS_LISTED} more",))
    return bullets(items)


# --- the spec the sweep was launched from ---------------------------------------------------------


def spec(inputs: Inputs) -> list[Section]:
    record = inputs.record
    text = fsio.read_text(inputs.layout.spec_copy, MAX_SPEC_BYTES)
    if text is None:
        recorded = {"name": record.name, "grid": record.grid, "train": record.train}
        text = yaml.safe_dump(recorded, sort_keys=False)
    sizes = " + ".join(
        " x ".join(f"{len(values)} {axis}" for axis, values in grid.items()) or "one cell"
        for grid in record.grid
    )
    return [
        Section("Spec").add(
            paragraph(
                f"Grid: {sizes or 'one cell'} = {record.cells} cells; ensembles of up to "
                f"{inputs.top_k} runs for the top-k view. Launched from ",
                code(record.spec_path or "?"),
                ".",
            ),
            CodeBlock(text, "yaml"),
        )
    ]


# --- results per configuration --------------------------------------------------------------------


def configurations(inputs: Inputs, findings: Findings, files: Attachments) -> list[Section]:
    section = Section("Results per configuration")
    table = findings.configurations
    if table.empty:
        return [section.add(paragraph("No completed runs yet."))]
    files.table("configurations", table)
    shown = table.head(MAX_CONFIGURATIONS_SHOWN)
    labels = findings.labels[: len(shown)]
    seeds = {
        label: list(findings.runs_by_label[label]["test_accuracy"])
        for label in labels
        if label in findings.runs_by_label
    }
    more = (
        f" The {MAX_CONFIGURATIONS_SHOWN} best of {len(table)} are shown; all"
        if len(table) > MAX_CONFIGURATIONS_SHOWN
        else " All"
    )
    section.add(
        paragraph(
            "Completed runs grouped by every axis but the seed, best mean ",
            strong("validation"),
            " accuracy first (the test set never picks). Accuracies in % (val: validation), "
            "mean ± sample std over seeds; the 95% interval is Student's t on the mean (none for "
            "a single run). Epoch times: the first epoch (tracing and compiling) apart from the "
            f"steady ones.{more} rows are in ",
            code("report_files/configurations.csv"),
            ".",
        ),
        formatting.table(display_configurations(shown, labels, inputs.keys, findings)),
        files.figure(
            "test_accuracy.png",
            figures.configuration_accuracy(shown, labels, seeds),
            "Test accuracy per configuration",
        ),
    )
    best = best_run(inputs)
    if best is not None:
        section.add(best)
    return [section]


def display_configurations(
    table: pd.DataFrame, labels: list[str], keys: list[str], findings: Findings
) -> pd.DataFrame:
    shown = table[keys].astype(str).copy() if keys else pd.DataFrame(index=table.index)
    shown["n"] = table["n"].astype(int).astype(str)
    for short, name in (("test_acc", "test"), ("val_acc", "val")):
        shown[f"{name} acc %"] = [
            formatting.mean_and_std(row[f"{short}_mean"], row[f"{short}_std"])
            for _, row in table.iterrows()
        ]
        shown[f"{name} 95% CI"] = [
            formatting.interval(row[f"{short}_ci95_low"], row[f"{short}_ci95_high"])
            for _, row in table.iterrows()
        ]
    shown["epochs to best"] = table["epochs_to_best"].map(formatting.one_decimal)
    first, steady = zip(*(epoch_seconds(findings, label) for label in labels), strict=True)
    shown["first epoch s"] = [formatting.one_decimal(value) for value in first]
    shown["steady epoch s"] = [formatting.one_decimal(value) for value in steady]
    shown["train s"] = table["train_seconds"].map(formatting.one_decimal)
    return shown


def epoch_seconds(findings: Findings, label: str) -> tuple[float | None, float | None]:
    """Mean first-epoch and steady-epoch seconds over the configuration's runs."""
    firsts, steadies = [], []
    for _, row in findings.runs_by_label.get(label, pd.DataFrame()).iterrows():
        past = findings.history_of(str(row["run_dir"]))
        first = history.first_epoch_seconds(row.get("first_epoch_seconds"), past)
        steady = history.steady_epoch_seconds(row.get("steady_epoch_seconds"), past)
        firsts += [first] if first is not None else []
        steadies += [steady] if steady is not None else []
    mean = lambda values: sum(values) / len(values) if values else None  # noqa: E731
    return mean(firsts), mean(steadies)


def best_run(inputs: Inputs) -> Block | None:
    """The single best run on validation: where its folder and its saved model are."""
    ranked = ensemble.rank_by_validation(inputs.completed)
    if ranked.empty:
        return None
    row = ranked.iloc[0]
    run = RunLayout(Path(str(row["run_dir"])))
    model = (
        (" Its model (best epoch by validation loss, raw pixels in): ", code(str(run.model)), ".")
        if run.model.is_file()
        else (" It has no model.keras.",)
    )
    return paragraph(
        strong("Best single run on validation: "),
        code(str(row["cell_name"])),
        f", validation {formatting.percent(row['best_val_accuracy'])}%, test "
        f"{formatting.percent(row['test_accuracy'])}%. Folder: ",
        code(str(run.root)),
        ".",
        *model,
    )


# --- each axis averaged over the rest -------------------------------------------------------------


def marginals(inputs: Inputs, files: Attachments) -> list[Section]:
    by_axis = tables.marginal_tables(inputs.runs.frame, inputs.record.axes)
    if not by_axis or inputs.completed.empty:
        return []
    found = [
        Section("Each axis averaged over the rest").add(
            paragraph(
                "Each value of one axis, with every configuration of the other axes counted "
                "once (the mean of the configuration means); the range runs from the worst to "
                "the best of them."
            )
        )
    ]
    for axis, table in by_axis.items():
        files.table(f"marginal_{axis}", table)
        shown = table[[axis]].astype(str).copy()
        shown["configurations"] = table["configurations"].astype(str)
        shown["runs"] = table["runs"].astype(str)
        for short, name in (("test_acc", "test"), ("val_acc", "val")):
            shown[f"{name} acc %"] = table[f"{short}_mean"].map(formatting.percent)
            shown[f"{name} range"] = [
                formatting.interval(low, high)
                for low, high in zip(table[f"{short}_min"], table[f"{short}_max"], strict=True)
            ]
        shown["epochs to best"] = table["epochs_to_best"].map(formatting.one_decimal)
        found.append(Section(axis, level=3).add(formatting.table(shown)))
    return found


# --- learning curves ------------------------------------------------------------------------------


def learning_curves(inputs: Inputs, findings: Findings, files: Attachments) -> list[Section]:
    if findings.configurations.empty:
        return []
    section = Section("Learning curves")
    curves = {}
    for label in findings.labels[:MAX_CURVES]:
        runs = findings.runs_by_label.get(label, pd.DataFrame(columns=["run_dir"]))
        found = [findings.history_of(str(run_dir)) for run_dir in runs["run_dir"]]
        curve = history.epoch_curves(past for past in found if past is not None)
        if curve is not None:
            curves[label] = curve
    if not curves:
        return [section.add(paragraph("No run has a readable history.json."))]
    which = (
        "every configuration"
        if len(findings.labels) <= MAX_CURVES
        else f"the {len(curves)} best configurations on validation"
    )
    return [
        section.add(
            paragraph(
                f"Training and validation loss and accuracy per epoch for {which}, from each "
                "run's history.json: the mean over seeds with a ± std band. Training figures are "
                "averaged over each epoch (with dropout and augmentation on); validation ones are "
                "measured at its end."
            ),
            files.figure(
                "learning_curves.png",
                figures.learning_curves(curves),
                "Training and validation loss and accuracy per epoch",
            ),
        )
    ]


# --- against the tutorials ------------------------------------------------------------------------


def tutorials(inputs: Inputs, files: Attachments) -> list[Section]:
    section = Section("Against the tutorials' reference figures")
    table, uncovered = reference.comparison(inputs.runs.frame)
    if table.empty:
        section.add(paragraph("No completed run matches a configuration the tutorials report."))
    else:
        files.table("reference_comparison", table)
        section.add(
            paragraph(
                "Completed runs with a tutorial's configuration and its settings, their mean test "
                "accuracy beside the tutorial's figure (other axes pooled). A configuration "
                "trained with other settings is listed with what differs and not compared."
            ),
            formatting.table(readable_comparison(table)),
            paragraph("Settings of each compared row, tutorial → sweep where they differ:"),
            formatting.table(settings_side_by_side(table)),
            bullets(
                [
                    (f"{source}: {reference.TUTORIALS.get(str(source), '')}",)
                    for source in table["source"].unique()
                ]
            ),
        )
    if uncovered:
        names = "; ".join(row.name for row in uncovered)
        section.add(paragraph(f"Not covered by this sweep: {names}."))
    return [section]


def settings_pairs(table: pd.DataFrame) -> list[str]:
    """Settings the comparison gives on both sides, as `tutorial_X` and `sweep_X` columns."""
    return [
        column.removeprefix("tutorial_")
        for column in table.columns
        if column.startswith("tutorial_") and f"sweep_{column.removeprefix('tutorial_')}" in table
    ]


def readable_comparison(table: pd.DataFrame) -> pd.DataFrame:
    """Whatever columns the comparison returns but the paired settings: accuracies in %,
    differences in points."""
    paired = {f"{side}_{name}" for name in settings_pairs(table) for side in ("tutorial", "sweep")}
    shown = pd.DataFrame(index=table.index)
    for column in (column for column in table.columns if column not in paired):
        values = table[column]
        title = column.replace("_", " ")
        if column == "difference" or column.endswith("_std"):
            shown[f"{title} (points)"] = [
                _points(value, signed=column == "difference") for value in values
            ]
        elif "acc" in column:
            shown[f"{title} %"] = [formatting.percent(_number(value)) for value in values]
        else:
            shown[title] = [_plain(value) for value in values]
    return shown


def settings_side_by_side(table: pd.DataFrame) -> pd.DataFrame:
    """Per reference row, each setting as `tutorial → sweep` where they differ."""
    shown = pd.DataFrame({"reference": [_plain(value) for value in table["reference"]]})
    for name in settings_pairs(table):
        cells = []
        for tutorial, sweep in zip(table[f"tutorial_{name}"], table[f"sweep_{name}"], strict=True):
            left, right = _plain(tutorial), _plain(sweep)
            cells.append(left if left == right else f"{left} → {right}")
        shown[name.replace("_", " ")] = cells
    return shown


def _number(value: object) -> float | None:
    number = pd.to_numeric(pd.Series([value]), errors="coerce").iloc[0]
    return None if pd.isna(number) else float(number)


def _points(value: object, signed: bool) -> str:
    number = _number(value)
    if number is None:
        return "n/a"
    return f"{100 * number:+.2f}" if signed else f"{100 * number:.2f}"


def _plain(value: object) -> str:
    return "" if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)


# --- warnings -------------------------------------------------------------------------------------


def warnings(inputs: Inputs, findings: Findings) -> list[Section]:
    problems = list(inputs.runs.problems)
    if findings.ensembles is not None:
        problems += findings.ensembles.problems
    if not problems:
        return []
    items: list[tuple[str, ...]] = [(problem,) for problem in problems[:MAX_CELLS_LISTED]]
    if len(problems) > MAX_CELLS_LISTED:
        items.append((f"... and {len(problems) - MAX_CELLS_LISTED} more",))
    return [Section("Warnings while reading the runs").add(bullets(items))]
