"""What every executor backend implements, and what a launch hands back to the command line.

Backends differ by class, never by `if backend == ...` branches (as submitit's executors do): a
backend says how many cells one job trains and how planned batches reach a machine; planning,
the launch lock and the outcome are shared (execute.launch). A new backend is a subclass in its
own module, one line in execute.backends and its name in sweep.spec.EXECUTOR_BACKENDS.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol

if TYPE_CHECKING:
    from mnistsweep.execute.launch import LaunchSession
    from mnistsweep.execute.plan import Plan
    from mnistsweep.sweep.spec import Cell, Spec
    from mnistsweep.sweep.state import CellState, CellView


class LaunchEvents(Protocol):
    """How a launch tells its user what happens while it happens (the command line prints)."""

    def planned(self, plan: Plan) -> None:
        """A plan was made under the launch lock, before anything is trained or submitted."""

    def say(self, line: str) -> None:
        """One plain line of news: a submission, a warning, a wait for room in the queue."""

    def watch(self, plan: Plan, cells: Sequence[Cell], detached: bool) -> Callable[[], bool]:
        """A callable polled while `cells` train, true once all have ended; `detached`: they
        train in jobs that go on when this launch stops."""


@dataclass(frozen=True)
class LaunchOutcome:
    """What a launch did, for the command line to print."""

    plan: Plan
    waited_for: tuple[Cell, ...] = ()  # cells this launch trains or leaves to live jobs
    ended: tuple[tuple[Cell, CellView], ...] | None = None  # their states, once all ended
    jobs_left: int = 0  # jobs the queue had no room for: a later launch submits them
    queue_limits: str = ""  # the cluster's limits that left them out
    feeder: str = ""  # the feeder job that submits them as room frees (execute.feeder)

    @property
    def counts(self) -> Counter[CellState]:
        return Counter(view.state for _, view in self.ended or ())

    @property
    def elsewhere(self) -> int:
        """Cells still training in another launch."""
        return sum(n for state, n in self.counts.items() if state.is_live)

    @property
    def unfinished(self) -> int:
        """Cells that ended without a result and are not live either."""
        return sum(
            n
            for state, n in self.counts.items()
            if not (state.is_final or state.is_ended_badly or state.is_live)
        )

    @property
    def ended_badly(self) -> list[tuple[Cell, CellView]]:
        return [(cell, view) for cell, view in self.ended or () if view.state.is_ended_badly]


class Backend(ABC):
    """One way of running a plan's batches: on this machine, on a cluster."""

    name: ClassVar[str]  # as the spec and --executor spell it

    @classmethod
    def unavailable(cls) -> str | None:
        """Why this backend cannot run here (a missing command); None when it can."""
        return None

    @abstractmethod
    def cells_per_job(self, spec: Spec, todo: int) -> int:
        """How many of the `todo` cells one job trains, unless the spec says."""

    @abstractmethod
    def launch(self, session: LaunchSession) -> LaunchOutcome:
        """Plan under the session's lock, run or submit the batches, and say what happened."""

    def dry_run(self, plan: Plan, data_dir: Path | None) -> list[str]:
        """What a dry run shows beyond the cells: what would be submitted, and any warning."""
        return []
