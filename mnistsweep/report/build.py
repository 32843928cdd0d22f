"""The sweep report: `report.md` and a self-contained `report.html`, written into the sweep folder.

The report is assembled as Markdown, section by section, in the order a reader meets them below;
the HTML is the same Markdown rendered, with every figure inlined as a base64 data URI and the
style sheet inline, so the file opens from disk with no server and no network. Nothing here
imports TensorFlow or Keras, so a report takes seconds and runs where no training can.
"""

from __future__ import annotations

import base64
import functools
import html
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from mnistsweep.analysis import ensemble, reference, runs, tables
from mnistsweep.errors import MnistsweepError
from mnistsweep.report import figures
from mnistsweep.sweep import guard
from mnistsweep.sweep.layout import SweepLayout
from mnistsweep.sweep.rundir import read_json
from mnistsweep.train import data

FILES_FOLDER = "report_files"
DEFAULT_TOP_K = 4  # the spec's default, for sweep folders recorded without one
MAX_CONFIGURATIONS_SHOWN = 40  # rows of the configuration table and plot; the CSV has them all
MAX_CURVES = 8  # more bands than this on one plot cannot be told apart
MAX_CELLS_LISTED = 20
MAX_CURVE_ROWS = 20
MISCLASSIFIED_SHOWN = 32


@dataclass
class Sweep:
    """Everything the sections read, loaded once; `written` collects the files produced."""

    folder: Path
    record: dict[str, Any]
    runs: runs.SweepRuns
    top_k: int
    mnist: data.Mnist | None
    data_problem: str | None
    written: list[Path] = field(default_factory=list)

    @property
    def axes(self) -> list[str]:
        return list(self.record.get("axes") or [])

    @property
    def keys(self) -> list[str]:
        return tables.configuration_axes(self.axes)

    @property
    def completed(self) -> pd.DataFrame:
        return tables.completed(self.runs.frame)

    def output(self, name: str) -> Path:
        path = self.folder / FILES_FOLDER / name
        path.parent.mkdir(exist_ok=True)
        self.written.append(path)
        return path


@dataclass
class Findings:
    """The numbers computed once and used by several sections (the summary and their own)."""

    configurations: pd.DataFrame
    top_ensemble: ensemble.Ensemble | None
    per_architecture: dict[str, dict]


def write_report(
    sweep_dir: Path, top_k: int | None = None, *, data_dir: Path | None = None
) -> list[Path]:
    """Write report.md, report.html, ensemble.json and report_files/ into `sweep_dir`.

    Returns the files written. A folder that is not a sweep, or a bad `top_k`, is a
    MnistsweepError; a sweep still running gives a partial report that says what is missing.
    """
    sweep = open_sweep(Path(sweep_dir), top_k, data_dir)
    try:
        clear_old_files(sweep)
        findings = analyse(sweep)
        sections = [
            title(sweep, findings),
            progress(sweep),
            spec(sweep),
            configurations(sweep, findings),
            marginals(sweep),
            learning_curves(sweep, findings),
            top_k_ensemble(sweep, findings),
            tutorials(sweep),
            warnings(sweep, findings),
        ]
        text = "\n\n".join(section for section in sections if section) + "\n"
        markdown_path = sweep.folder / "report.md"
        markdown_path.write_text(text)
        html_path = sweep.folder / "report.html"
        html_path.write_text(to_html(text, f"Sweep report: {sweep.record['name']}", sweep.folder))
    except OSError as error:
        raise MnistsweepError(f"cannot write the report into {sweep.folder}: {error}") from error
    return [markdown_path, html_path, *sweep.written]


