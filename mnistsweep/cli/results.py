"""`aggregate` and `report`: a sweep folder's runs into tables, an ensemble and a report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mnistsweep.cli.common import add_data_dir, add_sweep_dir, console


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    aggregate_parser = commands.add_parser(
        "aggregate", help="table of mean/std over seeds per configuration"
    )
    add_sweep_dir(aggregate_parser)
    aggregate_parser.set_defaults(func=lambda args: aggregate(args.sweep_dir))

    report_parser = commands.add_parser(
        "report", help="report.md and a self-contained report.html: tables, plots, ensemble"
    )
    add_sweep_dir(report_parser)
    report_parser.add_argument(
        "--top-k", type=int, help="ensemble size (default: the spec's ensemble.top_k)"
    )
    add_data_dir(report_parser)
    report_parser.set_defaults(
        func=lambda args: report(args.sweep_dir, top_k=args.top_k, data_dir=args.data_dir)
    )


def aggregate(sweep_dir: Path) -> int:
    from rich.markup import escape

    from mnistsweep import fsio
    from mnistsweep.analysis import runs as sweep_runs
    from mnistsweep.analysis import tables  # pandas: not on the submit-and-return path
    from mnistsweep.sweep import guard
    from mnistsweep.sweep.layout import SweepLayout

    record = guard.read_record(sweep_dir)
    runs = sweep_runs.load_runs(sweep_dir)
    for problem in runs.problems:  # a path or key from a damaged file is text, never markup
        console.print(f"[yellow]warning[/]: {escape(problem)}", markup=True)
    table = tables.summarize(runs.frame, record.axes)
    csv_path = fsio.write_text(SweepLayout(sweep_dir).summary_csv, table.to_csv(index=False))
    if table.empty:
        console.print("no completed runs yet")
        return 0
    print(table.to_markdown(index=False, floatfmt=".4f"))
    console.print(
        f"\n{int(table['n'].sum())} runs in {len(table)} configurations "
        f"(sorted by mean validation accuracy); written to {csv_path}",
        markup=False,
    )
    return 0


def report(sweep_dir: Path, *, top_k: int | None, data_dir: Path | None) -> int:
    from mnistsweep.cli import one_line
    from mnistsweep.report.build import write_report
    from mnistsweep.sweep import guard, identity

    written = write_report(sweep_dir, top_k, data_dir=data_dir)
    foreign = identity.foreign_runs(guard.read_record(sweep_dir), sweep_dir)
    if foreign:  # the report lists them too; said here for whoever only reads the terminal
        print(f"warning: {one_line(identity.warning(foreign), 1000)}", file=sys.stderr)
    console.print(
        f"report: {written[0]} and {written[1]} ({len(written) - 2} more files)", markup=False
    )
    return 0
