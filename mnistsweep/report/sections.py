"""The report's sections about runs and configurations, in the order a reader meets them.

Each function returns plain blocks (document.py); text read from the sweep folder goes in as it
is, and the templates escape it.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import yaml

from mnistsweep import fsio
from mnistsweep.analysis import reference
from mnistsweep.analysis.effects import BLOCK
from mnistsweep.report import figures, formatting
from mnistsweep.report.context import Attachments, Findings, Inputs
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

EFFECTS_FILE = "axis_effects.csv"  # in the sweep folder, beside summary.csv
MAX_CELLS_LISTED = 20
MAX_SPEC_BYTES = 1024 * 1024
# The states listed cell by cell: what went wrong first, then what is still to come.
LISTED = (
    state.CellState.FAILED,
    state.CellState.OUT_OF_MEMORY,
    state.CellState.DAMAGED,
    *(s for s in state.CellState if not s.is_final and not s.is_ended_badly),
    state.CellState.LOST,
)
# States whose cells have their final result.json (a failure is kept as one).
WITH_RESULT = [s.value for s in state.CellState if s.is_final or s is state.CellState.FAILED]


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
                f" ({formatting.percent(found.held_out.get(headline.method))}% on validation "
                "images its selection rule did not see; chosen on validation only).",
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


def progress(findings: Findings) -> list[Section]:
    section = Section("Progress")
    states = findings.cell_states
    if states is None:
        return [section.add(paragraph("The grid's cells could not be listed from sweep.json."))]
    counts = states["state"].value_counts()
    order = [state.value for state in state.CellState]
    shown = pd.DataFrame(
        {"state": order, "cells": [str(int(counts.get(name, 0))) for name in order]}
    )
    shown = shown[(shown["cells"] != "0") | (shown["state"] == state.CellState.COMPLETED.value)]
    unfinished = states[~states["state"].isin(WITH_RESULT)]
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
    for listed in LISTED:
        chosen = states[states["state"] == listed.value]
        if len(chosen):
            section.add(paragraph(strong(listed.value.capitalize()), f" ({len(chosen)}):"))
            section.add(cell_list(chosen))
    return [section]


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
    if text is None or guard.kept_fingerprint(inputs.layout) != record.fingerprint:
        # sweep.json's spec made the runs; a spec.yaml edited since is not shown as it
        recorded = {"name": record.name, "grid": record.grid, "train": record.train}
        text = yaml.safe_dump(recorded, sort_keys=False)
    return [
        Section("Spec").add(
            paragraph(
                f"Grid: {inputs.grid_summary} = {record.cells} cells; ensembles of up to "
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
    section.add(
        paragraph(
            "Completed runs grouped by grid block (one study each) and by every axis but the "
            "seed, best mean ",
            strong("validation"),
            " accuracy first (the test set never picks); a name shows only the axes that vary "
            "within its block. Accuracies in % (val: validation), mean ± sample std over seeds; "
            "the 95% interval is Student's t on the mean (none for a single run). Epoch times: "
            "the first epoch (tracing and compiling) apart from the steady ones. Every row is in ",
            code("report_files/configurations.csv"),
            ".",
        )
    )
    found = [section]
    blocks = table[BLOCK] if BLOCK in table else pd.Series(0, index=table.index)
    for block in sorted(set(blocks)):
        rows = [position for position, value in enumerate(blocks) if value == block]
        shown, labels = table.iloc[rows], [findings.labels[position] for position in rows]
        title = inputs.block_titles[block] if block < len(inputs.block_titles) else ""
        part = found[0] if not title else Section(title, level=3)
        seeds = {
            label: list(findings.runs_by_label[label]["test_accuracy"])
            for label in labels
            if label in findings.runs_by_label
        }
        part.add(
            formatting.table(
                display_configurations(shown, [_short(inputs, name) for name in labels], findings)
            ),
            files.figure(
                f"test_accuracy_{block + 1}.png",
                figures.configuration_accuracy(
                    shown,
                    [_short(inputs, name) for name in labels],
                    {_short(inputs, name): values for name, values in seeds.items()},
                ),
                f"Test accuracy per configuration{f' ({title})' if title else ''}",
            ),
        )
        if part is not found[0]:
            found.append(part)
    best = best_run(findings)
    if best is not None:
        section.add(best)
    return found


def _short(inputs: Inputs, name: str) -> str:
    """A configuration's name without its block's title, under a heading that gives it."""
    for title in inputs.block_titles:
        if title and name.startswith(f"{title}: "):
            return name.removeprefix(f"{title}: ")
    return name


def display_configurations(
    table: pd.DataFrame, labels: list[str], findings: Findings
) -> pd.DataFrame:
    """One wrapping name column, then the numbers a reader compares; the rest (validation
    interval, total seconds) is in configurations.csv, so the table fits a laptop's window."""
    shown = pd.DataFrame({"configuration": labels}, index=table.index)
    shown["n"] = table["n"].astype(int).astype(str)
    shown["test acc %"] = [
        formatting.mean_and_std(row["test_acc_mean"], row["test_acc_std"])
        for _, row in table.iterrows()
    ]
    shown["test 95% CI"] = [
        formatting.interval(row["test_acc_ci95_low"], row["test_acc_ci95_high"])
        for _, row in table.iterrows()
    ]
    shown["val acc %"] = [
        formatting.mean_and_std(row["val_acc_mean"], row["val_acc_std"])
        for _, row in table.iterrows()
    ]
    shown["epochs to best"] = table["epochs_to_best"].map(formatting.one_decimal)
    first, steady = zip(
        *(findings.epoch_seconds.get(label, (None, None)) for label in labels), strict=True
    )
    shown["first epoch s"] = [formatting.one_decimal(value) for value in first]
    shown["steady epoch s"] = [formatting.one_decimal(value) for value in steady]
    return shown


