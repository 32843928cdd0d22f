"""Every path inside a sweep folder, and nothing else: the one place that joins them.

```
<results-dir>/<sweep name>/
  sweep.json  spec.yaml  jobs.jsonl  .launch.lock        what was launched, and where it went
  feeding.json                                           what waits to be sent (execute.feeder)
  cancelled.json                                         the arrays `mnistsweep cancel` stopped
  runs/<cell-name>--<id>/                                one folder per cell (RunLayout)
  code/<launch time>/mnistsweep/                         the code the jobs import
  submitit/<array id>/                                   submitit's pickles and task logs
  summary.csv  ensemble.json  report.md  report.html     what aggregate and report write
  report_files/                                          figures and tables of the report
  .cache/                                                compiled programs shared by the jobs
```
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mnistsweep import fsio

if TYPE_CHECKING:
    from mnistsweep.sweep.spec import Cell


@dataclass(frozen=True)
class RunLayout:
    """One cell's folder: the unit of truth for everything a later stage needs."""

    root: Path
    sweep_root: Path | None = None  # the sweep folder, for the no-symlink check on creation

    @property
    def result(self) -> Path:
        """Written last and atomically: its presence means the run is final."""
        return self.root / "result.json"

    @property
    def state(self) -> Path:
        """The resume point: which epoch is committed, and the files that hold it."""
        return self.root / "state.json"

    @property
    def history(self) -> Path:
        return self.root / "history.json"

    @property
    def model(self) -> Path:
        return self.root / "model.keras"

    @property
    def val_probs(self) -> Path:
        return self.root / "probs_val.npy"

    @property
    def test_probs(self) -> Path:
        return self.root / "probs_test.npy"

    @property
    def summary(self) -> Path:
        return self.root / "summary.txt"

    @property
    def error(self) -> Path:
        return self.root / "error.txt"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tb"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    @property
    def stopped_early(self) -> Path:
        """Present while successive halving holds the cell at a rung (sweep/rungs.py)."""
        return self.root / "stopped-early.json"

    def checkpoint_after(self, epochs_done: int) -> Path:
        return self.root / f"checkpoint-{epochs_done:04d}.keras"

    def best_weights_of(self, epoch: int) -> Path:
        return self.root / f"best-{epoch:04d}.weights.h5"

    def training_state_after(self, epochs_done: int) -> Path:
        """Every model and optimizer variable after `epochs_done` epochs: the exact resume point
        (and, while its validation loss is the lowest, the best state too)."""
        return self.root / f"checkpoint-{epochs_done:04d}.npz"

    def named(self, name: str | None) -> Path:
        """A file that a record names: kept inside this folder whatever the record says."""
        return self.root / (Path(name).name if name else "missing")

    def failed_attempt(self, path: Path, stamp: str) -> Path:
        """Where a failed attempt's record is kept aside before a retry."""
        return path.with_name(f"failed-{stamp}-{path.name}")

    TRAINING_FILES = ("checkpoint-*.keras", "checkpoint-*.npz", "best-*.weights.h5", ".tmp-*")

    # Every file a run folder holds, by what an archive does with it (the one list: a new file
    # of a run folder goes into one of these, or a test says it is left out of archives).
    RESULT_FILES = (  # what tables, ensembles and the report read: always archived
        "result.json",
        "history.json",
        "summary.txt",
        "error.txt",
        "probs_val.npy",
        "probs_test.npy",
    )
    PROBABILITY_FILES = ("probs_val.npy", "probs_test.npy")
    MODEL_FILES = ("model.keras",)  # archived on request (--with-models)
    TENSORBOARD = "tb"  # a folder of event files, archived on request (--with-tensorboard)
    # An unfinished cell's resume point: its state and the training states it names, archived on
    # request (--with-resume-points) so that a relaunch elsewhere goes on from its last epoch.
    RESUME_FILES = ("state.json", "checkpoint-[0-9][0-9][0-9][0-9].npz")
    # Successive halving's hold on the cell (kept beside rungs/, which stays out too), the
    # training's other files and failed attempts: never archived.
    NOT_ARCHIVED = ("stopped-early.json", ".lock", "failed-*", *TRAINING_FILES)

    @classmethod
    def is_resume_file(cls, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in cls.RESUME_FILES)

    def create(self) -> Path:
        return fsio.ensure_dir(self.root, self.sweep_root)


