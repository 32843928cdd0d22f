"""A launch from request to outcome: resolve the backend, plan under the sweep's launch lock, let
the backend run or submit the batches, and hand back a typed outcome for the command line."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnistsweep import fsio
from mnistsweep.errors import MnistsweepError
from mnistsweep.execute import backends
from mnistsweep.execute import plan as planning
from mnistsweep.execute.backend import Backend, LaunchEvents, LaunchOutcome
from mnistsweep.sweep import state as cell_state
from mnistsweep.sweep.layout import SweepLayout
from mnistsweep.sweep.spec import Cell, Spec
from mnistsweep.train import data

LOCK_WAIT_SECONDS = 60  # another launch of the sweep submits in seconds


@dataclass(frozen=True)
class LaunchRequest:
    """A launch as the user asked for it: the spec with its overrides applied."""

    spec: Spec
    results_dir: Path
    data_dir: Path | None = None
    retry_failed: bool = False  # train failed cells again
    only: Mapping[str, Sequence[Any]] = field(default_factory=dict)  # axis -> values to train
    wait: bool = False  # a cluster launch stays until every job ends
    # the data check the command started before planning (None: check when asked)
    data_checking: data.BackgroundCheck | None = field(default=None, compare=False)

    def check_data(self) -> None:
        """Raise when the data is missing or altered: the launch fails, not every job."""
        if self.data_checking is None:
            data.load(self.data_dir)
        else:
            self.data_checking.wait()

    @property
    def layout(self) -> SweepLayout:
        return SweepLayout.of(self.results_dir, self.spec.name)


@dataclass(frozen=True)
class LaunchSession:
    """What a backend launches with: the request, its events, and fresh plans under the lock."""

    request: LaunchRequest
    backend: Backend
    events: LaunchEvents

    def plan(self) -> planning.Plan:
        request = self.request
        return planning.plan_launch(
            request.spec, request.results_dir, self.backend, request.retry_failed, request.only
        )

    @contextmanager
    def planned(
        self, announce: bool = True, wait_seconds: float = LOCK_WAIT_SECONDS
    ) -> Iterator[planning.Plan]:
        """Under the launch lock, a plan made now (told to the user unless `announce` is off):
        cells a live job covers are never given to a second one."""
        with launch_lock(self.request.layout, wait_seconds):
            plan = self.plan()
            if announce:
                self.events.planned(plan)
            yield plan

    def ended(self, plan: planning.Plan, cells: Sequence[Cell]) -> LaunchOutcome:
        """The outcome once every one of `cells` ended: each cell's state, its job's included
        (a setup line that failed, an out-of-memory kill, a cancel)."""
        layout = SweepLayout(plan.sweep_dir)
        known = planning.cell_views(layout, cells)
        views = tuple(
            (cell, known.get(cell.id) or cell_state.derive(layout.run(cell))) for cell in cells
        )
        return LaunchOutcome(plan, tuple(cells), views)


def launch(request: LaunchRequest, events: LaunchEvents) -> LaunchOutcome:
    """Train or submit every planned cell; once they ended, the outcome holds their states."""
    backend = backends.resolve(request.spec.executor.backend)
    return backend.launch(LaunchSession(request, backend, events))


@dataclass(frozen=True)
class DryRun:
    plan: planning.Plan
    details: list[str]  # the backend's own lines: what it would submit, warnings


def dry_run(request: LaunchRequest, events: LaunchEvents) -> DryRun:
    backend = backends.resolve(request.spec.executor.backend)
    plan = LaunchSession(request, backend, events).plan()
    return DryRun(plan, backend.dry_run(plan, request.data_dir))


class LockHeld(MnistsweepError):
    """Another launch (or feeder) of the sweep holds its launch lock."""


@contextmanager
def launch_lock(layout: SweepLayout, wait_seconds: float = LOCK_WAIT_SECONDS) -> Iterator[None]:
    """One launch of a sweep plans and submits at a time, so two cannot both submit its cells.
    A launch that created the sweep folder and fails leaves no folder behind."""
    created = [f for f in (layout.root, *layout.root.parents) if not (f.exists() or f.is_symlink())]
    descriptor = fsio.open_lock(layout.launch_lock)
    try:
        take_lock(descriptor, layout, wait_seconds)
        try:
            yield
        except BaseException:
            if created and os.listdir(layout.root) == [layout.launch_lock.name]:
                layout.launch_lock.unlink()
                for folder in created:  # the sweep folder, then the results folder...
                    with contextlib.suppress(OSError):
                        folder.rmdir()
            raise
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)


def take_lock(descriptor: int, layout: SweepLayout, wait_seconds: float) -> None:
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise LockHeld(
                    f"{layout.root}: another launch of this sweep is still submitting; "
                    "launch again once it is done"
                ) from None
            time.sleep(0.5)