def open_sweep(sweep_dir: Path, top_k: int | None, data_dir: Path | None) -> Sweep:
    record = guard.read_record(sweep_dir).model_dump()
    if top_k is None:
        top_k = record.get("ensemble_top_k") or DEFAULT_TOP_K
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise MnistsweepError(f"--top-k must be a positive integer, got {top_k!r}")
    try:
        mnist, data_problem = data.load(data_dir), None
    except MnistsweepError as error:  # the report goes on; sections that need images say so
        mnist, data_problem = None, str(error)
    return Sweep(sweep_dir, record, runs.load_runs(sweep_dir), top_k, mnist, data_problem)


def clear_old_files(sweep: Sweep) -> None:
    """A figure or ensemble from an earlier report must not linger beside one that lacks it."""
    folder = sweep.folder / FILES_FOLDER
    for old in folder.glob("*") if folder.is_dir() else []:
        if old.suffix in (".png", ".csv", ".md"):
            old.unlink()
    (sweep.folder / ensemble.FILENAME).unlink(missing_ok=True)


def analyse(sweep: Sweep) -> Findings:
    table = tables.configuration_table(sweep.runs.frame, sweep.axes)
    top, per_arch = None, {}
    if sweep.mnist is not None and not sweep.completed.empty:
        labels = ensemble.Labels(train=sweep.mnist.y_train, test=sweep.mnist.y_test)
        top = ensemble.build(sweep.completed, sweep.top_k, labels)
        if top is not None:
            per_arch = ensemble.best_per_architecture(sweep.completed, sweep.top_k, labels)
            content = ensemble.summary(top, sweep.top_k, per_arch)
            sweep.written.append(ensemble.write(sweep.folder, content))
    return Findings(table, top, per_arch)


# --- 1. Title and the headline numbers ---------------------------------------------------------


def title(sweep: Sweep, findings: Findings) -> str:
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        f"# Sweep report: {sweep.record['name']}",
        f"Sweep folder `{sweep.folder}` · generated {generated}.",
    ]
    lines = []
    table = findings.configurations
    if not table.empty:
        best = table.iloc[0]
        lines.append(
            f"- **Best configuration on validation:** {label(best, sweep.keys)}: test accuracy "
            f"{mean_and_std(best['test_acc_mean'], best['test_acc_std'])}% "
            f"(mean ± std over {int(best['n'])} seed(s)), validation "
            f"{percent(best['val_acc_mean'])}%."
        )
    if findings.top_ensemble is not None:
        final = findings.top_ensemble.final
        lines.append(
            f"- **Top-{findings.top_ensemble.k} ensemble:** test accuracy "
            f"{percent(final['test_accuracy'])}%, test loss {final['test_loss']:.4f}."
        )
    return "\n\n".join([*parts, "\n".join(lines)] if lines else parts)


# --- 2. Progress: what is finished, what is missing --------------------------------------------


def progress(sweep: Sweep) -> str:
    states = cell_states(sweep)
    if states is None:
        return "## Progress\n\nThe grid's cells could not be listed from sweep.json."
    counts = states["state"].value_counts()
    order = ["completed", "diverged", "failed", "running or interrupted", "not started"]
    table = pd.DataFrame({"state": order, "cells": [int(counts.get(state, 0)) for state in order]})
    parts = ["## Progress", markdown_table(table)]
    unfinished = states[states["state"].isin(["running or interrupted", "not started"])]
    if len(unfinished):
        parts.insert(
            1,
            f"> **Partial report.** {len(states) - len(unfinished)} of {len(states)} cells "
            f"have a final result; {len(unfinished)} are missing (listed below). Tables, "
            "plots and the ensemble use the completed runs only.",
        )
    for state in ("failed", "running or interrupted", "not started"):
        chosen = states[states["state"] == state]
        if len(chosen):
            parts.append(f"**{state.capitalize()}** ({len(chosen)}):\n\n" + bullets(chosen))
    return "\n\n".join(parts)


