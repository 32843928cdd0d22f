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

from mnistsweep.analysis import effects, ensemble, reference, runs, tables
from mnistsweep.errors import MnistsweepError
from mnistsweep.report import document, figures, history
from mnistsweep.report.history import History, read_history
from mnistsweep.sweep import guard, records
from mnistsweep.sweep.layout import RunLayout, SweepLayout
from mnistsweep.sweep.spec import Grid, Spec, load_spec, parse_spec
from mnistsweep.train import data


@dataclass
class Inputs:
    """The sweep folder as read once; `mnist` is None (and `data_problem` says why) without data."""

    layout: SweepLayout
    record: records.SweepRecord
    runs: runs.SweepRuns
    top_k: int
    mnist: data.Mnist | None
    data_problem: str | None
    grids: tuple[Grid, ...] = ()  # the spec's grid blocks, in its order
    block_titles: tuple[str, ...] = ()  # each block's label, or "block N"; "" for a lone one
    grid_summary: str = "one cell"  # "2 arch x 5 seed + 8 samples of learning_rate x 5 seed"

    @property
    def keys(self) -> list[str]:
        """The configuration axes: every grid axis but the seed."""
        return tables.configuration_axes(self.record.axes)

    @property
    def completed(self) -> pd.DataFrame:
        return tables.completed(self.runs.frame)

    def varying(self, block: int) -> list[str]:
        """The axes a block's configurations are told apart by: those with several values in
        it (the seed aside), else its fixed ones, so a one-configuration block is still named."""
        grid = self.grids[block] if block < len(self.grids) else {}
        several = [axis for axis, values in grid.items() if axis != "seed" and len(values) > 1]
        return several or [axis for axis in grid if axis != "seed"]


@dataclass
class Findings:
    # one row per cell of the recorded grid (cell, state, error), states as `status` sees them
    # (the scheduler's view included); None when the grid's cells cannot be listed
    cell_states: pd.DataFrame | None
    configurations: pd.DataFrame  # best validation mean first; a `block` column
    labels: list[str]  # the configurations' names (block title, varying axes), in table order
    effects: pd.DataFrame  # effects.axis_effects: matched pairs only
    runs_by_label: dict[str, pd.DataFrame]  # completed runs of each configuration
    ensembles: ensemble.EnsembleFindings | None
    histories: dict[str, History] = field(default_factory=dict)  # by run folder
    # configuration label -> learning curves over its seeds; -> mean (first, steady) epoch s
    curves: dict[str, pd.DataFrame] = field(default_factory=dict)
    epoch_seconds: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    best_run: pd.Series | None = None  # the best completed run on validation
    # the tutorials' figures beside the sweep's, and the reference rows it has no runs of
    tutorial_table: pd.DataFrame = field(default_factory=pd.DataFrame)
    tutorials_uncovered: list[reference.ReferenceRow] = field(default_factory=list)
    four_models_refused: str | None = None  # why the 4-model ensemble is not comparable

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
    spec = _recorded_spec(layout, record)
    found = runs.load_runs(sweep_dir)
    blocks = {cell.id: cell.block for cell in spec.cells()} if spec is not None else {}
    if len(found.frame):
        found.frame[effects.BLOCK] = [blocks.get(cell, 0) for cell in found.frame["cell_id"]]
    grids = spec.grids if spec is not None else tuple(_record_grids(record))
    labels = spec.labels if spec is not None else ()
    titles = tuple(
        (labels[i] if i < len(labels) else None) or ("" if len(grids) == 1 else f"block {i + 1}")
        for i in range(len(grids))
    )
    summary = grid_summary(spec) if spec is not None else grid_summary_of_record(record)
    return Inputs(layout, record, found, chosen, mnist, problem, grids, titles, summary)


def grid_summary(spec: Spec) -> str:
    """Each block's size as its spec wrote it: a sampled block is its draws, not one block per
    draw as sweep.json records it."""
    blocks = []
    for block, grid in enumerate(spec.grids):
        draws = spec.samples[block] if block < len(spec.samples) else ()
        sampled = [axis for axis in grid if axis in draws[0]] if draws else []  # spec order
        parts = [f"{len(draws)} samples of {', '.join(sampled)}"] if draws else []
        parts += [f"{len(values)} {axis}" for axis, values in grid.items() if axis not in sampled]
        blocks.append(" x ".join(parts) or "one cell")
    return " + ".join(blocks) or "one cell"


def grid_summary_of_record(record: records.SweepRecord) -> str:
    sizes = " + ".join(
        " x ".join(f"{len(values)} {axis}" for axis, values in grid.items()) or "one cell"
        for grid in record.grid
    )
    return sizes or "one cell"