def best_run(findings: Findings) -> Block | None:
    """The single best run on validation: where its folder and its saved model are."""
    row = findings.best_run
    if row is None:
        return None
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


# --- effects from matched comparisons -------------------------------------------------------------


def axis_effects(inputs: Inputs, findings: Findings, files: Attachments) -> list[Section]:
    found = findings.effects
    if found.empty or inputs.completed.empty:
        return []
    section = Section("Effect of each axis, from matched pairs").add(
        paragraph(
            "An axis's effect is measured only between runs of one grid block that differ in "
            "that axis alone, seed for seed (value minus the block's first value, in test-"
            "accuracy points, with a Student-t 95% interval over the pairs). Values met only in "
            "different blocks, beside other nets or settings, are never compared. In ",
            code(EFFECTS_FILE),
            ".",
        )
    )
    paired = found[found["pairs"] > 0]
    unpaired = found[found["pairs"] == 0]
    if len(paired):
        shown = pd.DataFrame(
            {
                "axis": paired["axis"].astype(str),
                "value vs baseline": [
                    f"{value} vs {baseline}"
                    for value, baseline in zip(paired["value"], paired["baseline"], strict=True)
                ],
                "pairs": paired["pairs"].astype(int).astype(str),
                "effect (points)": paired["effect_test_pts"].map(lambda v: f"{v:+.2f}"),
                "95% CI (points)": [
                    "n/a" if pd.isna(low) else f"[{low:+.2f}, {high:+.2f}]"
                    for low, high in zip(paired["ci_low_pts"], paired["ci_high_pts"], strict=True)
                ],
            }
        )
        section.add(
            formatting.table(shown),
            files.figure(
                "axis_effects.png",
                figures.forest(paired),
                "Effect of each axis from matched pairs (points, 95% interval)",
            ),
        )
    if len(unpaired):
        names = ", ".join(str(axis) for axis in unpaired["axis"])
        section.add(
            paragraph(
                f"No matched pair for: {names}. Their values occur only in different blocks, "
                "so the sweep cannot say what they change."
            )
        )
    return [section]


# --- learning curves ------------------------------------------------------------------------------


def learning_curves(inputs: Inputs, findings: Findings, files: Attachments) -> list[Section]:
    if findings.configurations.empty:
        return []
    section = Section("Learning curves")
    table = findings.configurations
    blocks = table[BLOCK] if BLOCK in table else pd.Series(0, index=table.index)
    by_block: dict[int, dict[str, pd.DataFrame]] = {}
    for label, block in zip(findings.labels, blocks, strict=True):
        if label in findings.curves:
            by_block.setdefault(int(block), {})[_short(inputs, label)] = findings.curves[label]
    if not by_block:
        return [section.add(paragraph("No run has a readable history.json."))]
    section.add(
        paragraph(
            "Training and validation loss and accuracy per epoch for every configuration, one "
            "figure per grid block, from each run's history.json: the mean over seeds with a "
            "± std band. Training figures are averaged over each epoch (with dropout and "
            "augmentation on); validation ones are measured at its end."
        )
    )
    for block, curves in sorted(by_block.items()):
        title = inputs.block_titles[block] if block < len(inputs.block_titles) else ""
        section.add(
            files.figure(
                f"learning_curves_{block + 1}.png",
                figures.learning_curves(curves),
                f"Learning curves{f': {title}' if title else ''}",
            )
        )
    return [section]


# --- against the tutorials ------------------------------------------------------------------------


