"""The cluster's limits on what one may queue, read where readable, so a large sweep is sent in
pieces the cluster accepts instead of being refused whole.

- MaxArraySize (`scontrol show config`): an array's indices are 0..MaxArraySize-1.
- MaxJobCount (`scontrol show config`): jobs slurmctld holds at once, all users together.
- MaxSubmitJobs (`sacctmgr`: the user's associations; and MaxSubmitJobsPerUser of the QOS the
  jobs use): the user's pending and running jobs, every array task counted; enforced only with
  `AccountingStorageEnforce` (limits, qos).

Every reader returns None for "unknown" (no SLURM here, or no permission), never raises.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from mnistsweep.execute.scheduler import slurm_output

TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class QueueCounts:
    """Jobs in the queue now, every array task counted once."""

    own: int = 0  # this user's
    own_in_qos: int = 0  # this user's in the QOS the sweep's jobs use
    everyone: int = 0


@dataclass(frozen=True)
class ClusterLimits:
    max_array_size: int | None = None
    max_job_count: int | None = None
    max_submit_jobs: int | None = None  # the user's association (all their jobs)
    max_submit_jobs_in_qos: int | None = None  # MaxSubmitJobsPerUser of the jobs' QOS
    qos: str = "normal"
    enforced: bool = False  # AccountingStorageEnforce applies the submit limits

    def room(self, queue: QueueCounts, feeder: bool = False) -> int | None:
        """How many more jobs (array tasks) may be queued now; None when nothing limits it.
        With `feeder`, one place is kept for a feeder job (execute.feeder): it runs in the
        user's default QOS, so it counts against the sweep's QOS only when that is `normal`."""
        kept = int(feeder)
        rooms = []
        if self.enforced and self.max_submit_jobs is not None:
            rooms.append(self.max_submit_jobs - queue.own - kept)
        if self.enforced and self.max_submit_jobs_in_qos is not None:
            in_qos = kept if self.qos == "normal" else 0
            rooms.append(self.max_submit_jobs_in_qos - queue.own_in_qos - in_qos)
        if self.max_job_count is not None:
            rooms.append(self.max_job_count - queue.everyone - kept)
        return max(0, min(rooms)) if rooms else None

    def describe(self) -> str:
        shown = {
            "MaxArraySize": self.max_array_size,
            "MaxJobCount": self.max_job_count,
            "MaxSubmitJobs": self.max_submit_jobs if self.enforced else None,
            f"QOS {self.qos} MaxSubmitJobsPerUser": (
                self.max_submit_jobs_in_qos if self.enforced else None
            ),
        }
        return ", ".join(f"{key}={value}" for key, value in shown.items() if value is not None)


def parse_config(text: str) -> dict[str, str]:
    """`scontrol show config`'s `Key = Value` lines as a mapping."""
    settings = {}
    for line in text.splitlines():
        key, separator, value = line.partition("=")
        if separator:
            settings[key.strip()] = value.strip()
    return settings


def positive(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() and int(text) > 0 else None


def tightest(values: Iterable[str]) -> int | None:
    """The smallest limit among sacctmgr's fields (empty means unlimited)."""
    limits = [number for number in map(positive, values) if number is not None]
    return min(limits) if limits else None


def qos_limit(listing: str, qos_names: Iterable[str]) -> int | None:
    """MaxSubmitJobsPerUser of the QOS the jobs use, from `Name|MaxSubmitPU` lines."""
    wanted = set(qos_names)
    return tightest(
        fields[1]
        for fields in (line.split("|") for line in listing.splitlines())
        if len(fields) >= 2 and fields[0] in wanted
    )


def user() -> str:
    return os.environ.get("USER") or getpass.getuser()


def read_limits(qos: str | None = None) -> ClusterLimits:
    """The limits that apply to this user's jobs of QOS `qos` (else the QOS `normal`). The
    three queries run at once: each sacctmgr call takes ~0.2 s of waiting on slurmdbd."""
    commands = (
        ["scontrol", "show", "config"],
        ["sacctmgr", "-n", "-P", "show", "assoc", f"user={user()}", "format=MaxSubmitJobs"],
        ["sacctmgr", "-n", "-P", "show", "qos", "format=Name,MaxSubmitPU"],
    )
    with ThreadPoolExecutor(len(commands)) as pool:
        shown, associations, qos_listing = pool.map(
            lambda command: slurm_output(command, TIMEOUT_SECONDS), commands
        )
    config = parse_config(shown or "")
    enforce = config.get("AccountingStorageEnforce", "none").lower()
    return ClusterLimits(
        max_array_size=positive(config.get("MaxArraySize")),
        max_job_count=positive(config.get("MaxJobCount")),
        max_submit_jobs=tightest((associations or "").splitlines()),
        max_submit_jobs_in_qos=qos_limit(qos_listing or "", [qos or "normal"]),
        qos=qos or "normal",
        enforced="limits" in enforce or "qos" in enforce,
    )


def queued_jobs(qos: str, listing: str | None = None) -> QueueCounts:
    """The queue now from one squeue call (`user|qos` per array task)."""
    if listing is None:
        listing = slurm_output(["squeue", "-h", "-r", "-o", "%u|%q"], TIMEOUT_SECONDS) or ""
    rows = [line.strip().split("|") for line in listing.splitlines() if line.strip()]
    own = [row for row in rows if row[0] == user()]
    in_qos = sum(1 for row in own if len(row) > 1 and row[1] == qos)
    return QueueCounts(own=len(own), own_in_qos=in_qos, everyone=len(rows))


def room_now(limits: ClusterLimits) -> int | None:
    """How many more jobs may be queued right now; None when no limit is known."""
    if limits.room(QueueCounts()) is None:
        return None
    return limits.room(queued_jobs(limits.qos))
