"""Read every run folder of a sweep into one pandas DataFrame, one row per run.

Each `result.json` is read through `sweep.records` (validated on the way in). A run folder whose
result is missing (still running, or killed) or damaged is one line in `problems` naming the file
and what is wrong, and is skipped: one broken run never stops a report of the others. A run
folder that is not this sweep's (`sweep.identity`: copied in, renamed, edited) is never counted:
the foreign folders are one line in `problems`.

A null config value means "the tutorial's own setting" (dropout: the tutorial's rates); every
table shows it as the one word `default` (`DEFAULT`), never as "None".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mnistsweep.sweep import guard, identity, records
from mnistsweep.sweep.layout import RunLayout, SweepLayout

DEFAULT = "default"  # how a null config value (the tutorial's own setting) reads in tables

METRIC_COLUMNS = (
    "test_accuracy",
    "test_loss",
    "best_val_accuracy",
    "best_val_loss",
    "best_epoch",
    "epochs_run",
)
TIMING_COLUMNS = ("first_epoch_seconds", "steady_epoch_seconds", "peak_rss_mb", "gpu_peak_mb")


@dataclass
class SweepRuns:
    frame: pd.DataFrame
    problems: list[str] = field(default_factory=list)


def load_runs(sweep_dir: Path) -> SweepRuns:
    """The sweep's own runs; a folder without a readable sweep.json is a MnistsweepError."""
    layout = SweepLayout(sweep_dir)
    owner = identity.SweepIdentity.of(guard.read_record(sweep_dir), layout.record)
    rows, problems, foreign = [], [], []
    for run in layout.run_folders():
        stranger = owner.check(run.root)
        if stranger is not None:
            foreign.append(stranger)
            continue
        try:
            result = records.read(records.RunResult, run.result)
        except records.DamagedRecord as error:
            problems.append(f"{printable(str(error))} (skipped)")
            continue
        if result is None:
            if not run.stopped_early.exists():  # a stopped cell is the search section's, no problem
                problems.append(f"{run.root.name}: no result.json yet (skipped)")
            continue
        rows.append(flatten(result, run))
    if foreign:
        problems.append(printable(identity.warning(foreign)))
    return SweepRuns(pd.DataFrame(rows), problems)


def flatten(result: records.RunResult, run: RunLayout) -> dict[str, Any]:
    """One table row: identity, config (null as `DEFAULT`), metrics, timing, the folder."""
    metrics, timing = result.metrics, result.timing
    return {
        "cell_id": result.cell_id,
        "cell_name": result.cell_name,
        "status": result.status,
        **{key: display_value(value) for key, value in result.config.items()},
        **{key: getattr(metrics, key) for key in METRIC_COLUMNS},
        "train_seconds": timing.total_seconds,
        # Fields newer trainers record; None for results written before them.
        **{key: getattr(timing, key, None) for key in TIMING_COLUMNS},
        "error": result.error,
        "provenance": result.provenance.model_dump() if result.provenance else None,
        "run_dir": str(run.root),
    }


def display_value(value: Any) -> Any:
    """Config values become group keys: a null is the tutorial's own setting, `DEFAULT`."""
    return DEFAULT if value is None else value


def printable(text: str) -> str:
    """A warning stays one line: a newline in a key read from a damaged file is shown escaped."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
