"""Sampled axes: a grid block's train key given as a distribution, drawn `samples` times.

```yaml
grid:
  - arch: [mlp]
    learning_rate: {loguniform: [1.0e-4, 1.0e-1]}
    samples: 8
search: {seed: 0}
```

The draws are a pure function of the spec: numpy's PCG64 stream seeded with the sweep seed and
the block's own content, read only through `Generator.random` (53 random bits per double, a
transformation numpy has never changed), so the same spec gives the same cells in any process and
on any numpy version, and a relaunch finds the cells it already trained. Drawn numbers are rounded
to 6 significant digits: the value in the cell's config (and so in its id and name) is exactly the
value trained with. Optuna's RandomSampler would draw the same kind of numbers but makes no promise
that its stream stays the same across versions, and its import alone would slow every dry run.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, Strict

from mnistsweep.errors import MnistsweepError
from mnistsweep.sweep.yaml_loader import shown

DISTRIBUTIONS = ("uniform", "loguniform", "int", "choice")
FORMS = (
    "a list of values, or one of {uniform: [lo, hi]}, {loguniform: [lo, hi]} (0 < lo), "
    "{int: [lo, hi]} (integers, inclusive), {choice: [a, b, ...]}, with lo <= hi finite"
)
MAX_SAMPLES = 10_000  # as many cells as a whole spec may have
MAX_CHOICES = 1_000
SIGNIFICANT_DIGITS = 6
# Draws before giving up on finding `samples` distinct configurations (a tiny interval, or a
# discrete space barely larger than the samples asked for).
DRAWS_PER_SAMPLE = 100


class SamplingError(MnistsweepError):
    """A malformed sampled axis: `key` is where (relative to its grid block), then the problem."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key, self.problem = key, problem


# --- The `search:` section ----------------------------------------------------------------------


