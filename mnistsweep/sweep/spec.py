"""Sweep spec: load a YAML file, validate every key, and expand its grid into cells.

A spec is the contract between the user and the sweep. Every problem is reported as one line that
names the file, the key and what is allowed, so a typo never costs a GPU-hour.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mnistsweep.errors import MnistsweepError
from mnistsweep.vocabulary import ARCHITECTURE_NAMES, AUGMENTATION_NAMES, NORMALIZATION_NAMES

# Above this many cells a spec is refused unless the caller forces it: a typo such as
# `seed: [0, ..., 999]` in three axes should not flood a cluster's queue.
MAX_CELLS = 10_000
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class SpecError(MnistsweepError):
    """A spec problem: the message names the file, the key and the allowed values."""


@dataclass(frozen=True)
class Setting:
    """One train key: its default, and a check that returns the canonical value or raises."""

    default: Any
    check: Callable[[Any], Any]
    doc: str


def _fail(expected: str) -> None:
    raise ValueError(expected)


def _integer(low: int, high: int, nullable: bool = False) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if value is None and nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            _fail(f"an integer in [{low}, {high}]" + (" or null" if nullable else ""))
        return value

    return check


def _number(low: float, high: float, *, low_open: bool = False, nullable: bool = False):
    def check(value: Any) -> Any:
        if value is None and nullable:
            return None
        ok = (
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        )
        if ok:
            ok = (low < value if low_open else low <= value) and value <= high
        if not ok:
            bracket = "(" if low_open else "["
            _fail(f"a number in {bracket}{low}, {high}]" + (" or null" if nullable else ""))
        return float(value)

    return check


def _choice(names: tuple[str, ...]) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if value not in names:
            _fail("one of " + ", ".join(names))
        return value

    return check


def _augment(value: Any) -> str:
    """`augment: true/false` is shorthand for the fancy_cnn tutorial's augmentation or none."""
    if value is True:
        return "standard"
    if value is False:
        return "none"
    return _choice(AUGMENTATION_NAMES)(value)


LR_SCHEDULES = ("constant", "cosine", "exponential")

TRAIN_SETTINGS: dict[str, Setting] = {
    "arch": Setting("fancy_cnn", _choice(ARCHITECTURE_NAMES), "network from the registry"),
    "normalization": Setting("standardize", _choice(NORMALIZATION_NAMES), "input scaling"),
    "dropout": Setting(None, _number(0.0, 0.9, nullable=True), "null = the tutorial's own"),
    "seed": Setting(0, _integer(0, 2**31 - 1), "weights, shuffling and augmentation"),
    "epochs": Setting(20, _integer(1, 10_000), "passes over the training split"),
    "batch_size": Setting(128, _integer(1, 60_000), "images per step"),
    "learning_rate": Setting(1e-3, _number(0.0, 10.0, low_open=True), "Adam's initial rate"),
    "lr_schedule": Setting("constant", _choice(LR_SCHEDULES), "decay over the epochs"),
    "validation_split": Setting(0.1, _number(0.0, 0.5, low_open=True), "last share held out"),
    "augment": Setting("none", _augment, "random distortions while training"),
    "l2": Setting(0.0, _number(0.0, 1.0), "kernel weight decay"),
    "train_subset": Setting(None, _integer(10, 60_000, nullable=True), "first N images only"),
}

EXECUTOR_BACKENDS = ("auto", "local", "slurm")