def cell_states(sweep: Sweep) -> pd.DataFrame | None:
    """One row per cell of the recorded grid: its name, state and any error."""
    try:
        cells = guard.recorded_cells(sweep.folder)
    except (MnistsweepError, KeyError):
        return None
    frame = sweep.runs.frame
    status = dict(zip(frame["cell_id"], frame["status"], strict=True)) if len(frame) else {}
    errors = dict(zip(frame["cell_id"], frame["error"], strict=True)) if len(frame) else {}
    rows = []
    for cell in cells:
        cell_id = cell.id  # a hash of the config: computed once, it shows at 10,000 cells
        if cell_id in status:
            state, error = status[cell_id], errors.get(cell_id)
        else:
            exists = SweepLayout(sweep.folder).run(cell).root.is_dir()
            state, error = ("running or interrupted" if exists else "not started"), None
        rows.append({"cell": cell.name, "state": state, "error": error})
    return pd.DataFrame(rows)


def bullets(cells: pd.DataFrame) -> str:
    lines = []
    for _, row in cells.head(MAX_CELLS_LISTED).iterrows():
        error = f": {plain(str(row['error']))}" if isinstance(row["error"], str) else ""
        lines.append(f"- `{row['cell']}`{error}")
    if len(cells) > MAX_CELLS_LISTED:
        lines.append(f"- ... and {len(cells) - MAX_CELLS_LISTED} more")
    return "\n".join(lines)


# --- 3. The spec the sweep was launched from ---------------------------------------------------


def spec(sweep: Sweep) -> str:
    spec_file = sweep.folder / "spec.yaml"
    if spec_file.is_file():
        body = "```yaml\n" + spec_file.read_text().rstrip() + "\n```"
    else:
        recorded = {key: sweep.record.get(key) for key in ("name", "grid", "train")}
        body = "```yaml\n" + yaml.safe_dump(recorded, sort_keys=False).rstrip() + "\n```"
    grids = sweep.record.get("grid") or {}
    grids = grids if isinstance(grids, list) else [grids]  # a spec may list several grids
    sizes = " + ".join(
        " x ".join(f"{len(values)} {axis}" for axis, values in grid.items()) or "one cell"
        for grid in grids
    )
    return (
        f"## Spec\n\nGrid: {sizes} = {sweep.record.get('cells', '?')} cells; "
        f"ensemble of the top {sweep.top_k} runs. Launched from `{sweep.record.get('spec_path')}`."
        f"\n\n{body}"
    )


# --- 4. Results per configuration --------------------------------------------------------------


def configurations(sweep: Sweep, findings: Findings) -> str:
    table = findings.configurations
    if table.empty:
        return "## Results per configuration\n\nNo completed runs yet."
    save_table(sweep, table, "configurations")
    shown = table.head(MAX_CONFIGURATIONS_SHOWN)
    labels = list(configuration_labels(shown, sweep.keys))
    by_label = runs_by_configuration(sweep)
    seeds = {name: list(by_label[name]["test_accuracy"]) for name in labels if name in by_label}
    figure = figures.configuration_accuracy(shown, labels, seeds)
    image = figures.save(figure, sweep.output("test_accuracy.png"))
    more = (
        f" The {MAX_CONFIGURATIONS_SHOWN} best of {len(table)} are shown; all"
        if len(table) > MAX_CONFIGURATIONS_SHOWN
        else " All"
    )
    return "\n\n".join(
        [
            "## Results per configuration",
            "Completed runs grouped by every axis but the seed, best mean **validation** "
            "accuracy first (the test set never picks). Accuracies in % (val: validation), "
            "mean ± sample std over seeds; the 95% interval is Student's t on the mean (none "
            "for a single run)."
            f"{more} rows are in `{FILES_FOLDER}/configurations.csv`.",
            markdown_table(display_configurations(shown, sweep.keys)),
            figure_markdown(image, sweep, "Test accuracy per configuration"),
        ]
    )