def tutorials(inputs: Inputs, findings: Findings, files: Attachments) -> list[Section]:
    section = Section("Against the tutorials' reference figures")
    table, uncovered = findings.tutorial_table, findings.tutorials_uncovered
    if table.empty:
        section.add(paragraph("No completed run matches a configuration the tutorials report."))
    else:
        files.table("reference_comparison", table)
        section.add(
            paragraph(
                "Completed runs with a tutorial's configuration and every setting it states, "
                "their mean test accuracy beside the tutorial's figure. A setting the tutorial "
                "does not state is shown as not stated (and flagged), as is a smaller training "
                "set (we hold 6,000 images out for validation where a tutorial trained on all "
                "60,000). A configuration trained with other settings is listed with what "
                "differs and not compared."
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
    section.add(four_models(findings))
    if uncovered:
        names = "; ".join(row.name for row in uncovered)
        section.add(paragraph(f"Not covered by this sweep: {names}."))
    return [section]


def four_models(findings: Findings) -> Block:
    """Tutorial 1's ensemble line, beside an ensemble built as it builds one, or why not."""
    wanted = reference.ENSEMBLE_REFERENCE
    line = (
        f"Tutorial 1 averages the probabilities of {wanted['members']} models: test accuracy "
        f"{formatting.percent(wanted['test_accuracy'])}%, loss {wanted['test_loss']}. "
    )
    four = findings.ensembles.four_models if findings.ensembles is not None else None
    why = findings.four_models_refused
    if four is None or why is not None:
        return paragraph(line, f"Not compared: no ensemble here is built that way ({why}).")
    return paragraph(
        line,
        f"Built the same way (the {wanted['members']} best runs on validation, averaged): ",
        strong(f"{formatting.percent(four.test_accuracy)}%"),
        f", {_points(four.test_accuracy - float(wanted['test_accuracy']), signed=True)} points.",
    )


def settings_pairs(table: pd.DataFrame) -> list[str]:
    """Settings the comparison gives on both sides, as `tutorial_X` and `sweep_X` columns."""
    return [
        column.removeprefix("tutorial_")
        for column in table.columns
        if column.startswith("tutorial_") and f"sweep_{column.removeprefix('tutorial_')}" in table
    ]


def readable_comparison(table: pd.DataFrame) -> pd.DataFrame:
    """The comparison a reader needs on screen: accuracies in %, the difference in points, and
    one wrapping column of what qualifies it; every column is in reference_comparison.csv."""
    notes = []
    for _, row in table.iterrows():
        parts = [_plain(row.get(key)) for key in ("differs", "flags", "note")]
        notes.append("; ".join(part for part in parts if part))
    return pd.DataFrame(
        {
            "reference": [_plain(value) for value in table["reference"]],
            "source": [_plain(value) for value in table["source"]],
            "status": [_plain(value) for value in table["status"]],
            "runs": table["runs"].astype(int).astype(str),
            "tutorial %": [formatting.percent(_number(v)) for v in table["reference_test_acc"]],
            "sweep %": [
                formatting.mean_and_std(_number(mean) or float("nan"), _number(std))
                for mean, std in zip(
                    table["sweep_test_acc_mean"], table["sweep_test_acc_std"], strict=True
                )
            ],
            "difference (points)": [_points(value, signed=True) for value in table["difference"]],
            "notes": notes,
        }
    )


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
    """A table cell as text; a missing value (None, NaN, pandas' NA) as an empty cell."""
    missing = value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))
    return "" if missing else str(value)


# --- provenance: what made the results ------------------------------------------------------------


def provenance(inputs: Inputs) -> list[Section]:
    """The code, data and library versions the completed runs recorded, each distinct set once;
    results written before provenance was recorded are counted, not guessed."""
    done = inputs.completed
    recorded = done["provenance"] if "provenance" in done else pd.Series(dtype=object)
    found: dict[str, int] = {}
    for value in recorded:
        key = _provenance_line(value) if isinstance(value, dict) else "not recorded"
        found[key] = found.get(key, 0) + 1
    if not found:
        return []
    items = [(f"{count} run{'s' if count != 1 else ''}: {line}",) for line, count in found.items()]
    return [Section("Provenance").add(bullets(items))]


def _provenance_line(value: dict[str, object]) -> str:
    commit = value.get("git_commit")
    code_version = (
        f"git {commit}{' (dirty tree)' if value.get('git_dirty') else ''}"
        if commit
        else f"package {value.get('package_version', '?')}"
    )
    versions = value.get("versions")
    libraries = (
        ", ".join(f"{name} {version}" for name, version in sorted(versions.items()))
        if isinstance(versions, dict)
        else "not recorded"
    )
    return (
        f"code {code_version}, code sha256 {str(value.get('code_sha256', '?'))[:16]}, "
        f"data sha256 {str(value.get('data_sha256') or 'not recorded')[:16]}; {libraries}"
    )


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
