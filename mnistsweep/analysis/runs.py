"""Read every run directory of a sweep into one pandas DataFrame, one row per run.

A run directory whose result.json is missing (still running, or killed) or unreadable is listed
as a problem and skipped: one broken run never stops a report of the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mnistsweep.sweep.rundir import RunFiles

METRIC_COLUMNS = (
    "test_accuracy",
    "test_loss",
    "best_val_accuracy",
    "best_val_loss",
    "best_epoch",
    "epochs_run",
)


@dataclass
class SweepRuns:
    frame: pd.DataFrame
    problems: list[str] = field(default_factory=list)


def load_runs(sweep_dir: Path) -> SweepRuns:
    rows, problems = [], []
    runs_root = sweep_dir / "runs"
    for root in sorted(runs_root.iterdir()) if runs_root.is_dir() else []:
        if not root.is_dir():
            continue
        files = RunFiles(root)
        result = files.read_result()
        if result is None:
            why = "unreadable result.json" if files.result.exists() else "no result.json yet"
            problems.append(f"{root.name}: {why} (skipped)")
            continue
        rows.append(flatten(result, root))
    return SweepRuns(pd.DataFrame(rows), problems)


def flatten(result: dict, root: Path) -> dict:
    metrics = result.get("metrics") or {}
    timing = result.get("timing") or {}
    return {
        "cell_id": result.get("cell_id"),
        "cell_name": result.get("cell_name"),
        "status": result["status"],
        **{key: _hashable(value) for key, value in (result.get("config") or {}).items()},
        **{key: metrics.get(key) for key in METRIC_COLUMNS},
        "train_seconds": timing.get("total_seconds"),
        "error": result.get("error"),
        "run_dir": str(root),
    }


def _hashable(value):
    """Config values become group keys; None (a tutorial default) reads better as text."""
    return "default" if value is None else value