def display_configurations(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    shown = table[keys].astype(str).copy() if keys else pd.DataFrame(index=table.index)
    shown["n"] = table["n"].astype(int).astype(str)
    for short, name in (("test_acc", "test"), ("val_acc", "val")):
        shown[f"{name} acc %"] = [
            mean_and_std(row[f"{short}_mean"], row[f"{short}_std"]) for _, row in table.iterrows()
        ]
        shown[f"{name} 95% CI"] = [
            interval(row[f"{short}_ci95_low"], row[f"{short}_ci95_high"])
            for _, row in table.iterrows()
        ]
    shown["epochs to best"] = table["epochs_to_best"].map(one_decimal)
    shown["train s"] = table["train_seconds"].map(one_decimal)
    return shown


# --- 5. Each axis averaged over the rest -------------------------------------------------------


def marginals(sweep: Sweep) -> str:
    marginals_by_axis = tables.marginal_tables(sweep.runs.frame, sweep.axes)
    if not marginals_by_axis or sweep.completed.empty:
        return ""
    parts = [
        "## Each axis averaged over the rest",
        "Each value of one axis, with every configuration of the other axes counted once "
        "(the mean of the configuration means); the range runs from the worst to the best of them.",
    ]
    for axis, table in marginals_by_axis.items():
        save_table(sweep, table, f"marginal_{axis}")
        shown = table[[axis]].astype(str).copy()
        shown["configurations"] = table["configurations"].astype(str)
        shown["runs"] = table["runs"].astype(str)
        for short, name in (("test_acc", "test"), ("val_acc", "val")):
            shown[f"{name} acc %"] = table[f"{short}_mean"].map(percent)
            shown[f"{name} range"] = [
                interval(low, high)
                for low, high in zip(table[f"{short}_min"], table[f"{short}_max"], strict=True)
            ]
        shown["epochs to best"] = table["epochs_to_best"].map(one_decimal)
        parts += [f"### {axis}", markdown_table(shown)]
    return "\n\n".join(parts)


# --- 6. Learning curves ------------------------------------------------------------------------


def learning_curves(sweep: Sweep, findings: Findings) -> str:
    table = findings.configurations
    if table.empty:
        return ""
    by_label = runs_by_configuration(sweep)
    curves = {}
    for name in configuration_labels(table.head(MAX_CURVES), sweep.keys):
        curve = validation_curve(by_label[name]) if name in by_label else None
        if curve is not None:
            curves[name] = curve
    if not curves:
        return "## Validation accuracy per epoch\n\nNo run has a readable history.json."
    image = figures.save(figures.validation_curves(curves), sweep.output("validation_curves.png"))
    shown = f"the {len(curves)} best configurations on validation"
    if len(table) <= MAX_CURVES:
        shown = "every configuration"
    return "\n\n".join(
        [
            "## Validation accuracy per epoch",
            f"From each run's history.json, {shown}: mean over seeds with a ± std band.",
            figure_markdown(image, sweep, "Validation accuracy per epoch"),
        ]
    )


def validation_curve(runs: pd.DataFrame) -> pd.DataFrame | None:
    """Per epoch: mean, std and count of the runs' validation accuracies (runs may differ in
    length when the number of epochs is an axis, or a run stopped early)."""
    series = []
    for folder in runs["run_dir"]:
        history = read_json(Path(folder) / "history.json")
        if isinstance(history, dict) and history.get("val_accuracy"):
            series.append(pd.Series(history["val_accuracy"], dtype=float))
    if not series:
        return None
    by_epoch = pd.concat(series, axis=1)
    return pd.DataFrame(
        {
            "epoch": np.arange(1, len(by_epoch) + 1),
            "mean": by_epoch.mean(axis=1).to_numpy(),
            "std": by_epoch.std(axis=1).to_numpy(),
            "runs": by_epoch.count(axis=1).to_numpy(),
        }
    )


# --- 7. The top-k ensemble ---------------------------------------------------------------------


def top_k_ensemble(sweep: Sweep, findings: Findings) -> str:
    heading = f"## Top-{sweep.top_k} ensemble"
    if sweep.mnist is None:
        return (
            f"{heading}\n\nMNIST is not available here ({plain(sweep.data_problem or '')}), "
            "so the ensemble, its confusion matrix and the misclassified digits are left out: "
            "they need the labels and images. Prepare the data and run the report again."
        )
    chosen = findings.top_ensemble
    if chosen is None:
        return f"{heading}\n\nNo completed run has probability files (probs_val/test.npy) yet."
    final, best_k = chosen.final, chosen.best_by_validation()
    reference_line = (
        f"For comparison, the tutorial's ensemble of {reference.ENSEMBLE_REFERENCE['members']} "
        f"models reached {percent(reference.ENSEMBLE_REFERENCE['test_accuracy'])}% "
        f"(loss {reference.ENSEMBLE_REFERENCE['test_loss']})."
    )
    short = "" if chosen.k == sweep.top_k else f" (only {chosen.k} runs could be used)"
    parts = [
        heading,
        f"The {chosen.k} completed runs with the best **validation** accuracy{short}, their "
        "class probabilities averaged. Test accuracy "
        f"**{percent(final['test_accuracy'])}%**, test loss {final['test_loss']:.4f} "
        f"(categorical cross-entropy, probabilities clipped at 1e-7); validation accuracy "
        f"{percent(final['val_accuracy'])}%. On validation, k = {int(best_k['k'])} is best "
        f"(test {percent(best_k['test_accuracy'])}%). {reference_line} "
        "All figures are in `ensemble.json`.",
        markdown_table(members_table(chosen)),
        figure_markdown(
            figures.save(
                figures.ensemble_curve(chosen.curve, int(best_k["k"])),
                sweep.output("ensemble_curve.png"),
            ),
            sweep,
            "Ensemble accuracy against k",
        ),
    ]
    if len(chosen.curve) <= MAX_CURVE_ROWS:
        parts.append(markdown_table(curve_table(chosen.curve)))
    if findings.per_architecture:
        parts += [
            "### Best ensemble within each architecture",
            "Each architecture's own runs, ranked on validation; k chosen on validation too.",
            markdown_table(architecture_table(findings.per_architecture)),
        ]
    parts += mistakes(sweep, chosen)
    return "\n\n".join(parts)


def members_table(chosen: ensemble.Ensemble) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "rank": [str(rank) for rank in range(1, chosen.k + 1)],
            "run": [f"`{member.cell_name}`" for member in chosen.members],
            "validation acc %": [percent(member.best_val_accuracy) for member in chosen.members],
            "test acc %": [percent(member.test_accuracy) for member in chosen.members],
        }
    )


