"""Sweep spec: the schema of a YAML sweep file, and the expansion of its grid into cells.

A spec is the contract between the user and the sweep. The pydantic models below are its schema;
every problem is reported as one line that names the file, the key and what is allowed, so a typo
never costs a GPU-hour.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import itertools
import json
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    Strict,
    ValidationError,
    field_validator,
)
from pydantic import dataclasses as pydantic_dataclasses
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from mnistsweep.errors import MnistsweepError
from mnistsweep.sweep import sampling
from mnistsweep.sweep.sampling import EarlyStopping, SampledAxes, SamplingError, SearchOptions
from mnistsweep.sweep.yaml_loader import (
    CONTROL_CHARACTERS,
    ListTooLong,
    YamlError,
    printable,
    read_yaml,
    shown,
)
from mnistsweep.vocabulary import ARCHITECTURE_NAMES, AUGMENTATION_NAMES, NORMALIZATION_NAMES

# Above this many cells a spec is refused unless the caller forces it: a typo such as
# `seed: [0, ..., 999]` in three axes should not flood a cluster's queue.
MAX_CELLS = 10_000
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
LR_SCHEDULES = ("constant", "cosine", "exponential")
EXECUTOR_BACKENDS = ("auto", "local", "slurm")


class SpecError(MnistsweepError):
    """A spec problem: the message names the file, the key and the allowed values."""


# --- Value types. Each Field's description is what an error line says is expected. ------------


def _integer(low: int, high: int, *, nullable: bool = False) -> FieldInfo:
    text = f"an integer in [{low}, {high}]" + (" or null" * nullable)
    return Field(ge=low, le=high, description=text)


def _number(
    low: float, high: float, *, low_open: bool = False, nullable: bool = False
) -> FieldInfo:
    text = f"a number in {'(' if low_open else '['}{low}, {high}]" + (" or null" * nullable)
    if low_open:
        return Field(gt=low, le=high, allow_inf_nan=False, description=text)
    return Field(ge=low, le=high, allow_inf_nan=False, description=text)


def _one_of(names: Sequence[str], also: str = "") -> FieldInfo:
    choices = "|".join(re.escape(name) for name in names)
    return Field(pattern=f"^(?:{choices})$", description="one of " + ", ".join(names) + also)


def _augment_shorthand(value: object) -> object:
    """`augment: true/false` is shorthand for the fancy_cnn tutorial's augmentation or none."""
    if isinstance(value, bool):
        return "standard" if value else "none"
    return value


def _single_line(value: str) -> str:
    """For a string that reaches a job name or a line of the sbatch script."""
    if CONTROL_CHARACTERS.search(value):
        raise ValueError("control character")
    return value


Int = Annotated[int, Strict()]
Number = Annotated[float, Strict()]
Text = Annotated[str, Strict()]
SlurmText = Annotated[str, Strict(), AfterValidator(_single_line), Field(pattern=r"\S")]
_SLURM_TEXT = Field(description="a non-empty single-line string")


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_DATACLASS_CONFIG = ConfigDict(extra="forbid")


# --- The schema --------------------------------------------------------------------------------


# The train settings, one type each: a grid axis is a list of the same type.
Arch = Annotated[Text, _one_of(ARCHITECTURE_NAMES)]
Normalization = Annotated[Text, _one_of(NORMALIZATION_NAMES)]
Dropout = Annotated[Number | None, _number(0.0, 0.9, nullable=True)]
Seed = Annotated[Int, _integer(0, 2**31 - 1)]
Epochs = Annotated[Int, _integer(1, 10_000)]
BatchSize = Annotated[Int, _integer(1, 60_000)]
LearningRate = Annotated[Number, _number(0.0, 10.0, low_open=True)]
LrSchedule = Annotated[Text, _one_of(LR_SCHEDULES)]
MNIST_TRAIN_IMAGES = 60_000  # the training split the validation share is cut from


def _leaves_validation_images(share: float) -> float:
    """The job rounds the share to whole images (as the trainer does): a share that rounds to
    none is refused with the spec, not after the job has queued and loaded the data."""
    if round(MNIST_TRAIN_IMAGES * share) == 0:
        raise PydanticCustomError(
            "spec",
            f"{share!r} leaves no validation image of the {MNIST_TRAIN_IMAGES:,} "
            f"(a share above {1 / (2 * MNIST_TRAIN_IMAGES):.2g} leaves one; e.g. 0.1)",
        )
    return share