@dataclass(frozen=True)
class SlurmOptions:
    """What each SLURM job asks for; None leaves the cluster's default."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    gpus_per_node: int | None = None  # None: none requested (a CPU cluster rejects GPU requests)
    cpus_per_task: int = 2
    mem_gb: float = 8.0
    timeout_min: int = 60
    array_parallelism: int = 64  # tasks of one array running at once
    setup: tuple[str, ...] = ()  # shell lines run before the job (module load, venv activation)
    additional: Mapping[str, Any] = field(default_factory=dict)  # extra sbatch parameters


@dataclass(frozen=True)
class ExecutorOptions:
    backend: str = "auto"
    cells_per_job: int | None = None  # cells trained in one job; None: 1 on SLURM, all locally
    local_parallel: int = 1  # local jobs running at once
    concurrent_cells: int = 1  # cells of one job trained at once (processes sharing a GPU)
    slurm: SlurmOptions = field(default_factory=SlurmOptions)


@dataclass(frozen=True)
class Cell:
    """One training run: every train key fixed. The id is stable: same config, same id."""

    config: Mapping[str, Any]
    axes: tuple[str, ...]

    @property
    def id(self) -> str:
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
        return len(self.cells())

    def cells(self) -> list[Cell]:
        base = {key: setting.default for key, setting in TRAIN_SETTINGS.items()}
        base.update(self.train)
        cells: dict[str, Cell] = {}
        for grid in self.grids:
            for values in itertools.product(*grid.values()):
                config = {**base, **dict(zip(grid, values, strict=True))}
                cell = Cell(config=config, axes=self.axes)
                cells.setdefault(cell.id, cell)
        return list(cells.values())

    def results_fingerprint(self) -> str:
        """Hash of what decides results (grid and train): a spec whose fingerprint differs must
        not share a results folder with this one."""
        canonical = json.dumps({"grid": self.grids, "train": self.train}, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class _Checker:
    """Carries the file name so every error line can name it."""

    def __init__(self, path: Path):
        self.path = path

    def error(self, key: str, problem: str) -> SpecError:
        return SpecError(f"{self.path}: {key}: {problem}")

    def mapping(self, value: Any, key: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(key, f"must be a mapping, got {type(value).__name__}")
        return value

    def known_keys(self, section: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
        for key in section:
            if key not in allowed:
                hint = difflib.get_close_matches(str(key), allowed, n=1)
                suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
                raise self.error(
                    f"{where}{key}", f"unknown key{suggestion}; allowed: {', '.join(allowed)}"
                )

    def train_value(self, key: str, value: Any, where: str) -> Any:
        try:
            return TRAIN_SETTINGS[key].check(value)
        except ValueError as expected:
            raise self.error(where, f"got {value!r}; expected {expected}") from None


def load_spec(path: str | Path, *, allow_large: bool = False) -> Spec:
    """Read and validate a spec file; raise SpecError naming file, key and allowed values."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise SpecError(f"{path}: cannot read spec ({error.strerror})") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise SpecError(f"{path}: malformed YAML{where}: {problem}") from None
    return parse_spec(document, path, allow_large=allow_large)


def parse_spec(document: Any, path: Path, *, allow_large: bool = False) -> Spec:
    check = _Checker(path)
    if not isinstance(document, dict):
        raise check.error("(top level)", "must be a mapping with keys name, grid, train, executor")
    check.known_keys(document, ("name", "grid", "train", "executor", "ensemble"), "")

    name = document.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise check.error(
            "name", f"got {name!r}; expected 1-64 letters, digits, '.', '_' or '-' (a folder name)"
        )

    train_keys = tuple(TRAIN_SETTINGS)
    train_section = check.mapping(document.get("train"), "train")
    check.known_keys(train_section, train_keys, "train.")
    train = {
        key: check.train_value(key, value, f"train.{key}") for key, value in train_section.items()
    }

    grid_section = document.get("grid")
    if isinstance(grid_section, list) and grid_section:
        grids = tuple(
            _parse_grid(check, block, train, f"grid[{i}]") for i, block in enumerate(grid_section)
        )
    else:
        grids = (_parse_grid(check, grid_section, train, "grid"),)

    size = sum(math.prod(len(values) for values in grid.values()) for grid in grids)
    if size > MAX_CELLS and not allow_large:
        raise check.error(
            "grid",
            f"expands to {size:,} cells, above the limit of {MAX_CELLS:,}; "
            "shrink an axis or pass --allow-large",
        )

    return Spec(
        name=name,
        path=path,
        grids=grids,
        train=train,
        executor=_parse_executor(check, document.get("executor")),
        ensemble_top_k=_parse_ensemble(check, document.get("ensemble")),
        document=document,
    )