def curve_table(curve: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "k": curve["k"].astype(int).astype(str),
            "validation acc %": curve["val_accuracy"].map(percent),
            "test acc %": curve["test_accuracy"].map(percent),
            "test loss": curve["test_loss"].map("{:.4f}".format),
        }
    )


def architecture_table(per_architecture: dict[str, dict]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "arch": arch,
                "k": str(best["k"]),
                "validation acc %": percent(best["val_accuracy"]),
                "test acc %": percent(best["test_accuracy"]),
                "test loss": f"{best['test_loss']:.4f}",
            }
            for arch, best in per_architecture.items()
        ]
    )


def mistakes(sweep: Sweep, chosen: ensemble.Ensemble) -> list[str]:
    """The ensemble's confusion matrix and its most confident mistakes, as figures."""
    assert sweep.mnist is not None
    truth = sweep.mnist.y_test.astype(int)
    predicted = chosen.test_probabilities.argmax(axis=1)
    matrix = np.bincount(truth * 10 + predicted, minlength=100).reshape(10, 10)
    confusion = figures.save(figures.confusion_matrix(matrix), sweep.output("confusion_matrix.png"))
    parts = [
        "### Confusion matrix",
        figure_markdown(confusion, sweep, "Ensemble confusion matrix on the test set"),
    ]
    wrong = np.flatnonzero(predicted != truth)
    confidence = chosen.test_probabilities[wrong, predicted[wrong]]
    worst = wrong[np.argsort(-confidence, kind="stable")][:MISCLASSIFIED_SHOWN]
    parts.append("### Misclassified test digits")
    if not len(worst):
        return [*parts, "The ensemble classifies every test digit correctly."]
    figure = figures.misclassified_digits(
        sweep.mnist.x_test[worst],
        truth[worst],
        predicted[worst],
        chosen.test_probabilities[worst, predicted[worst]],
    )
    image = figures.save(figure, sweep.output("misclassified.png"))
    return [
        *parts,
        f"{len(wrong):,} of {len(truth):,} test digits are misclassified; the "
        f"{len(worst)} the ensemble was surest about, with the probability of its prediction:",
        figure_markdown(image, sweep, "Misclassified test digits"),
    ]


