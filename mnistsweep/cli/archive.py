"""`archive`: a sweep's results into one compressed file, or (`--extract`) back into a folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mnistsweep.cli.common import console, default_results_dir
from mnistsweep.errors import MnistsweepError


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "archive",
        help="a sweep's results in one .tar.xz (no models, no TensorBoard), or --extract one",
        description="python -m mnistsweep archive SWEEP_DIR [-o FILE]  |  "
        "python -m mnistsweep archive --extract FILE [--results-dir DIR]",
    )
    parser.add_argument("sweep_dir", type=Path, nargs="?", help="the sweep folder to archive")
    parser.add_argument("-o", "--output", type=Path, help="default: <sweep folder>.tar.xz")
    parser.add_argument("--with-models", action="store_true", help="add each run's model.keras")
    parser.add_argument(
        "--with-tensorboard", action="store_true", help="add each run's TensorBoard files"
    )
    parser.add_argument(
        "--with-resume-points",
        action="store_true",
        help="add unfinished cells' resume points (state.json and its checkpoints): a relaunch "
        "from the extracted folder goes on from their last epoch",
    )
    parser.add_argument("--extract", type=Path, metavar="FILE", help="read an archive back")
    parser.add_argument(
        "--results-dir", type=Path, help="where --extract puts the sweep (default: results/)"
    )
    parser.set_defaults(func=run_archive)


def run_archive(args: argparse.Namespace) -> int:
    from mnistsweep.analysis import archive, extract  # numpy: only when the command runs

    if (args.sweep_dir is None) == (args.extract is None):
        raise MnistsweepError("archive: give a sweep folder to archive, or --extract FILE")
    if args.extract is not None:
        extracted = extract.extract(args.extract, args.results_dir or default_results_dir())
        kept = f"; {extracted.kept} already there, kept as they were" if extracted.kept else ""
        console.print(
            f"extracted {extracted.added} run folder(s) into {extracted.sweep_dir}{kept}; "
            f"`python -m mnistsweep report {extracted.sweep_dir}` rebuilds the report",
            markup=False,
        )
        return 0
    written, foreign = archive.archive(
        args.sweep_dir,
        args.output,
        with_models=args.with_models,
        with_tensorboard=args.with_tensorboard,
        with_resume_points=args.with_resume_points,
    )
    if foreign is not None:
        print(f"warning: {foreign}; left out of the archive", file=sys.stderr)
    size = written.stat().st_size
    console.print(f"archive: {written} ({size / 1024**2:.1f} MiB)", markup=False)
    return 0
