"""`train`: one cell in the foreground, from `--set KEY=VALUE` settings or a spec's cell."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnistsweep.cli.common import add_data_dir, console, default_results_dir
from mnistsweep.errors import MnistsweepError

if TYPE_CHECKING:
    from mnistsweep.sweep.layout import RunLayout
    from mnistsweep.sweep.spec import Cell


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
    from mnistsweep.sweep import state
    from mnistsweep.sweep.layout import RunLayout, SweepLayout

    cell = choose_cell(args.spec, args.cell, args.settings)
    target = args.out or SweepLayout.of(default_results_dir(), "single").run(cell).root
    run_layout = RunLayout(target)
    with state.training_lock(run_layout) as acquired:
        if not acquired:
            raise MnistsweepError(f"{target}: another process is training this run right now")
        refuse_others(run_layout, cell)
        existing = state.derive(run_layout)
        if existing.result is not None or existing.state is state.CellState.DAMAGED:
            raise MnistsweepError(
                f"{target}: already holds a {existing.state} run; results are never "
                "overwritten: choose another --out (or delete that folder yourself)"
            )
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


def refuse_others(run: RunLayout, cell: Cell) -> None:
    """A folder holding another cell's records (or a resume point nobody can read) is left as it
    is: training there would delete its checkpoints and mix two cells' results."""
    from mnistsweep.sweep import identity, records

    other = identity.foreign_records(run, cell)
    if other is not None:
        raise MnistsweepError(
            f"{run.root}: holds another cell's run ({other}; this is cell {cell.id}); it is "
            "left as it is: choose another --out"
        )
    try:
        records.read(records.RunState, run.state)
    except records.DamagedRecord as damaged:
        raise MnistsweepError(
            f"{damaged}; whose resume point it is cannot be told, so it is left as it is: "
            "choose another --out"
        ) from None


def choose_cell(spec_path: Path | None, cell_key: str | None, settings: list[str]) -> Cell:
    """A spec's cell (`--spec --cell`) or one made from `--set` settings."""
    from mnistsweep.sweep.spec import Cell, SpecError, load_spec, parse_spec
    from mnistsweep.sweep.yaml_loader import parse_yaml, printable, shown

    if spec_path is None and cell_key is not None:
        raise MnistsweepError("train --cell needs --spec (the spec the cell belongs to)")
    if spec_path is not None:
        if not cell_key:
            raise MnistsweepError("train --spec needs --cell ID-or-NAME (see launch --dry-run)")
        if settings:
            raise MnistsweepError("train --spec takes every setting from the spec; drop --set")
        cells = load_spec(spec_path).cells()
        for cell in cells:
            if cell_key in (cell.id, cell.name):
                return cell
        raise MnistsweepError(
            f"{spec_path}: no cell {shown(cell_key)}; launch --dry-run lists them"
        )
    train: dict[str, Any] = {}
    for setting in settings:
        key, separator, value = setting.partition("=")
        if not separator:
            raise SpecError(f"--set {printable(setting)}: expected KEY=VALUE, e.g. --set arch=mlp")
        if key in train:
            raise SpecError(f"--set {printable(key)}: given twice; give each key once")
        train[key] = parse_yaml(value, f"--set {printable(key)}")
    spec = parse_spec({"name": "single", "train": train}, Path("--set"))
    return Cell(spec.cells()[0].config, axes=tuple(train))


def score(value: float | None) -> str:
    """A diverged run has no scores."""
    return "-" if value is None else f"{value:.4f}"
