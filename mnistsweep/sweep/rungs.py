"""Early stopping by asynchronous successive halving (ASHA), decided inside the jobs.

Rungs sit at min_epochs * reduction^k epochs, below the cell's last epoch. A cell that reaches
a rung records its validation metric there and goes on only if it is among the best
1/reduction of the cells of its grid block that have reached that rung so far; otherwise it
stops, keeping its checkpoint, and reads "stopped early". When later cells reach the rung and
the stopped one now ranks among the best 1/reduction, it is promoted: its marker goes, it reads
"interrupted" again, and a relaunch resumes it from its checkpoint exactly. Once every cell of
the block has reached a rung, at least one goes on, so each block finishes someone.

Every decision reads and writes `rungs/block-<i>.json` under an fcntl lock beside it: any number
of jobs on any nodes of a shared filesystem decide in turn, and no controller process runs.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from mnistsweep import fsio
from mnistsweep.errors import MnistsweepError
from mnistsweep.sweep import records
from mnistsweep.sweep.layout import RunLayout, SweepLayout
from mnistsweep.sweep.sampling import EarlyStopping

HIGHER_IS_BETTER = {"val_loss": False, "val_accuracy": True}


class StoppedEarly(MnistsweepError):
    """Raised by the trainer when a rung stops its cell: not a failure, the records stay."""

    def __init__(self, rung: int) -> None:
        super().__init__(f"stopped early at epoch {rung}")
        self.rung = rung


# --- The rule (pure) ----------------------------------------------------------------------------


def rung_epochs(options: EarlyStopping, epochs: int) -> tuple[int, ...]:
    """The epochs after which a cell of `epochs` epochs is judged: the last epoch is none."""
    rungs, rung = [], options.min_epochs
    while rung < epochs:
        rungs.append(rung)
        rung *= options.reduction
    return tuple(rungs)


def survivors(
    values: Mapping[str, float], reduction: int, *, higher_is_better: bool, block_size: int
) -> frozenset[str]:
    """The cells that go on from a rung: the best len(values) // reduction of those that reached
    it (ties by cell id, so the decision never depends on arrival order), and at least the best
    one once all `block_size` cells of the block are there."""
    count = len(values) // reduction
    if len(values) >= block_size:
        count = max(count, 1)
    sign = -1.0 if higher_is_better else 1.0
    ranked = sorted(values, key=lambda cell: (sign * values[cell], cell))
    return frozenset(ranked[:count])


# --- The records --------------------------------------------------------------------------------


class RungEntry(records.Record):
    value: float  # the metric after the rung's epoch
    promoted: bool = False  # went on (at once, or later): never taken back
    run: str  # the cell's folder name under runs/, to lift its marker on a late promotion


class BlockRungs(records.Record):
    """rungs/block-<i>.json: for each rung (epochs, as text), the cells that reached it."""

    metric: str
    reduction: int
    block_size: int
    rungs: dict[str, dict[str, RungEntry]] = Field(default_factory=dict)


class StoppedMarker(records.Record):
    """runs/<cell>/stopped-early.json: the cell waits at this rung."""

    rung: int
    metric: str
    value: float


def stopped_at(run: RunLayout) -> StoppedMarker | None:
    """The rung a cell is held at, None when it is not (state.derive asks)."""
    return records.read(StoppedMarker, run.stopped_early)


# --- Deciding, from the files -------------------------------------------------------------------


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    descriptor = fsio.open_lock(path)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


@dataclass(frozen=True)
class Halving:
    """One cell's rungs, backed by its block's record in the sweep folder."""

    sweep: SweepLayout
    run: RunLayout
    cell_id: str
    block: int
    block_size: int
    epochs: int  # the cell's full budget
    options: EarlyStopping

    def goes_on(self, epochs_done: int, history: Mapping[str, list[float]]) -> bool:
        """Before training epoch `epochs_done + 1`: False when a rung stops the cell there.
        Idempotent: a resumed cell asks again and gets the decision on record."""
        if epochs_done not in rung_epochs(self.options, self.epochs):
            return True
        value = history[self.options.metric][epochs_done - 1]
        with _locked(self.sweep.rungs_lock(self.block)):
            record = self._read()
            rung = record.rungs.setdefault(str(epochs_done), {})
            rung.setdefault(self.cell_id, RungEntry(value=value, run=self.run.root.name))
            going = survivors(
                {cell: entry.value for cell, entry in rung.items()},
                self.options.reduction,
                higher_is_better=HIGHER_IS_BETTER[self.options.metric],
                block_size=self.block_size,
            )
            promoted = [cell for cell in going if not rung[cell].promoted]
            for cell in promoted:
                rung[cell].promoted = True
            records.write(self.sweep.rungs(self.block), record)
            for cell in promoted:
                self.sweep.run_named(rung[cell].run).stopped_early.unlink(missing_ok=True)
            mine = rung[self.cell_id]
            if not mine.promoted:
                marker = StoppedMarker(rung=epochs_done, metric=self.options.metric, value=value)
                records.write(self.run.stopped_early, marker)
            return mine.promoted

    def _read(self) -> BlockRungs:
        found = records.read(BlockRungs, self.sweep.rungs(self.block))
        return found or BlockRungs(
            metric=self.options.metric,
            reduction=self.options.reduction,
            block_size=self.block_size,
        )
