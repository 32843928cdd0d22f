"""The records a sweep keeps on disk, each with one reader and one writer.

| record        | file                          | written by                    |
|---------------|-------------------------------|-------------------------------|
| SweepRecord   | sweep.json                    | launch (sweep.guard)          |
| JobRecord     | jobs.jsonl, one line per job  | launch (execute.slurm)        |
| RunState      | runs/<cell>/state.json        | the trainer, once per epoch   |
| RunResult     | runs/<cell>/result.json       | the trainer or the job, last  |
| RunHistory    | runs/<cell>/history.json      | the trainer                   |
| EnsembleRecord| ensemble.json                 | the report (analysis.ensemble)|

Reading validates shape and types: a file that is missing, half-written or of the wrong shape is
a `DamagedRecord` naming the file and what is wrong, which callers turn into a warning and a
skipped run — never a traceback. Unknown keys are ignored, so folders written by older versions
of mnistsweep still read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    RootModel,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from mnistsweep import fsio
from mnistsweep.errors import MnistsweepError
from mnistsweep.sweep.yaml_loader import shown

JsonScalar = str | int | float | bool | None
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Count = Annotated[int, Field(ge=0)]
RunStatus = Literal["completed", "diverged", "failed"]
# How a run's training steps were computed (mnistsweep.train.runtime.training_path): one XLA
# program (TensorFlow with jit_compile, or JAX), or TensorFlow's own kernels with op determinism.
TrainingPath = Literal["tensorflow-xla", "tensorflow-kernels", "jax-xla"]
MAX_RECORD_BYTES = 64 * 1024 * 1024


class DamagedRecord(MnistsweepError):
    """A record file that exists but cannot be used; the message names it and says why."""


class Record(BaseModel):
    model_config = ConfigDict(extra="ignore", validate_assignment=True)


# --- sweep.json ----------------------------------------------------------------------------------


class SweepRecord(Record):
    """What a sweep folder was filled from: aggregate, report and status read the axes here."""

    name: str
    axes: list[str]
    fingerprint: str = ""
    spec_path: str = ""
    grid: list[dict[str, list[JsonScalar]]] = Field(default_factory=list)
    train: dict[str, JsonScalar] = Field(default_factory=dict)
    ensemble_top_k: Annotated[int, Field(ge=1)] = 4
    cells: Count = 0

    @field_validator("grid", mode="before")
    @classmethod
    def _one_grid_or_several(cls, value: Any) -> Any:
        return [value] if isinstance(value, dict) else value

    @field_validator("axes")
    @classmethod
    def _train_keys(cls, axes: list[str]) -> list[str]:
        """Every reader groups and names runs by these: an unknown one is a damaged record."""
        from mnistsweep.sweep.spec import TRAIN_SETTINGS  # the spec's schema owns the keys

        for axis in axes:
            if axis not in TRAIN_SETTINGS:
                raise PydanticCustomError(
                    "axis", f"{shown(axis)} is no train key; allowed: {', '.join(TRAIN_SETTINGS)}"
                )
        return axes


# --- jobs.jsonl ----------------------------------------------------------------------------------


class JobRecord(Record):
    """One submitted job (an array task, or a plain job) and the cells it trains."""

    job_id: Annotated[str, Field(pattern=r"^[0-9]+(_[0-9]+)?$")]
    cells: list[str]
    submitted: str
    sweep_dir: str = ""  # the resolved folder that submitted it: a copy of it never acts on it


# --- feeding.json --------------------------------------------------------------------------------


class FeedingRecord(Record):
    """What the queue had no room for at the last submission round, and who sends it later."""

    cells_left: Count
    jobs_left: Count
    limits: str  # the cluster's limits that held them back
    feeder: Annotated[str, Field(pattern=r"^([0-9]+)?$")] = ""  # its job id; "" when none


# --- cancelled.json ------------------------------------------------------------------------------


class CancelRecord(Record):
    """The arrays `mnistsweep cancel` stopped: their cells read cancelled even where accounting
    can no longer say so (slurmdbd down, the jobs purged from it)."""

    arrays: list[Annotated[str, Field(pattern=r"^[0-9]+$")]] = Field(default_factory=list)


# --- runs/<cell>/state.json -----------------------------------------------------------------------


class RunState(Record):
    """The resume point, rewritten at the end of every epoch (the epoch's commit point).

    The checkpoint and best weights it names were written under new names first, so a kill
    between writes cannot leave a checkpoint ahead of (or behind) the state that describes it.
    """

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    cell_id: str
    epochs_done: Count = 0
    best_val_loss: float = math.inf
    best_epoch: Count | None = None
    history: dict[str, list[float]] = Field(default_factory=dict)
    resumed_at: list[Count] = Field(default_factory=list)
    checkpoint: str | None = None
    best_weights: str | None = None
    diverged_at: Count | None = None


# --- runs/<cell>/result.json ----------------------------------------------------------------------


class RunMetrics(Record):
    best_val_loss: float | None = None
    best_epoch: Count | None = None
    epochs_run: Count = 0
    final_train_accuracy: float | None = None
    test_accuracy: Fraction | None = None
    test_loss: float | None = None
    best_val_accuracy: Fraction | None = None


class RunTiming(Record):
    epoch_seconds: list[float] = Field(default_factory=list)
    total_seconds: float | None = None
    wall_seconds_this_attempt: float | None = None
    finished: str | None = None
    # The first epoch of an attempt also traces and compiles; the median of the others is the
    # steady speed (None with a single epoch).
    first_epoch_seconds: float | None = None
    steady_epoch_seconds: float | None = None
    peak_rss_mb: float | None = None  # the training process's peak resident memory
    gpu_peak_mb: float | None = None  # the accelerator's peak, where the backend reports one
    # Where this attempt's wall time went: startup, data, model, train, validation, ...
    stages: dict[str, float] = Field(default_factory=dict)
    training_path: TrainingPath | None = None  # None in results written before it was recorded


class Provenance(Record):
    """What made a result, so that it can be traced and trusted (the report's footer shows it).

    `git_commit` and `git_dirty` (uncommitted changes in the package) where the package ran from
    a git checkout, None elsewhere (e.g. a launch's code snapshot; `package_version` and
    `code_sha256` still identify it); `code_sha256` hashes every file of the package that ran;
    `data_sha256` is the SHA-256 of the data file (mnist.npz) read; `versions` the libraries.
    """

    git_commit: str | None = None
    git_dirty: bool | None = None
    package_version: str
    code_sha256: str
    data_sha256: str | None = None
    versions: dict[str, str] = Field(default_factory=dict)


class RunResult(Record):
    """A run's outcome. `completed` carries test and validation accuracy; `failed` its error.
    `provenance` is None in results written before it was recorded, and in failed results."""

    status: RunStatus
    cell_id: str
    cell_name: str
    axes: list[str] = Field(default_factory=list)
    config: dict[str, JsonScalar]
    metrics: RunMetrics = Field(default_factory=RunMetrics)
    timing: RunTiming = Field(default_factory=RunTiming)
    params: dict[str, int] | None = None
    resumed_at_epochs: list[Count] = Field(default_factory=list)
    diverged_at_epoch: Count | None = None
    env: dict[str, Any] | None = None
    provenance: Provenance | None = None
    error: str | None = None
    error_tail: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)  # e.g. a damaged checkpoint, retrained

    @model_validator(mode="after")
    def _completed_has_scores(self) -> RunResult:
        if self.status == "completed" and (
            self.metrics.test_accuracy is None or self.metrics.best_val_accuracy is None
        ):
            raise ValueError("a completed run without test_accuracy and best_val_accuracy")
        return self

    @property
    def is_final(self) -> bool:
        """Completed or diverged: relaunching the sweep does not train it again."""
        return self.status in ("completed", "diverged")


# --- runs/<cell>/history.json ---------------------------------------------------------------------


def _a_number(value: object) -> object:
    """A number as such: pydantic would also take `true` or `"0.5"` for a float."""
    if isinstance(value, bool | str):
        raise ValueError(f"expected a number, got {shown(value)}")
    return value


Metric = Annotated[float, BeforeValidator(_a_number)]


class RunHistory(RootModel[dict[str, list[Metric]]]):
    """Per-epoch lists, one per Keras metric (loss, accuracy, val_loss, val_accuracy), and the
    seconds each epoch took: a flat mapping, as Keras's own History holds it."""


# --- ensemble.json --------------------------------------------------------------------------------


class EnsembleMember(Record):
    run_dir: str
    cell_name: str
    arch: str
    weight: Annotated[int, Field(ge=1)]  # times chosen (greedy, with replacement)
    best_val_accuracy: float
    test_accuracy: float


class Scores(Record):
    method: str  # greedy | top-k | single
    size: Count  # distinct members
    val_accuracy: float
    val_loss: float
    test_accuracy: float
    test_loss: float


class EnsembleScores(Scores):
    members: list[EnsembleMember] = Field(default_factory=list)


class ArchitectureEnsemble(Scores):
    """One architecture's own headline, beside its best single run."""

    helps: bool
    single_val_accuracy: float
    single_test_accuracy: float
    members: list[str]  # cell names
    weights: list[int]


class EnsembleRecord(EnsembleScores):
    """The report's ensemble views; the top-level scores and members are the headline's."""

    helps: bool  # a rule other than the best single run won on validation
    selection: str  # how the rules were chosen and scored
    held_out_accuracy: dict[str, float | None] = Field(default_factory=dict)
    four_models: EnsembleScores | None = None
    library_size: Count = 0
    best_single: EnsembleScores | None = None
    greedy: EnsembleScores | None = None
    greedy_curve: list[dict[str, int | float]] = Field(default_factory=list)
    requested_top_k: Count = 0
    top_k: EnsembleScores | None = None
    top_k_curve: list[dict[str, int | float]] = Field(default_factory=list)
    per_architecture: dict[str, ArchitectureEnsemble] = Field(default_factory=dict)
    problems: list[str] = Field(default_factory=list)


# --- reading and writing --------------------------------------------------------------------------


R = TypeVar("R", bound=BaseModel)


def describe(error: ValidationError) -> str:
    """pydantic's first complaint as `key.path: message` on one line."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "(top level)"
    return f"{where}: {first['msg']}"


def parse(kind: type[R], content: Any, origin: Path) -> R:
    try:
        return kind.model_validate(content)
    except ValidationError as error:
        raise DamagedRecord(f"{origin}: {describe(error)}") from None


def read(kind: type[R], path: Path) -> R | None:
    """The record in `path`, None when there is no such file; DamagedRecord when unusable."""
    text = fsio.read_text(path, MAX_RECORD_BYTES)
    if text is None:
        if not path.exists() and not path.is_symlink():
            return None
        raise DamagedRecord(f"{path}: unreadable (a link, a folder, or too large)")
    try:  # pydantic parses the JSON itself: twice as fast as json.loads, then validate
        return kind.model_validate_json(text)
    except ValidationError as error:
        first = error.errors()[0]
        if first["type"] == "json_invalid":
            raise DamagedRecord(f"{path}: not JSON ({first['msg']})") from None
        raise DamagedRecord(f"{path}: {describe(error)}") from None


def write(path: Path, record: BaseModel) -> Path:
    """The one writer of every record: validated on the way out, atomic."""
    return fsio.write_json(path, record.model_dump(mode="json"))


def read_jobs(path: Path) -> tuple[list[JobRecord], list[str]]:
    """Every valid line of jobs.jsonl, and a problem for each line that is not one (a half-written
    last line from a killed launch is one of those)."""
    text = fsio.read_text(path, MAX_RECORD_BYTES)
    if text is None:
        return [], ([f"{path}: unreadable"] if path.exists() else [])
    jobs, problems = [], []
    for number, line in enumerate(text.split("\n"), start=1):  # not splitlines: JSON Lines
        if not line.strip():
            continue
        try:
            jobs.append(parse(JobRecord, json.loads(line), path))
        except (ValueError, DamagedRecord) as error:
            detail = str(error).removeprefix(f"{path}: ")
            problems.append(f"{path}: line {number}: {detail} (ignored)")
    return jobs, problems


def append_job(path: Path, job: JobRecord) -> None:
    append_jobs(path, [job])


def append_jobs(path: Path, jobs: Sequence[JobRecord]) -> None:
    """One write for a whole submission's jobs."""
    fsio.append_lines(path, [job.model_dump_json() for job in jobs])


def job_owners(jobs: list[JobRecord]) -> dict[str, str]:
    """cell id -> the latest job that was given that cell."""
    return {cell_id: job.job_id for job in jobs for cell_id in job.cells}
