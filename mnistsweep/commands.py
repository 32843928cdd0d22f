"""Which cell `train` runs: a spec's cell (`--spec --cell`) or one made from `--set` settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mnistsweep.errors import MnistsweepError
from mnistsweep.sweep.spec import Cell, SpecError, load_spec, parse_spec


def choose_cell(spec_path: Path | None, cell_key: str | None, settings: list[str]) -> Cell:
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
