"""`write_report`: a sweep folder's report.md, report.html, ensemble.json and report_files/.

Every file goes through `fsio` (atomic, never through a symlink) at a path `SweepLayout` names.
New files are written first and stale ones removed last, only from `report_files/` itself and
only by suffix, so a reader (or a launch running meanwhile) always sees a whole report and
never loses a file it needs. Nothing here imports TensorFlow or Keras: a report takes seconds
and runs where no training can.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from mnistsweep import fsio
from mnistsweep.analysis import ensemble
from mnistsweep.report import context, ensemble_sections, render, search, sections
from mnistsweep.report.document import Report

REPORT_FILE_PATTERNS = ("*.png", "*.csv", "*.md")


def write_report(
    sweep_dir: Path, top_k: int | None = None, *, data_dir: Path | None = None
) -> list[Path]:
    """Write the report into `sweep_dir`; return the files written (report.md, report.html
    first). A folder that is not a sweep, a bad `top_k`, a symlink planted in the way or a
    full or read-only disk is a one-line MnistsweepError; a sweep still running gives a
    partial report that says what is missing."""
    inputs = context.load(Path(sweep_dir), top_k, data_dir)
    layout = inputs.layout
    files_folder = fsio.ensure_dir(layout.report_files, layout.root)  # refuses a symlink
    findings = context.analyse(inputs)
    report, attachments = assemble(inputs, findings)
    written = [
        fsio.write_bytes(layout.report_file(name), content)
        for name, content in attachments.files.items()
    ]
    effects_csv = layout.root / sections.EFFECTS_FILE
    written.append(fsio.write_text(effects_csv, findings.effects.to_csv(index=False)))
    if findings.ensembles is not None:
        written.append(ensemble.write(layout.root, findings.ensembles))
    markdown = fsio.write_text(layout.report_md, render.to_markdown(report))
    page = fsio.write_text(layout.report_html, render.to_html(report))
    fsio.remove_matching(files_folder, REPORT_FILE_PATTERNS, keep=frozenset(attachments.files))
    return [markdown, page, *written]


def assemble(
    inputs: context.Inputs, findings: context.Findings
) -> tuple[Report, context.Attachments]:
    """The report's blocks, section by section, in the order a reader meets them."""
    files = context.Attachments()
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    report = Report(
        title=f"Sweep report: {inputs.record.name}",
        lead=sections.lead(inputs, findings, generated),
        sections=[
            *sections.progress(findings),
            *sections.spec(inputs),
            *sections.configurations(inputs, findings, files),
            *sections.axis_effects(inputs, findings, files),
            *search.search(inputs, findings, files),
            *sections.learning_curves(inputs, findings, files),
            *ensemble_sections.ensembles(inputs, findings, files),
            *sections.tutorials(inputs, findings, files),
            *sections.warnings(inputs, findings),
            *sections.provenance(inputs),
        ],
    )
    return report, files
