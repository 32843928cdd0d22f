"""A pace for the trainer, set only by tests: live scheduler events at the same epochs anywhere.

A live test of a requeue or a time limit races the scheduler against the training: on a fast
machine the cell ends before the event lands, on a slow one the event lands before an epoch is
committed. With a pace, each epoch lasts at least `EPOCH_SECONDS_ENV` seconds (a small
`train_subset` keeps the work itself far below that on any machine), and one attempt (one
process) trains at most `EPOCHS_PER_ATTEMPT_ENV` epochs, then waits for the scheduler to stop it.
So a 12-epoch cell at 2 epochs per attempt meets exactly 5 time limits on a slow, a busy and a
fast machine. Unset, as for every user, the trainer runs at its own speed.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass

EPOCH_SECONDS_ENV = "MNISTSWEEP_PACE_EPOCH_SECONDS"
EPOCHS_PER_ATTEMPT_ENV = "MNISTSWEEP_PACE_EPOCHS_PER_ATTEMPT"
# How long an attempt that has trained its share waits for the scheduler before it goes on: far
# beyond any test's time limit, so a test that forgot its limit still ends.
WAIT_FOR_SCHEDULER_SECONDS = 900.0


@dataclass(frozen=True)
class Pace:
    epoch_seconds: float = 0.0
    epochs_per_attempt: int | None = None

    @classmethod
    def from_environment(cls) -> Pace:
        seconds = _number(EPOCH_SECONDS_ENV)
        per_attempt = _number(EPOCHS_PER_ATTEMPT_ENV)
        return cls(seconds or 0.0, int(per_attempt) if per_attempt else None)

    def after_epoch(self, started: float, trained_this_attempt: int, epochs_left: int) -> None:
        """Called once an epoch is committed: fill the epoch up to its pace, and once this
        attempt has trained its share (with epochs left to train) wait to be stopped."""
        time.sleep(max(0.0, started + self.epoch_seconds - time.perf_counter()))
        share = self.epochs_per_attempt
        if share is not None and trained_this_attempt >= share and epochs_left > 0:
            print(
                f"mnistsweep: pace: {trained_this_attempt} epoch(s) trained in this attempt; "
                "waiting for the scheduler",
                file=sys.stderr,
                flush=True,
            )
            time.sleep(WAIT_FOR_SCHEDULER_SECONDS)


def _number(name: str) -> float | None:
    try:
        value = float(os.environ.get(name, ""))
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None
