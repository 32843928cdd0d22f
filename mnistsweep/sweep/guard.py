"""A sweep's folder: the spec it was launched from, and the guard that keeps specs apart.

Results of different specs are never mixed: a sweep folder remembers the fingerprint of the grid
and train settings that filled it, and a launch with a different one is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mnistsweep.errors import MnistsweepError
from mnistsweep.sweep.rundir import read_json, write_json_atomic
from mnistsweep.sweep.spec import Cell, Spec, parse_spec
from mnistsweep.train import tblog


def record_path(sweep_dir: Path) -> Path:
    return sweep_dir / "sweep.json"


def check_same_spec(sweep_dir: Path, spec: Spec) -> None:
    record = read_json(record_path(sweep_dir))
    if record and record.get("fingerprint") != spec.results_fingerprint():
        raise MnistsweepError(
            f"{spec.path}: grid/train differ from the spec that filled {sweep_dir} "
            f"(launched from {record.get('spec_path')}); give the changed spec a new name: "
            "results of different specs are never mixed"
        )


def record_spec(sweep_dir: Path, spec: Spec) -> None:
    """Keep the spec beside its results: aggregate and report read the axes from here."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        record_path(sweep_dir),
        {
            "name": spec.name,
            "fingerprint": spec.results_fingerprint(),
            "spec_path": str(spec.path),
            "axes": list(spec.axes),
            "grid": [{axis: list(values) for axis, values in grid.items()} for grid in spec.grids],
            "train": dict(spec.train),
            "ensemble_top_k": spec.ensemble_top_k,
            "cells": spec.size,
        },
    )
    (sweep_dir / "spec.yaml").write_text(yaml.safe_dump(dict(spec.document), sort_keys=False))
    tblog.write_hparams_config(sweep_dir, spec.axis_values)


def read_record(sweep_dir: Path) -> dict[str, Any]:
    """The launch record, or an error telling the user this is not a sweep folder."""
    if not sweep_dir.is_dir():
        raise MnistsweepError(f"{sweep_dir}: no such sweep folder (expected <results-dir>/<name>)")
    record = read_json(record_path(sweep_dir))
    if not isinstance(record, dict):
        raise MnistsweepError(
            f"{sweep_dir}: not a sweep folder ({record_path(sweep_dir).name} missing or "
            "unreadable); launch a spec first"
        )
    return record


def recorded_cells(sweep_dir: Path) -> list[Cell]:
    """The cells of the spec that filled this folder, rebuilt from its record."""
    record = read_record(sweep_dir)
    document = {"name": record["name"], "grid": record["grid"], "train": record["train"]}
    return parse_spec(document, record_path(sweep_dir), allow_large=True).cells()