class EarlyStopping(BaseModel):
    """Asynchronous successive halving: rungs at min_epochs * reduction^k."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: Literal["val_loss", "val_accuracy"] = Field(
        default="val_loss", description="one of val_loss, val_accuracy"
    )
    min_epochs: Annotated[int, Strict()] = Field(
        default=1, ge=1, le=10_000, description="an integer in [1, 10000]"
    )
    reduction: Annotated[int, Strict()] = Field(
        default=3, ge=2, le=100, description="an integer in [2, 100]"
    )


class SearchOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: Annotated[int, Strict()] = Field(
        default=0, ge=0, le=2**31 - 1, description=f"an integer in [0, {2**31 - 1}]"
    )
    early_stopping: EarlyStopping | None = None


# --- Distributions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Distribution:
    """One sampled axis. `bounds` is [lo, hi] for the intervals, the options for `choice`."""

    kind: str
    bounds: tuple[Any, ...]

    def endpoints(self) -> tuple[Any, ...]:
        """The values the train setting must accept: both ends of an interval (every value in
        between then passes the setting's own bounds), each option of a choice."""
        return self.bounds

    def size(self) -> float:
        """How many distinct values it can give (inf for a continuous interval)."""
        if self.kind == "int":
            return float(self.bounds[1] - self.bounds[0] + 1)
        if self.kind == "choice":
            return len(self.bounds)
        return math.inf

    def value(self, u: float) -> Any:
        """The draw for one uniform number u in [0, 1)."""
        if self.kind == "choice":
            return self.bounds[min(int(u * len(self.bounds)), len(self.bounds) - 1)]
        low, high = self.bounds
        if self.kind == "int":
            return min(low + int(u * (high - low + 1)), high)
        if self.kind == "loguniform":
            drawn = math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
        else:
            drawn = low + u * (high - low)
        return min(max(_rounded(drawn), low), high)


def _rounded(number: float) -> float:
    return float(f"{number:.{SIGNIFICANT_DIGITS}g}")


@dataclass(frozen=True)
class SampledAxes:
    """A grid block's sampled part: its distributions (in the block's order) and `samples`."""

    samples: int
    axes: Mapping[str, Distribution]

    def space(self) -> float:
        return math.prod(distribution.size() for distribution in self.axes.values())


def is_distribution(value: object) -> bool:
    return isinstance(value, Mapping)


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_distribution(key: str, value: Mapping[Any, Any]) -> Distribution:
    """`{uniform: [lo, hi]}` and the like, checked for form (not yet against the setting)."""
    if len(value) != 1 or next(iter(value)) not in DISTRIBUTIONS:
        names = ", ".join(shown(name) for name in value) or "nothing"
        raise SamplingError(key, f"got a mapping of {names}; expected {FORMS}")
    kind = next(iter(value))
    where, bounds = f"{key}.{kind}", value[kind]
    if not isinstance(bounds, list):
        raise SamplingError(where, f"must be a list; expected {FORMS}")
    if kind == "choice":
        if not 1 <= len(bounds) <= MAX_CHOICES:
            raise SamplingError(where, f"give 1 to {MAX_CHOICES} values; got {len(bounds)}")
        return Distribution(kind, tuple(bounds))
    if len(bounds) != 2 or not all(_number(bound) for bound in bounds):
        raise SamplingError(where, f"must be [lo, hi], two numbers; expected {FORMS}")
    low, high = bounds
    if not (math.isfinite(low) and math.isfinite(high)):
        raise SamplingError(where, f"bounds must be finite numbers, got [{low}, {high}]")
    if low > high:
        raise SamplingError(where, f"lo > hi ([{low}, {high}]); expected [lo, hi] with lo <= hi")
    if kind == "int":
        if not all(isinstance(bound, int) for bound in bounds):
            raise SamplingError(where, f"bounds must be integers, got [{low}, {high}]")
        return Distribution(kind, (low, high))
    if kind == "loguniform" and low <= 0:
        raise SamplingError(where, f"needs 0 < lo, got [{low}, {high}]")
    return Distribution(kind, (float(low), float(high)))


def split_block(
    block: Mapping[Any, Any], settings: Sequence[str]
) -> tuple[dict[Any, Any], SampledAxes | None]:
    """The block without its distributions and `samples` (a plain grid block), and its sampled
    part; raises SamplingError for a malformed one. `settings`: the train keys."""
    plain = {key: value for key, value in block.items() if not is_distribution(value)}
    plain.pop("samples", None)
    axes = {}
    for key, value in block.items():
        if not is_distribution(value):
            continue
        if key not in settings:
            raise SamplingError(
                key if isinstance(key, str) and key.isidentifier() else shown(key),
                "a distribution on a key that is no train setting; allowed: " + ", ".join(settings),
            )
        axes[key] = parse_distribution(str(key), value)
    samples = block.get("samples")
    if not axes:
        if "samples" in block:
            raise SamplingError("samples", "no axis of this block is a distribution; " + FORMS)
        return plain, None
    if "samples" not in block:
        raise SamplingError("samples", "missing: a block with a distribution needs samples: N")
    if isinstance(samples, bool) or not isinstance(samples, int) or not 1 <= samples <= MAX_SAMPLES:
        raise SamplingError(
            "samples", f"got {shown(samples)}; expected an integer in [1, {MAX_SAMPLES}]"
        )
    return plain, SampledAxes(samples, axes)


def check_values(
    sampled: SampledAxes, canonical: Callable[[str, Any], Any], expected: Callable[[str], str]
) -> SampledAxes:
    """Every value a distribution can give is one its train setting accepts; a choice's options
    become canonical (`true` -> 'standard') and must be distinct."""
    axes = {}
    for key, distribution in sampled.axes.items():
        values = []
        for value in distribution.endpoints():
            try:
                values.append(canonical(key, value))
            except ValueError:
                raise SamplingError(
                    f"{key}.{distribution.kind}",
                    f"can give {shown(value)}; {key} takes {expected(key)}",
                ) from None
        if distribution.kind == "choice":
            if len({json.dumps(value) for value in values}) < len(values):
                raise SamplingError(f"{key}.choice", "repeats a value; give each value once")
            distribution = Distribution("choice", tuple(values))
        axes[key] = distribution
    checked = SampledAxes(sampled.samples, axes)
    if checked.space() < checked.samples:
        raise SamplingError(
            "samples",
            f"{checked.samples} distinct configurations asked for, but the distributions give "
            f"only {int(checked.space())}",
        )
    return checked


def samples_of(block: object) -> int:
    """How many draws a raw block asks for (1 when none or malformed): for the size check."""
    samples = block.get("samples") if isinstance(block, Mapping) else None
    return samples if isinstance(samples, int) and not isinstance(samples, bool) else 1


# --- Drawing ------------------------------------------------------------------------------------


def draw(
    sampled: SampledAxes,
    seed: int,
    block: Mapping[str, Any],
    canonical: Callable[[str, Any], Any],
) -> tuple[dict[str, Any], ...]:
    """`samples` distinct configurations of the sampled axes, the same for the same (seed,
    block). `block` is the grid block as written (its content seeds the stream, so one block's
    cells do not change when another block is added); `canonical(key, value)` gives the value as
    a cell holds it (1 -> 1.0 for a number)."""
    content = json.dumps(block, sort_keys=True, default=repr).encode()
    stream = np.random.default_rng(
        [seed, int.from_bytes(hashlib.sha256(content).digest()[:8], "big")]
    )
    drawn: dict[str, dict[str, Any]] = {}
    for _ in range(DRAWS_PER_SAMPLE * sampled.samples):
        units = stream.random(len(sampled.axes))
        config = {
            key: canonical(key, distribution.value(float(u)))
            for (key, distribution), u in zip(sampled.axes.items(), units, strict=True)
        }
        drawn.setdefault(json.dumps(config, sort_keys=True), config)
        if len(drawn) == sampled.samples:
            return tuple(drawn.values())
    raise SamplingError(
        "samples",
        f"found only {len(drawn)} distinct configurations of {sampled.samples} in "
        f"{DRAWS_PER_SAMPLE * sampled.samples} draws; widen the distributions or ask for fewer",
    )