# --- 8. Against the tutorials ------------------------------------------------------------------


def tutorials(sweep: Sweep) -> str:
    table, uncovered = reference.comparison(sweep.runs.frame)
    parts = ["## Against the tutorials' reference figures"]
    if table.empty:
        parts.append("No completed run matches a configuration the tutorials report.")
    else:
        save_table(sweep, table, "reference_comparison")
        shown = pd.DataFrame(
            {
                "reference": table["reference"],
                "source": table["source"],
                "tutorial test acc %": table["reference_test_acc"].map(percent),
                "sweep test acc %": table["sweep_test_acc_mean"].map(percent),
                "difference (points)": (table["difference"] * 100).map("{:+.2f}".format),
                "sweep runs": table["runs"].astype(str),
                "sweep epochs": table["sweep_epochs"],
                "tutorial's setting": table["setting"],
            }
        )
        parts += [
            "The sweep's mean test accuracy over all completed runs with the tutorial's "
            "configuration (other axes pooled), minus the tutorial's figure. The tutorials "
            "often train for more epochs than a quick sweep.",
            markdown_table(shown),
            "\n".join(
                f"- {source}: {reference.TUTORIALS[source]}" for source in table["source"].unique()
            ),
        ]
    if uncovered:
        names = "; ".join(row.name for row in uncovered)
        parts.append(f"Not covered by this sweep: {names}.")
    return "\n\n".join(parts)


# --- 9. Warnings -------------------------------------------------------------------------------


def warnings(sweep: Sweep, findings: Findings) -> str:
    problems = list(sweep.runs.problems)
    if findings.top_ensemble is not None:
        problems += findings.top_ensemble.problems
    if not problems:
        return ""
    lines = [f"- {plain(problem)}" for problem in problems[:MAX_CELLS_LISTED]]
    if len(problems) > MAX_CELLS_LISTED:
        lines.append(f"- ... and {len(problems) - MAX_CELLS_LISTED} more")
    return "## Warnings while reading the runs\n\n" + "\n".join(lines)


# --- helpers: grouping, formatting, files ------------------------------------------------------


def configuration_labels(frame: pd.DataFrame, keys: list[str]) -> pd.Series:
    """`arch=mlp, normalization=raw` for each row: the name of its configuration."""
    if not keys:
        return pd.Series("all runs", index=frame.index)
    parts = [f"{key}=" + frame[key].astype(str) for key in keys]
    return functools.reduce(lambda left, right: left + ", " + right, parts)


def runs_by_configuration(sweep: Sweep) -> dict[str, pd.DataFrame]:
    """Completed runs of each configuration, by label; `indices` keeps it fast for 10,000 runs."""
    done = sweep.completed
    if done.empty:
        return {}
    positions = done.groupby(configuration_labels(done, sweep.keys).to_numpy()).indices
    return {name: done.iloc[rows] for name, rows in positions.items()}