def _parse_grid(check: _Checker, section: Any, train: Mapping[str, Any], where: str) -> Grid:
    """One grid: train keys mapped to non-empty lists of distinct valid values."""
    section = check.mapping(section, where)
    check.known_keys(section, tuple(TRAIN_SETTINGS), f"{where}.")
    grid: dict[str, tuple[Any, ...]] = {}
    for key, values in section.items():
        axis = f"{where}.{key}"
        if key in train:
            raise check.error(axis, f"also fixed in train.{key}; give it in one place only")
        if not isinstance(values, list):
            raise check.error(axis, "must be a list of values (put a fixed value under train:)")
        if not values:
            raise check.error(axis, "is empty; give at least one value")
        checked = tuple(
            check.train_value(key, value, f"{axis}[{i}]") for i, value in enumerate(values)
        )
        duplicates = sorted({repr(v) for v in checked if checked.count(v) > 1})
        if duplicates:
            raise check.error(axis, f"repeats {', '.join(duplicates)}; each value once")
        grid[key] = checked
    return grid


def _parse_ensemble(check: _Checker, section: Any) -> int:
    section = check.mapping(section, "ensemble")
    check.known_keys(section, ("top_k",), "ensemble.")
    top_k = section.get("top_k", 4)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= 1000:
        raise check.error("ensemble.top_k", f"got {top_k!r}; expected an integer in [1, 1000]")
    return top_k


def _parse_executor(check: _Checker, section: Any) -> ExecutorOptions:
    section = check.mapping(section, "executor")
    check.known_keys(
        section,
        ("backend", "cells_per_job", "local_parallel", "concurrent_cells", "slurm"),
        "executor.",
    )
    backend = section.get("backend", "auto")
    if backend not in EXECUTOR_BACKENDS:
        raise check.error(
            "executor.backend", f"got {backend!r}; expected one of {', '.join(EXECUTOR_BACKENDS)}"
        )
    counts = {}
    for key in ("cells_per_job", "local_parallel", "concurrent_cells"):
        if key not in section:
            continue
        value = section[key]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1024:
            raise check.error(f"executor.{key}", f"got {value!r}; expected an integer in [1, 1024]")
        counts[key] = value
    return ExecutorOptions(
        backend=backend, slurm=_parse_slurm(check, section.get("slurm")), **counts
    )


_SLURM_TEXT = ("partition", "account", "qos", "constraint")
_SLURM_COUNTS = {
    "gpus_per_node": (0, 64),
    "cpus_per_task": (1, 1024),
    "timeout_min": (1, 60 * 24 * 30),
    "array_parallelism": (1, 100_000),
}


def _parse_slurm(check: _Checker, section: Any) -> SlurmOptions:
    section = check.mapping(section, "executor.slurm")
    allowed = (*_SLURM_TEXT, *_SLURM_COUNTS, "mem_gb", "setup", "additional")
    check.known_keys(section, allowed, "executor.slurm.")
    options: dict[str, Any] = {}
    for key in _SLURM_TEXT:
        if key in section:
            value = section[key]
            if not isinstance(value, str) or not value.strip():
                raise check.error(
                    f"executor.slurm.{key}", f"got {value!r}; expected a non-empty string"
                )
            options[key] = value
    for key, (low, high) in _SLURM_COUNTS.items():
        if key in section:
            value = section[key]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise check.error(
                    f"executor.slurm.{key}",
                    f"got {value!r}; expected an integer in [{low}, {high}]",
                )
            options[key] = value
    if "mem_gb" in section:
        value = section["mem_gb"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 4096:
            raise check.error(
                "executor.slurm.mem_gb", f"got {value!r}; expected a number in (0, 4096]"
            )
        options["mem_gb"] = float(value)
    if "setup" in section:
        lines = section["setup"]
        if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
            raise check.error("executor.slurm.setup", "expected a list of shell lines (strings)")
        options["setup"] = tuple(lines)
    if "additional" in section:
        extra = check.mapping(section["additional"], "executor.slurm.additional")
        for key, value in extra.items():
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise check.error(
                    f"executor.slurm.additional.{key}",
                    f"got {value!r}; expected a string or number",
                )
        options["additional"] = dict(extra)
    return SlurmOptions(**options)
