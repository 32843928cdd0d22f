"""Axis effects from matched comparisons only: on a union of grid blocks, averaging an axis over
the rest compares different nets (batch 200 occurs only beside other architectures), so an effect
is taken only from pairs of runs of one block that differ in that axis alone, seed for seed.

A pair is (run at `value`, run at `baseline`) with the same block and every other config value
equal, the seed included; the baseline is the axis's first value in the block's spec. The effect
is the mean of the pairs' test-accuracy differences (points, value minus baseline) with a
Student-t 95% interval over the pairs (none for one pair). An axis without any pair is one row
with `pairs` 0 and no numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from mnistsweep.analysis.runs import display_value

COLUMNS = ("axis", "value", "baseline", "pairs", "effect_test_pts", "ci_low_pts", "ci_high_pts")
CONFIDENCE = 0.95
BLOCK = "block"  # the runs' column naming the grid block each came from


def matched_differences(
    runs: pd.DataFrame, grids: Sequence[Mapping[str, Sequence[Any]]], axis: str
) -> pd.DataFrame:
    """Every matched pair of `axis`: columns value, baseline, difference (test accuracy, a
    fraction). `runs` are completed runs with a `block` column (an index into `grids`)."""
    found = []
    for block, grid in enumerate(grids):
        values = [display_value(value) for value in grid.get(axis, ())]
        if len(values) < 2:
            continue
        inside = runs[runs[BLOCK] == block]
        others = [key for key in grid if key != axis]
        baseline = inside[inside[axis] == values[0]]
        for value in values[1:]:
            pairing: dict[str, Any] = {"on": others} if others else {"how": "cross"}  # one axis
            paired = inside[inside[axis] == value].merge(
                baseline, suffixes=("", "_baseline"), **pairing
            )
            found.append(
                pd.DataFrame(
                    {
                        "value": value,
                        "baseline": values[0],
                        "difference": paired["test_accuracy"] - paired["test_accuracy_baseline"],
                    }
                )
            )
    if not found:
        return pd.DataFrame(columns=["value", "baseline", "difference"])
    return pd.concat(found, ignore_index=True)


def axis_effects(
    runs: pd.DataFrame, grids: Sequence[Mapping[str, Sequence[Any]]], axes: Sequence[str]
) -> pd.DataFrame:
    """One row per (axis, value, baseline) with matched pairs; one row with `pairs` 0 for an
    axis that has none. `axes` are the configuration axes (no seed)."""
    from scipy.special import stdtrit  # scipy.stats's t.ppf, for a fifth of its import time

    rows: list[dict[str, Any]] = []
    for axis in axes:
        pairs = matched_differences(runs, grids, axis) if len(runs) else pd.DataFrame()
        if pairs.empty:
            rows.append(dict.fromkeys(COLUMNS, None) | {"axis": axis, "pairs": 0})
            continue
        grouped = pairs.groupby(["value", "baseline"], sort=False)["difference"]
        for (value, baseline), differences in grouped:
            points = 100 * differences.to_numpy(dtype=float)
            mean, count = float(points.mean()), len(points)
            half = (
                float(
                    stdtrit(count - 1, 0.5 + CONFIDENCE / 2) * points.std(ddof=1) / np.sqrt(count)
                )
                if count > 1
                else float("nan")
            )
            rows.append(
                {
                    "axis": axis,
                    "value": value,
                    "baseline": baseline,
                    "pairs": count,
                    "effect_test_pts": mean,
                    "ci_low_pts": mean - half,
                    "ci_high_pts": mean + half,
                }
            )
    return pd.DataFrame(rows, columns=list(COLUMNS))