def label(row: pd.Series, keys: list[str]) -> str:
    return str(configuration_labels(row.to_frame().T, keys).iloc[0])


def percent(fraction: float) -> str:
    return "n/a" if pd.isna(fraction) else f"{100 * fraction:.2f}"


def one_decimal(value: float) -> str:
    return "n/a" if pd.isna(value) else f"{value:.1f}"


def mean_and_std(mean: float, std: float) -> str:
    return percent(mean) if pd.isna(std) else f"{percent(mean)} ± {100 * std:.2f}"


def interval(low: float, high: float) -> str:
    return "n/a" if pd.isna(low) else f"[{percent(low)}, {percent(high)}]"


def plain(text: str) -> str:
    """Text from outside (error messages) cannot open HTML tags or break a Markdown table."""
    return html.escape(text, quote=False).replace("|", "\\|").replace("\n", " ")


def markdown_table(table: pd.DataFrame) -> str:
    """Strings in, as formatted; numbers-looking columns right-aligned."""
    numeric = [
        bool(table[column].astype(str).str.fullmatch(r"[-+±.\d\s\[\],%]*|n/a").all())
        for column in table.columns
    ]
    return table.to_markdown(
        index=False,
        disable_numparse=True,
        colalign=["right" if is_numeric else "left" for is_numeric in numeric],
    )


def save_table(sweep: Sweep, table: pd.DataFrame, name: str) -> None:
    """The full table as CSV (for tools) and Markdown (for reading), numbers unrounded."""
    table.to_csv(sweep.output(f"{name}.csv"), index=False)
    sweep.output(f"{name}.md").write_text(table.to_markdown(index=False, floatfmt=".4f") + "\n")


def figure_markdown(path: Path, sweep: Sweep, caption: str) -> str:
    return f"![{caption}]({path.relative_to(sweep.folder).as_posix()})"


# --- HTML --------------------------------------------------------------------------------------

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328;
       max-width: 1100px; margin: 2rem auto; padding: 0 1.5rem; line-height: 1.5; }
h1 { border-bottom: 2px solid #d0d7de; padding-bottom: .3rem; }
h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .2rem; margin-top: 2.2rem; }
h3 { margin-top: 1.6rem; }
code { background: #f3f4f6; padding: .1rem .3rem; border-radius: 4px; font-size: 90%; }
pre { background: #f6f8fa; padding: .8rem 1rem; border-radius: 6px; overflow-x: auto; }
pre code { background: none; padding: 0; }
.table-wrap { overflow-x: auto; margin: 1rem 0; }
table { border-collapse: collapse; font-size: 14px; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d0d7de; padding: .3rem .7rem; vertical-align: top; }
td { white-space: nowrap; }
td:last-child[style*="left"] { white-space: normal; min-width: 12em; }  /* a notes column */
th { background: #f3f4f6; }
tr:nth-child(even) td { background: #fafbfc; }
img { max-width: 100%; height: auto; display: block; margin: 1rem 0;
      border: 1px solid #eaeef2; border-radius: 4px; }
blockquote { margin: 1rem 0; padding: .6rem 1rem; background: #fff8c5;
             border-left: 4px solid #d4a72c; }
blockquote p { margin: 0; }
"""

HTML_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
{body}
</body>
</html>
"""


def to_html(text: str, page_title: str, folder: Path) -> str:
    """The Markdown rendered, with each local PNG inlined so the page stands alone."""
    import markdown

    body = markdown.markdown(text, extensions=["tables", "fenced_code"], output_format="html")
    body = re.sub(r'src="([^"]+\.png)"', lambda match: f'src="{data_uri(folder / match[1])}"', body)
    body = body.replace("<table>", '<div class="table-wrap"><table>')
    body = body.replace("</table>", "</table></div>")
    return HTML_PAGE.format(title=html.escape(page_title), style=STYLE, body=body)


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
