"""Per-configuration table: every grid axis but the seed, with n, mean and std over seeds."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

SUMMARY_METRICS = {"test_accuracy": "test_acc", "best_val_accuracy": "val_acc"}


def configuration_axes(axes: Sequence[str]) -> list[str]:
    return [axis for axis in axes if axis != "seed"]


def summarize(runs: pd.DataFrame, axes: Sequence[str]) -> pd.DataFrame:
    """Completed runs grouped by configuration, sorted by mean validation accuracy.

    Sorting on validation, never on test, keeps model selection honest.
    """
    done = runs[runs["status"] == "completed"] if len(runs) else runs
    keys = configuration_axes(axes)
    if done.empty:
        return pd.DataFrame(columns=[*keys, "n"])
    grouped = (
        done.groupby(keys, dropna=False, sort=False) if keys else done.groupby(lambda _: "all")
    )
    table = grouped.agg(
        n=("test_accuracy", "size"),
        **{
            f"{short}_{stat}": (column, stat)
            for column, short in SUMMARY_METRICS.items()
            for stat in ("mean", "std")
        },
        train_seconds=("train_seconds", "mean"),
    )
    table = table.sort_values(["val_acc_mean", "test_acc_mean"], ascending=False)
    return table.reset_index(drop=not keys)