def _recorded_spec(layout: SweepLayout, record: records.SweepRecord) -> Spec | None:
    """The spec kept beside the runs (it knows each cell's block and the blocks' labels), else
    the record's grid; None when neither parses (cells then count as one block)."""
    try:
        if guard.kept_fingerprint(layout) == record.fingerprint:  # not a spec.yaml edited since
            return load_spec(layout.spec_copy, allow_large=True)
        document = {"name": record.name, "grid": record.grid, "train": record.train}
        return parse_spec(document, layout.record, allow_large=True)
    except MnistsweepError:
        return None


def _record_grids(record: records.SweepRecord) -> list[Grid]:
    return [{axis: tuple(values) for axis, values in grid.items()} for grid in record.grid]


def configuration_names(inputs: Inputs, frame: pd.DataFrame) -> list[str]:
    """`<block title>: arch=mlp, normalization=raw`: only the axes that vary within the block."""
    names = []
    for _, row in frame.iterrows():
        block = int(row.get(effects.BLOCK, 0))
        axes = inputs.varying(block)
        shown = ", ".join(f"{axis}={row[axis]}" for axis in axes) or "all runs"
        title = inputs.block_titles[block] if block < len(inputs.block_titles) else ""
        names.append(f"{title}: {shown}" if title else shown)
    return names


def analyse(inputs: Inputs) -> Findings:
    frame = inputs.runs.frame
    axes = [effects.BLOCK, *inputs.record.axes] if effects.BLOCK in frame else inputs.record.axes
    table = tables.configuration_table(frame, axes)
    done = inputs.completed
    by_label: dict[str, pd.DataFrame] = {}
    if not done.empty:
        names = configuration_names(inputs, done)
        by_label = {
            str(name): done.iloc[rows]
            for name, rows in done.groupby(pd.Series(names, index=done.index)).indices.items()
        }
    labels = configuration_names(inputs, table) if len(table) else []
    found_effects = effects.axis_effects(done, inputs.grids, inputs.keys)
    findings = Findings(cell_states(inputs), table, labels, found_effects, by_label, None)
    for label in labels:  # histories of every configuration: each gets its learning curves
        for run_dir in by_label.get(label, pd.DataFrame(columns=["run_dir"]))["run_dir"]:
            past = read_history(RunLayout(Path(run_dir)))
            if past is not None:
                findings.histories[str(run_dir)] = past
    no_runs = pd.DataFrame(columns=["run_dir"])
    for label in labels:
        found = [findings.history_of(str(d)) for d in by_label.get(label, no_runs)["run_dir"]]
        curve = history.epoch_curves(past for past in found if past is not None)
        if curve is not None:
            findings.curves[label] = curve
        findings.epoch_seconds[label] = epoch_seconds(findings, label)
    ranked = ensemble.rank_by_validation(done)
    findings.best_run = None if ranked.empty else ranked.iloc[0]
    findings.tutorial_table, findings.tutorials_uncovered = reference.comparison(frame)
    if inputs.mnist is not None and not done.empty:
        labels_ = ensemble.Labels(train=inputs.mnist.y_train, test=inputs.mnist.y_test)
        findings.ensembles = ensemble.find_ensembles(done, labels_, inputs.top_k)
        findings.four_models_refused = four_models_refused(done, findings.ensembles)
    return findings


def epoch_seconds(findings: Findings, label: str) -> tuple[float | None, float | None]:
    """Mean first-epoch and steady-epoch seconds over the configuration's runs."""
    firsts, steadies = [], []
    for _, row in findings.runs_by_label.get(label, pd.DataFrame()).iterrows():
        past = findings.history_of(str(row["run_dir"]))
        first = history.first_epoch_seconds(row.get("first_epoch_seconds"), past)
        steady = history.steady_epoch_seconds(row.get("steady_epoch_seconds"), past)
        firsts += [first] if first is not None else []
        steadies += [steady] if steady is not None else []
    return _mean(firsts), _mean(steadies)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def four_models_refused(done: pd.DataFrame, found: ensemble.EnsembleFindings | None) -> str | None:
    """Why the 4-model ensemble cannot stand beside Tutorial 1's line (None: it can)."""
    four = found.four_models if found is not None else None
    if four is None:
        return "no 4-model ensemble could be built"
    subset = (
        dict(zip(done["run_dir"], done["train_subset"], strict=True))
        if "train_subset" in done
        else {}
    )
    return reference.ensemble_comparison(
        [m.weight for m in four.members], [subset.get(m.run_dir) for m in four.members]
    )


def cell_states(inputs: Inputs) -> pd.DataFrame | None:
    """Each cell's state exactly as `status` shows it: from its folder and, through one
    scheduler round, its job (a queued SLURM cell is queued here too, not "not started")."""
    from mnistsweep.execute import scheduler

    try:
        status = scheduler.sweep_status(inputs.layout.root)
    except MnistsweepError:
        return None
    rows = [
        {"cell": row.cell.name, "state": row.view.state.value, "error": row.view.detail or None}
        for row in status.rows
    ]
    return pd.DataFrame(rows, columns=["cell", "state", "error"])