@dataclass(frozen=True)
class SweepLayout:
    root: Path

    @classmethod
    def of(cls, results_dir: Path, name: str) -> SweepLayout:
        return cls(results_dir / name)

    # --- what was launched ---------------------------------------------------------------------
    @property
    def record(self) -> Path:
        return self.root / "sweep.json"

    @property
    def spec_copy(self) -> Path:
        return self.root / "spec.yaml"

    @property
    def jobs(self) -> Path:
        return self.root / "jobs.jsonl"

    @property
    def launch_lock(self) -> Path:
        return self.root / ".launch.lock"

    @property
    def feeding(self) -> Path:
        """Jobs the queue had no room for yet, and the feeder job that sends them later."""
        return self.root / "feeding.json"

    @property
    def cancelled(self) -> Path:
        return self.root / "cancelled.json"

    # --- the cells -----------------------------------------------------------------------------
    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def run(self, cell: Cell) -> RunLayout:
        return RunLayout(self.runs / cell.dirname, self.root)

    def run_named(self, dirname: str) -> RunLayout:
        return RunLayout(self.runs / Path(dirname).name, self.root)

    def run_folders(self) -> list[RunLayout]:
        """Every cell folder present (not links), listed once: one listing, not one open per
        cell, which matters on a cluster's shared filesystem."""
        if self.runs.is_symlink() or not self.runs.is_dir():
            return []
        with os.scandir(self.runs) as entries:
            names = sorted(entry.name for entry in entries if entry.is_dir(follow_symlinks=False))
        return [RunLayout(self.runs / name, self.root) for name in names]

    # --- where jobs run ------------------------------------------------------------------------
    def code_snapshot(self, stamp: str) -> Path:
        """What a launch's jobs put first on their path (and run in)."""
        return self.root / "code" / stamp

    def code_package(self, stamp: str) -> Path:
        return self.code_snapshot(stamp) / "mnistsweep"

    @property
    def submitit(self) -> Path:
        """submitit's folder pattern: one folder per array (`%A`), not one per task."""
        return self.root / "submitit" / "%A"

    def task_log(self, job_id: str, stream: str = "err") -> Path:
        """A task's log as submitit names it: `submitit/<array>/<job id>_0_log.<out|err>`."""
        array = job_id.split("_")[0]
        return self.root / "submitit" / array / f"{job_id}_0_log.{stream}"

    @property
    def local_submitit(self) -> Path:
        return self.root / "submitit" / "local"

    @property
    def local_controller_log(self) -> Path:
        """What submitit's local job controllers print (their tasks log beside it)."""
        return self.local_submitit / "controllers.err"

    def rungs(self, block: int) -> Path:
        """Successive halving's record of one grid block: each rung's cells and decisions."""
        return self.root / "rungs" / f"block-{block}.json"

    def rungs_lock(self, block: int) -> Path:
        return self.root / "rungs" / f"block-{block}.lock"

    @property
    def compile_cache(self) -> Path:
        return self.root / ".cache" / "jax"

    # --- what aggregate and report write -------------------------------------------------------
    @property
    def summary_csv(self) -> Path:
        return self.root / "summary.csv"

    @property
    def ensemble(self) -> Path:
        return self.root / "ensemble.json"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    @property
    def report_files(self) -> Path:
        return self.root / "report_files"

    def report_file(self, name: str) -> Path:
        return self.report_files / Path(name).name

    def create(self, folder: Path | None = None) -> Path:
        """Create the sweep folder, or one of its folders, refusing symlinks inside it."""
        return fsio.ensure_dir(folder or self.root, self.root)
