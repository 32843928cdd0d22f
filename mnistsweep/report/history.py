"""Per-epoch views from each run's history.json: learning curves over seeds and epoch times.

history.json holds one list per Keras metric (loss, accuracy, val_loss, val_accuracy) and the
seconds each epoch took. Runs of one configuration may differ in length (epochs as an axis, a
run that diverged), so each epoch is averaged over the runs that reached it.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable

import numpy as np
import pandas as pd

from mnistsweep.sweep import records
from mnistsweep.sweep.layout import RunLayout

CURVE_METRICS = ("loss", "val_loss", "accuracy", "val_accuracy")

History = dict[str, list[float]]


def read_history(run: RunLayout) -> History | None:
    """The run's per-epoch lists, or None when the file is missing or damaged (then the run
    has no curves; its scores still count)."""
    try:
        found = records.read(records.RunHistory, run.history)
    except records.DamagedRecord:
        return None
    return found.root if found is not None else None


def epoch_curves(histories: Iterable[History]) -> pd.DataFrame | None:
    """For each metric and epoch (1-based): mean, sample std and number of runs."""
    frames = []
    histories = list(histories)
    for metric in CURVE_METRICS:
        series = [pd.Series(history[metric]) for history in histories if history.get(metric)]
        if not series:
            continue
        by_epoch = pd.concat(series, axis=1)
        frames.append(
            pd.DataFrame(
                {
                    "metric": metric,
                    "epoch": np.arange(1, len(by_epoch) + 1),
                    "mean": by_epoch.mean(axis=1).to_numpy(),
                    "std": by_epoch.std(axis=1).to_numpy(),
                    "runs": by_epoch.count(axis=1).to_numpy(),
                }
            )
        )
    return pd.concat(frames, ignore_index=True) if frames else None


def steady_epoch_seconds(recorded: float | None, history: History | None) -> float | None:
    """Seconds per epoch once compiled: the trainer's figure, else the median after epoch 1
    (the first epoch pays for tracing and compiling, so it would overstate the cost)."""
    if recorded is not None and not pd.isna(recorded):
        return float(recorded)
    seconds = (history or {}).get("seconds", [])
    return statistics.median(seconds[1:]) if len(seconds) > 1 else None


def first_epoch_seconds(recorded: float | None, history: History | None) -> float | None:
    if recorded is not None and not pd.isna(recorded):
        return float(recorded)
    seconds = (history or {}).get("seconds", [])
    return seconds[0] if seconds else None
