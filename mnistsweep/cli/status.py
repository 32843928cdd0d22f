"""`status` and `cancel`: a sweep's cells as its folder and the scheduler see them."""

from __future__ import annotations

import argparse

from mnistsweep.cli.common import add_sweep_dir, console


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = commands.add_parser("status", help="state of every cell of a sweep")
    add_sweep_dir(status)
    status.set_defaults(func=run_status)
    cancel = commands.add_parser("cancel", help="cancel a sweep's SLURM jobs")
    add_sweep_dir(cancel)
    cancel.set_defaults(func=run_cancel)


def run_status(args: argparse.Namespace) -> int:
    from mnistsweep.execute import scheduler
    from mnistsweep.sweep import guard

    record = guard.read_record(args.sweep_dir)
    counts = scheduler.cell_states(args.sweep_dir)
    console.print(
        f"sweep {record.name}: " + ", ".join(f"{n} {state}" for state, n in counts.totals.items()),
        markup=False,
    )
    for line in counts.lines:
        console.print(line, markup=False)
    return 0


def run_cancel(args: argparse.Namespace) -> int:
    from mnistsweep.execute import scheduler
    from mnistsweep.sweep import guard

    guard.read_record(args.sweep_dir)
    cancelled = scheduler.cancel(args.sweep_dir)
    console.print(f"cancelled {len(cancelled)} job(s): {' '.join(cancelled) or '-'}")
    return 0