ValidationSplit = Annotated[
    Number, _number(0.0, 0.5, low_open=True), AfterValidator(_leaves_validation_images)
]
Augment = Annotated[
    Text, _one_of(AUGMENTATION_NAMES, " (or true/false)"), BeforeValidator(_augment_shorthand)
]
L2 = Annotated[Number, _number(0.0, 1.0)]
TrainSubset = Annotated[Int | None, _integer(10, 60_000, nullable=True)]


class TrainConfig(_Schema):
    """Every setting of one training."""

    arch: Arch = "fancy_cnn"  # network from the registry
    normalization: Normalization = "standardize"  # input scaling
    dropout: Dropout = None  # null: the tutorial's own
    seed: Seed = 0  # weights, shuffling and augmentation
    epochs: Epochs = 20  # passes over the training split
    batch_size: BatchSize = 128  # images per step
    learning_rate: LearningRate = 1e-3  # Adam's initial rate
    lr_schedule: LrSchedule = "constant"  # decay over the epochs
    validation_split: ValidationSplit = 0.1  # last share of the training split held out
    augment: Augment = "none"  # random distortions while training
    l2: L2 = 0.0  # kernel weight decay
    train_subset: TrainSubset = None  # first N images only


T = TypeVar("T")
Axis = Annotated[list[T], Field(min_length=1)]


BlockLabel = Annotated[
    str,
    Strict(),
    AfterValidator(_single_line),
    Field(pattern=r"\S", max_length=80),
]


class GridBlock(_Schema):
    """One grid: train keys mapped to non-empty lists of distinct values (empty: not an axis),
    and an optional `label` naming the study it is (the report's heading; not part of any id)."""

    label: BlockLabel | None = Field(
        default=None, description="a non-empty single-line string of at most 80 characters"
    )
    arch: Axis[Arch] = Field(default_factory=list)
    normalization: Axis[Normalization] = Field(default_factory=list)
    dropout: Axis[Dropout] = Field(default_factory=list)
    seed: Axis[Seed] = Field(default_factory=list)
    epochs: Axis[Epochs] = Field(default_factory=list)
    batch_size: Axis[BatchSize] = Field(default_factory=list)
    learning_rate: Axis[LearningRate] = Field(default_factory=list)
    lr_schedule: Axis[LrSchedule] = Field(default_factory=list)
    validation_split: Axis[ValidationSplit] = Field(default_factory=list)
    augment: Axis[Augment] = Field(default_factory=list)
    l2: Axis[L2] = Field(default_factory=list)
    train_subset: Axis[TrainSubset] = Field(default_factory=list)

    @field_validator(*(key for key in TrainConfig.model_fields))
    @classmethod
    def _each_value_once(cls, values: list[Any]) -> list[Any]:
        """O(n): values are canonical here (`true` has become 'standard', 1 has become 1.0)."""
        counts: dict[tuple[type, Any], int] = {}
        for value in values:
            counts[type(value), value] = counts.get((type(value), value), 0) + 1
        repeated = sorted(repr(value) for (_, value), count in counts.items() if count > 1)
        if repeated:
            more = f", ... ({len(repeated):,} values)" if len(repeated) > 5 else ""
            problem = f"repeats {printable(', '.join(repeated[:5]))}{more}; each value once"
            raise PydanticCustomError("spec", problem)
        return values


def _sbatch_option(key: str) -> str:
    """An `executor.slurm.additional` key: an sbatch option mnistsweep does not set itself."""
    if not OPTION_NAME.fullmatch(key):
        raise PydanticCustomError("spec", "not an sbatch option name ([A-Za-z][A-Za-z0-9_-]*)")
    option = key.replace("_", "-")
    if option in OWNED_OPTIONS:
        raise PydanticCustomError("spec", f"mnistsweep sets --{option} itself; remove it")
    if option in FIRST_CLASS_OPTIONS:
        raise PydanticCustomError("spec", f"use executor.slurm.{FIRST_CLASS_OPTIONS[option]}")
    return key


