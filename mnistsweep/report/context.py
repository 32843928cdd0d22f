"""What the report shows, worked out once: the sweep's inputs, the analysis, and the `Report`.

`load` reads the sweep folder (record, runs, MNIST when it is there); `analyse` computes the
numbers several sections share; the section modules turn them into blocks. Nothing here writes a
file or knows Markdown or HTML: `build.write_report` writes, the templates format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure as MatplotlibFigure

from mnistsweep.analysis import ensemble, runs, tables
from mnistsweep.errors import MnistsweepError
from mnistsweep.report import document, figures, formatting
from mnistsweep.report.history import History, read_history
from mnistsweep.sweep import guard, records
from mnistsweep.sweep.layout import RunLayout, SweepLayout
from mnistsweep.train import data

MAX_CONFIGURATIONS_SHOWN = 40  # rows of the configuration table and plot; the CSV has them all


@dataclass
class Inputs:
    """The sweep folder as read once; `mnist` is None (and `data_problem` says why) without data."""

    layout: SweepLayout
    record: records.SweepRecord
    runs: runs.SweepRuns
    top_k: int
    mnist: data.Mnist | None
    data_problem: str | None

    @property
    def keys(self) -> list[str]:
        """The configuration axes: every grid axis but the seed."""
        return tables.configuration_axes(self.record.axes)

    @property
    def completed(self) -> pd.DataFrame:
        return tables.completed(self.runs.frame)


@dataclass
class Findings:
    configurations: pd.DataFrame  # best validation mean first
    labels: list[str]  # the configurations' names, in table order
    runs_by_label: dict[str, pd.DataFrame]  # completed runs of each configuration
    ensembles: ensemble.EnsembleFindings | None
    histories: dict[str, History] = field(default_factory=dict)  # by run folder

    @property
    def best_label(self) -> str | None:
        return self.labels[0] if self.labels else None

    def history_of(self, run_dir: str) -> History | None:
        return self.histories.get(run_dir)


class Attachments:
    """Files of report_files/ that the sections produce: figures and full tables."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def figure(self, name: str, figure: MatplotlibFigure, caption: str) -> document.Figure:
        content = figures.png(figure)
        self.files[name] = content
        return document.Figure(name, caption, content)

    def table(self, name: str, frame: pd.DataFrame) -> None:
        """The full table, numbers unrounded: CSV for tools, Markdown for reading."""
        self.files[f"{name}.csv"] = frame.to_csv(index=False).encode()
        markdown = frame.to_markdown(index=False, floatfmt=".4f") if len(frame) else ""
        self.files[f"{name}.md"] = (markdown + "\n").encode()


def load(sweep_dir: Path, top_k: int | None, data_dir: Path | None) -> Inputs:
    """A folder that is not a sweep, or a bad `top_k`, is a MnistsweepError; missing MNIST is
    not: the report goes on and the sections that need images say so."""
    record = guard.read_record(sweep_dir)
    chosen = record.ensemble_top_k if top_k is None else top_k
    if isinstance(chosen, bool) or not isinstance(chosen, int) or chosen < 1:
        raise MnistsweepError(f"--top-k must be a positive integer, got {chosen!r}")
    try:
        mnist, problem = data.load(data_dir), None
    except MnistsweepError as error:
        mnist, problem = None, str(error)
    layout = SweepLayout(sweep_dir)
    return Inputs(layout, record, runs.load_runs(sweep_dir), chosen, mnist, problem)


def analyse(inputs: Inputs) -> Findings:
    table = tables.configuration_table(inputs.runs.frame, inputs.record.axes)
    done = inputs.completed
    by_label: dict[str, pd.DataFrame] = {}
    if not done.empty:
        names = formatting.configuration_labels(done, inputs.keys).to_numpy()
        by_label = {
            str(name): done.iloc[rows] for name, rows in done.groupby(names).indices.items()
        }
    labels = list(formatting.configuration_labels(table, inputs.keys)) if len(table) else []
    findings = Findings(table, labels, by_label, None)
    for label in labels[:MAX_CONFIGURATIONS_SHOWN]:  # histories of what the report shows
        for run_dir in by_label.get(label, pd.DataFrame(columns=["run_dir"]))["run_dir"]:
            history = read_history(RunLayout(Path(run_dir)))
            if history is not None:
                findings.histories[str(run_dir)] = history
    if inputs.mnist is not None and not done.empty:
        labels_ = ensemble.Labels(train=inputs.mnist.y_train, test=inputs.mnist.y_test)
        findings.ensembles = ensemble.find_ensembles(done, labels_, inputs.top_k)
    return findings
