"""Numbers as the report prints them, and data frames as report tables."""

from __future__ import annotations

import re

import pandas as pd

from mnistsweep.report.document import Align, Table

_NUMERIC = re.compile(r"[-+±.\d\s\[\],%]*|n/a")


def missing(value: float | None) -> bool:
    return value is None or bool(pd.isna(value))


def percent(fraction: float | None) -> str:
    return "n/a" if fraction is None or pd.isna(fraction) else f"{100 * fraction:.2f}"


def one_decimal(value: float | None) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{value:.1f}"


def loss(value: float | None) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{value:.4f}"


def mean_and_std(mean: float, std: float | None) -> str:
    return percent(mean) if std is None or pd.isna(std) else f"{percent(mean)} ± {100 * std:.2f}"


def interval(low: float, high: float) -> str:
    return "n/a" if missing(low) else f"[{percent(low)}, {percent(high)}]"


def table(frame: pd.DataFrame) -> Table:
    """Cells as formatted strings; columns that read as numbers are right-aligned."""
    cells = frame.astype(str)
    align: list[Align] = [
        "right" if cells[column].str.fullmatch(_NUMERIC).all() else "left"
        for column in cells.columns
    ]
    return Table([str(column) for column in frame.columns], cells.values.tolist(), align)


def shorten(text: str, limit: int) -> str:
    """A label that fits beside a plot; the full name is in the tables."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
