"""`train`: one cell in the foreground, from `--set KEY=VALUE` settings or a spec's cell."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from mnistsweep.cli.common import add_data_dir, console, default_results_dir


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    train = commands.add_parser("train", help="train one cell in the foreground")
    train.add_argument("--spec", type=Path, help="take the cell from this spec (with --cell)")
    train.add_argument("--cell", help="cell id or name within --spec")
    train.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a train setting, e.g. --set arch=mlp --set epochs=2 (repeatable)",
    )
    train.add_argument("--out", type=Path, help="run directory (default: results/single/<cell>)")
    add_data_dir(train)
    train.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mnistsweep.commands import choose_cell

    cell = choose_cell(args.spec, args.cell, args.settings)
    target = args.out or default_results_dir() / "single" / "runs" / cell.dirname
    console.print(f"training {cell.name} ({cell.id}) in {target}", markup=False)
    started = time.perf_counter()
    from mnistsweep.train import trainer

    result = trainer.run_cell(cell, target, args.data_dir)
    metrics = result["metrics"]
    console.print(
        f"{result['status']} in {time.perf_counter() - started:.1f} s: "
        f"test accuracy {score(metrics['test_accuracy'])}, "
        f"best validation accuracy {score(metrics['best_val_accuracy'])} "
        f"(epoch {metrics['best_epoch']})",
        markup=False,
    )
    return 0 if result["status"] == "completed" else 1


def score(value: float | None) -> str:
    """A diverged run has no scores."""
    return "-" if value is None else f"{value:.4f}"