def _sbatch_value(value: object) -> str | int | float:
    if isinstance(value, str) and value.strip():
        return _single_line(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    raise ValueError("not a single-line string or number")


OPTION_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
# Set by mnistsweep or submitit for every job: overriding one breaks logs, arrays or requeueing.
OWNED_OPTIONS = frozenset(
    {"output", "error", "chdir", "array", "wrap", "signal", "job-name", "open-mode", "parsable"}
    | {"wait", "comment", "nodes"}
)
FIRST_CLASS_OPTIONS = {
    "partition": "partition",
    "account": "account",
    "qos": "qos",
    "constraint": "constraint",
    "time": "timeout_min",
    "mem": "mem_gb",
    "mem-per-cpu": "mem_gb",
    "mem-per-gpu": "mem_gb",
    "cpus-per-task": "cpus_per_task",
    "gpus-per-node": "gpus_per_node",
}
SetupLine = Annotated[Text, AfterValidator(_single_line)]
SbatchOption = Annotated[Text, AfterValidator(_sbatch_option)]
SbatchValue = Annotated[str | int | float, PlainValidator(_sbatch_value)]


@pydantic_dataclasses.dataclass(frozen=True, config=_DATACLASS_CONFIG)
class SlurmOptions:
    """What each SLURM job asks for; None leaves the cluster's default."""

    partition: Annotated[SlurmText | None, _SLURM_TEXT] = None
    account: Annotated[SlurmText | None, _SLURM_TEXT] = None
    qos: Annotated[SlurmText | None, _SLURM_TEXT] = None
    constraint: Annotated[SlurmText | None, _SLURM_TEXT] = None
    # None: none requested (a CPU cluster rejects GPU requests)
    gpus_per_node: Annotated[Int | None, _integer(0, 64)] = None
    cpus_per_task: Annotated[Int, _integer(1, 1024)] = 2
    mem_gb: Annotated[Number, _number(0, 4096, low_open=True)] = 8.0
    timeout_min: Annotated[Int, _integer(1, 60 * 24 * 30)] = 60
    array_parallelism: Annotated[Int, _integer(1, 100_000)] = 64  # tasks of an array at once
    # shell lines run before the job (module load, venv activation)
    setup: Annotated[
        tuple[SetupLine, ...], Field(description="a list of single-line shell commands")
    ] = ()
    # extra sbatch parameters
    additional: Annotated[
        dict[SbatchOption, SbatchValue],
        Field(description="a mapping of sbatch options to single-line strings or numbers"),
    ] = field(default_factory=dict)

    @field_validator("additional", mode="before")
    @classmethod
    def _none_is_empty(cls, value: object) -> object:
        return {} if value is None else value


@pydantic_dataclasses.dataclass(frozen=True, config=_DATACLASS_CONFIG)
class ExecutorOptions:
    backend: Annotated[Text, _one_of(EXECUTOR_BACKENDS)] = "auto"
    # cells trained in one job; None: 1 on SLURM, all locally
    cells_per_job: Annotated[Int | None, _integer(1, 1024)] = None
    local_parallel: Annotated[Int, _integer(1, 1024)] = 1  # local jobs running at once
    # cells of one job trained at once (processes sharing a GPU)
    concurrent_cells: Annotated[Int, _integer(1, 1024)] = 1
    # a job stops coming back after this many attempts in a row that committed no epoch
    max_attempts_without_progress: Annotated[Int, _integer(1, 100)] = 3
    slurm: SlurmOptions = field(default_factory=SlurmOptions)

    @field_validator("slurm", mode="before")
    @classmethod
    def _none_is_empty(cls, value: object) -> object:
        return {} if value is None else value


class EnsembleOptions(_Schema):
    top_k: Annotated[Int, _integer(1, 1000)] = 4


def _grid_blocks(value: object) -> object:
    """`grid:` is one mapping of axes, a list of them (the cells are their union), or nothing."""
    if value is None:
        return [{}]
    return [value] if isinstance(value, Mapping) else value


class SpecDocument(_Schema):
    name: Annotated[
        Text,
        Field(
            pattern=NAME_PATTERN.pattern,
            description="1-64 letters, digits, '.', '_' or '-' (a folder name)",
        ),
    ]
    grid: Annotated[
        list[GridBlock],
        Field(
            min_length=1,
            description="a mapping of train keys to lists of values, or a list of such mappings",
        ),
        BeforeValidator(_grid_blocks),
    ] = Field(default_factory=lambda: [GridBlock()])
    train: TrainConfig = Field(default_factory=TrainConfig)
    executor: ExecutorOptions = Field(default_factory=ExecutorOptions)
    ensemble: EnsembleOptions = Field(default_factory=EnsembleOptions)
    search: SearchOptions = Field(default_factory=SearchOptions)

    @field_validator("train", "executor", "ensemble", "search", mode="before")
    @classmethod
    def _none_is_empty(cls, value: object) -> object:
        return {} if value is None else value


# --- Cells -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One train key: its default, what it accepts, and a check returning the canonical value."""

    key: str
    default: Any
    doc: str

    def check(self, value: Any) -> Any:
        """The value as a cell holds it (`true` -> 'standard', 1 -> 1.0 for a number); raises
        ValueError (pydantic's ValidationError) if the key does not accept it."""
        return getattr(TrainConfig.model_validate({self.key: value}), self.key)


TRAIN_SETTINGS: dict[str, Setting] = {
    key: Setting(key, info.default, info.description or "")
    for key, info in TrainConfig.model_fields.items()
}


@dataclass(frozen=True)
class Cell:
    """One training run: every train key fixed. The id is stable: same config, same id."""

    config: Mapping[str, Any]
    axes: tuple[str, ...]
    block: int = field(default=0, compare=False)  # the first grid block that yields it
    # search.early_stopping, and how many cells its block has: what its rungs compare it with
    early_stopping: EarlyStopping | None = field(default=None, compare=False)
    block_size: int = field(default=1, compare=False)

    @functools.cached_property
    def id(self) -> str:  # cached: a 1,000-cell launch asks for each id a dozen times
        canonical = json.dumps(dict(self.config), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    @property
    def name(self) -> str:
        """Readable label from the grid's axes, e.g. `arch=mlp,normalization=raw,seed=0`."""
        return ",".join(f"{axis}={self.config[axis]}" for axis in self.axes) or "single"

    @property
    def dirname(self) -> str:
        """Folder name: the readable label made path-safe, then the id that keeps it unique."""
        label = re.sub(r"[^A-Za-z0-9=.,_-]+", "_", self.name)[:120]
        return f"{label}--{self.id}"


Grid = Mapping[str, tuple[Any, ...]]


@dataclass(frozen=True)
class Spec:
    name: str
    path: Path
    grids: tuple[Grid, ...]  # the cells are the union of each grid's cartesian product
    train: Mapping[str, Any]
    executor: ExecutorOptions
    ensemble_top_k: int
    document: Mapping[str, Any]  # the validated YAML as loaded, kept beside the results
    labels: tuple[str | None, ...] = ()  # each grid block's `label:`, None where it has none
    # each block's drawn configurations of its sampled axes (sampling.py); () where it has none
    samples: tuple[tuple[Mapping[str, Any], ...], ...] = ()
    early_stopping: EarlyStopping | None = None  # search.early_stopping

    @property
    def axes(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(axis for grid in self.grids for axis in grid))

    @property
    def axis_values(self) -> dict[str, list[Any]]:
        """Every value each axis takes somewhere in the sweep (the HParams dashboard's domain)."""
        values: dict[str, list[Any]] = {axis: [] for axis in self.axes}
        for cell in self.cells():
            for axis in self.axes:
                if cell.config[axis] not in values[axis]:
                    values[axis].append(cell.config[axis])
        return values

    @property
    def size(self) -> int:
        return len(self._cells)

    def cells(self) -> list[Cell]:
        """Every cell once, in grid order (a new list each call; the cells are computed once)."""
        return list(self._cells)

    @functools.cached_property
    def _cells(self) -> tuple[Cell, ...]:
        base = {key: setting.default for key, setting in TRAIN_SETTINGS.items()}
        base.update(self.train)
        cells: dict[str, Cell] = {}
        for block, grid in enumerate(self.grids):
            draws = self.samples[block] if block < len(self.samples) else ()
            plain = {
                axis: values for axis, values in grid.items() if axis not in (draws or [{}])[0]
            }
            for drawn in draws or ({},):  # each sampled configuration, by each of the grid's axes
                for values in itertools.product(*plain.values()):
                    config = {**base, **dict(zip(plain, values, strict=True)), **drawn}
                    cell = Cell(config=config, axes=self.axes, block=block)
                    cells.setdefault(cell.id, cell)
        if self.early_stopping is None:
            return tuple(cells.values())
        sizes = Counter(cell.block for cell in cells.values())
        return tuple(
            replace(cell, early_stopping=self.early_stopping, block_size=sizes[cell.block])
            for cell in cells.values()
        )

    def explicit_grids(self) -> tuple[Grid, ...]:
        """The grid blocks with each sampled configuration as a block of its own (its drawn
        values as one-value axes): what sweep.json records and the fingerprint hashes, so the
        record alone gives back every cell. A spec without sampled axes: its own grids."""
        explicit: list[Grid] = []
        for block, grid in enumerate(self.grids):
            draws = self.samples[block] if block < len(self.samples) else ()
            explicit.extend(
                {axis: (drawn[axis],) if axis in drawn else values for axis, values in grid.items()}
                for drawn in draws
            )
            if not draws:
                explicit.append(grid)
        return tuple(explicit)

    def results_fingerprint(self) -> str:
        """Hash of what decides results (grid and train): a spec whose fingerprint differs must
        not share a results folder with this one."""
        canonical = json.dumps({"grid": self.explicit_grids(), "train": self.train}, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# --- Loading -----------------------------------------------------------------------------------


def load_spec(path: str | Path, *, allow_large: bool = False) -> Spec:
    """Read and validate a spec file; raise SpecError naming file, key and allowed values."""
    path = Path(path)
    try:
        document = read_yaml(path, max_list=None if allow_large else MAX_CELLS)
    except ListTooLong as error:  # refused while parsing: checking each value would take seconds
        raise SpecError(
            f"{path}: line {error.line}: a list of more than {MAX_CELLS:,} values; as a grid axis "
            f"it expands above the limit of {MAX_CELLS:,} cells; shrink it or pass --allow-large"
        ) from None
    except YamlError as error:
        raise SpecError(str(error)) from None
    if document is None:
        raise SpecError(
            f"{path}: (top level): the file is empty; expected a mapping with keys "
            "name, grid, train, executor"
        )
    return parse_spec(document, path, allow_large=allow_large)


def parse_spec(document: Any, path: Path, *, allow_large: bool = False) -> Spec:
    if not isinstance(document, dict):
        raise SpecError(
            f"{path}: (top level): must be a mapping with keys name, grid, train, executor"
        )
    raw_grid = document.get("grid")
    raw_blocks = raw_grid if isinstance(raw_grid, list) else [raw_grid or {}]
    # From the lists' lengths alone: a 120,000-value axis is refused before any value is checked.
    size = sum(
        math.prod(len(v) if isinstance(v, list) else 1 for v in block.values())
        * sampling.samples_of(block)
        if isinstance(block, dict)
        else 1
        for block in raw_blocks
    )
    if size > MAX_CELLS and not allow_large:
        raise SpecError(
            f"{path}: grid: expands to {size:,} cells, above the limit of {MAX_CELLS:,}; "
            "shrink an axis or pass --allow-large"
        )
    parts = [_sampled_part(raw, _where(i, raw_grid), path) for i, raw in enumerate(raw_blocks)]
    schema_view = document  # the schema sees the grids without distributions
    if isinstance(raw_grid, (list, dict)):
        plain = [part[0] for part in parts]
        schema_view = {**document, "grid": plain if isinstance(raw_grid, list) else plain[0]}
    try:
        checked = SpecDocument.model_validate(schema_view)
    except ValidationError as invalid:
        raise SpecError(
            f"{path}: {_first_problem(invalid, single_grid=not isinstance(raw_grid, list))}"
        ) from None

    train = {key: getattr(checked.train, key) for key in document.get("train") or {}}
    grids: list[Grid] = []
    samples: list[tuple[dict[str, Any], ...]] = []
    for i, (block, raw) in enumerate(zip(checked.grid, raw_blocks, strict=True)):
        where = _where(i, raw_grid)
        axes = [axis for axis in raw if axis not in ("label", "samples")]
        for axis in axes:
            if axis in train:
                raise SpecError(
                    f"{path}: {where}.{axis}: also fixed in train.{axis}; give it in one place only"
                )
        sampled = parts[i][1]
        draws = () if sampled is None else _draw(sampled, checked.search.seed, raw, where, path)
        grid = {axis: tuple(getattr(block, axis)) for axis in axes}
        for axis in sampled.axes if sampled else ():
            grid[axis] = tuple(dict.fromkeys(drawn[axis] for drawn in draws))
        grids.append(grid)
        samples.append(draws)
    return Spec(
        name=checked.name,
        path=path,
        grids=tuple(grids),
        train=train,
        executor=checked.executor,
        ensemble_top_k=checked.ensemble.top_k,
        document=document,
        labels=tuple(block.label for block in checked.grid),
        samples=tuple(samples) if any(samples) else (),
        early_stopping=checked.search.early_stopping,
    )


def _where(index: int, raw_grid: object) -> str:
    return f"grid[{index}]" if isinstance(raw_grid, list) else "grid"


def _sampled_part(raw: object, where: str, path: Path) -> tuple[object, SampledAxes | None]:
    """A raw grid block without its distributions (for the schema), and its sampled part."""
    if not isinstance(raw, dict):
        return raw, None
    try:
        return sampling.split_block(raw, list(TRAIN_SETTINGS))
    except SamplingError as error:
        raise SpecError(f"{path}: {where}.{error}") from None


def _draw(
    sampled: SampledAxes, seed: int, raw: dict[str, Any], where: str, path: Path
) -> tuple[dict[str, Any], ...]:
    def canonical(key: str, value: Any) -> Any:
        return TRAIN_SETTINGS[key].check(value)

    def expected(key: str) -> str:
        return TRAIN_SETTINGS[key].doc or "a valid value"

    try:
        seeded = {key: value for key, value in raw.items() if key != "label"}  # not part of any id
        checked = sampling.check_values(sampled, canonical, expected)
        return sampling.draw(checked, seed, seeded, canonical)
    except SamplingError as error:
        raise SpecError(f"{path}: {where}.{error}") from None


# --- One line per problem ----------------------------------------------------------------------

_SECTIONS: dict[tuple[str, ...], type] = {
    (): SpecDocument,
    ("grid",): GridBlock,
    ("train",): TrainConfig,
    ("executor",): ExecutorOptions,
    ("executor", "slurm"): SlurmOptions,
    ("ensemble",): EnsembleOptions,
    ("search",): SearchOptions,
    ("search", "early_stopping"): EarlyStopping,
}
_UNKNOWN_KEY = ("extra_forbidden", "unexpected_keyword_argument", "invalid_key")
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]{1,60}")


def _fields(section: type) -> dict[str, FieldInfo]:
    fields: dict[str, FieldInfo] = section.__pydantic_fields__  # type: ignore[attr-defined]
    return fields


def _first_problem(invalid: ValidationError, *, single_grid: bool) -> str:
    """pydantic's first error (an unknown key first: a typo explains what follows) as
    `<dotted key>: <problem>`, in the words of the schema's descriptions."""
    error = min(invalid.errors(include_url=False), key=lambda e: e["type"] not in _UNKNOWN_KEY)
    loc = list(error["loc"])
    if single_grid and loc[:1] == ["grid"] and len(loc) > 1 and loc[1] == 0:
        del loc[1]  # `grid:` was one mapping, validated as a list of one
    where, keys = _dotted(loc, key_last=error["type"] == "invalid_key")
    kind = error["type"]
    if kind == "spec":
        return f"{where}: {error['msg']}"
    if kind in _UNKNOWN_KEY:
        allowed = list(_fields(_SECTIONS.get(keys[:-1], SpecDocument)))
        hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
        return f"{where}: unknown key{suggestion}; allowed: {', '.join(allowed)}"
    if kind in ("model_type", "dataclass_type"):
        return f"{where}: must be a mapping, got {type(error['input']).__name__}"
    if _SECTIONS.get(keys[:-1]) is GridBlock and loc and isinstance(loc[-1], str):
        if kind == "list_type":
            return f"{where}: must be a list of values (put a fixed value under train:)"
        if kind == "too_short":
            return f"{where}: is empty; give at least one value"
    got = "missing" if kind == "missing" else f"got {shown(error['input'])}"
    return f"{where}: {got}; expected {_expected(keys)}"


def _dotted(loc: list[int | str], *, key_last: bool) -> tuple[str, tuple[str, ...]]:
    """('grid', 1, 'seed', 0) -> 'grid[1].seed[0]', and the keys alone: ('grid', 'seed')."""
    text, keys = "", []
    for i, part in enumerate(loc):
        is_key = isinstance(part, str) or (key_last and i == len(loc) - 1)
        if part == "[key]":
            continue
        if i + 1 < len(loc) and loc[i + 1] == "[key]":
            is_key = True
        if not is_key:
            text += f"[{part}]"
            continue
        label = part if isinstance(part, str) and _PLAIN_KEY.fullmatch(part) else shown(part)
        text += f".{label}" if text else label
        keys.append(str(part))
    return text or "(top level)", tuple(keys)


def _expected(keys: tuple[str, ...]) -> str:
    """The description of the field that `keys` fall in: a grid axis is described by train's."""
    for depth in range(len(keys) - 1, -1, -1):
        section = _SECTIONS.get(keys[:depth])
        if section is not None and keys[depth] in _fields(section):
            in_train = section is GridBlock and keys[depth] in _fields(TrainConfig)
            owner = TrainConfig if in_train else section
            return _fields(owner)[keys[depth]].description or "a valid value"
    return "a valid value"
