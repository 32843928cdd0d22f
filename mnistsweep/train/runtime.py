"""What a training process keeps from one cell to the next, and what it measures of itself.

A job trains its cells one after another in one process: the data split is made once, and a
compiled model is reused by the next cell that differs only by seed (compiling is most of a
short cell's time). Results stay those of a fresh process: the reused model gets the new cell's
freshly initialised variables and its optimizer's initial state.
"""

from __future__ import annotations

import os
import platform
import resource
import socket
import statistics
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np

from mnistsweep.sweep import records

if TYPE_CHECKING:  # Keras is imported by the trainer, after it has timed the process's start
    import keras

T = TypeVar("T")
MB = 1024 * 1024


@dataclass(frozen=True)
class Split:
    """Training, validation (the last share of the 60,000, the same for every seed) and test."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


class LastValue(Generic[T]):
    """Keeps the latest value made, for as long as the next call asks for the same key."""

    def __init__(self) -> None:
        self._key: Hashable = None
        self._value: T | None = None

    def get(self, key: Hashable, make: Callable[[], T]) -> T:
        if self._value is None or self._key != key:
            self._value, self._key = None, None  # free the old value before making the new one
            self._value, self._key = make(), key
        return self._value


SPLITS: LastValue[Split] = LastValue()


@dataclass
class CompiledModel:
    model: keras.Model
    initial_optimizer: list[np.ndarray]

    def reset_to(self, fresh: keras.Model) -> None:
        """Take `fresh`'s initial variables (weights, seed generators) and a new optimizer."""
        for target, source in zip(self.model.variables, fresh.variables, strict=True):
            target.assign(source.value)
        for variable, initial in zip(
            self.model.optimizer.variables, self.initial_optimizer, strict=True
        ):
            variable.assign(initial)


class CompiledModels:
    """The few latest compiled models, by everything but the seed that shapes their program."""

    def __init__(self, capacity: int = 2) -> None:
        self.capacity = capacity
        self._models: OrderedDict[Hashable, CompiledModel] = OrderedDict()

    def __len__(self) -> int:
        return len(self._models)

    def find(self, key: Hashable) -> CompiledModel | None:
        if key in self._models:
            self._models.move_to_end(key)
        return self._models.get(key)

    def add(self, key: Hashable, model: keras.Model) -> None:
        import keras

        initial = [keras.ops.convert_to_numpy(v.value) for v in model.optimizer.variables]
        self._models[key] = CompiledModel(model, initial)
        while len(self._models) > self.capacity:
            self._models.popitem(last=False)


COMPILED = CompiledModels()


def compile_key(config: Mapping[str, Any], data_dir: object) -> Hashable:
    """Cells that differ only by seed share the program; the data decide the normalization."""
    return (str(data_dir), *sorted((k, repr(v)) for k, v in config.items() if k != "seed"))


# --- the training path ----------------------------------------------------------------------------

# Per net on TensorFlow, the faster of its two deterministic paths where XLA can compile the
# model: one XLA program, or TensorFlow's kernels (oneDNN) under op determinism (Keras refuses
# both at once). Measured by `bench/cpu_trainer.py --all --train-subset 10800 --epochs 3 --paths
# tensorflow-xla,tensorflow-kernels` on 2 shared cores (bench/README.md), steady epoch seconds
# XLA vs kernels: XLA loses on every conv net (simple_cnn 41.6 vs 3.0: its compiled dropout;
# vanilla_cnn 5.8 vs 3.2, 9.1 vs 5.8 with dropout; larger_cnn 5.1 vs 3.1; fancy_cnn 18.3 vs 10.2;
# vgg 10.5 vs 6.2) and its first epoch compiles for up to 44 s; among the dense nets, within
# the noise of a shared machine, it won only for mlp_sigmoid (0.28 vs 0.68; linear 0.24 vs 0.20,
# mlp 0.64 vs 0.42, baseline_mlp 0.76 vs 0.51, fcn_512 1.42 vs 1.14). The augmented nets
# (bn_cnn, vgg_dropout, vgg_bn as the tutorials train them) take the kernels in any case.
TENSORFLOW_PATHS: dict[str, records.TrainingPath] = {
    "linear": "tensorflow-kernels",
    "mlp": "tensorflow-kernels",
    "vanilla_cnn": "tensorflow-kernels",
    "fancy_cnn": "tensorflow-kernels",
    "baseline_mlp": "tensorflow-kernels",
    "simple_cnn": "tensorflow-kernels",
    "larger_cnn": "tensorflow-kernels",
    "fcn_512": "tensorflow-kernels",
    "bn_cnn": "tensorflow-kernels",
    "mlp_sigmoid": "tensorflow-xla",
    "vgg": "tensorflow-kernels",
    "vgg_dropout": "tensorflow-kernels",
    "vgg_bn": "tensorflow-kernels",
}


def training_path(backend: str, arch: str, jit_possible: bool) -> records.TrainingPath:
    """Where the steps of `arch` run: JAX always compiles with XLA; TensorFlow takes the net's
    measured path, or its kernels where a layer has no XLA kernel (the augmentation's image
    transform)."""
    if backend == "jax":
        return "jax-xla"
    if not jit_possible:
        return "tensorflow-kernels"
    return TENSORFLOW_PATHS.get(arch, "tensorflow-xla")


# --- measuring ----------------------------------------------------------------------------------


def process_age() -> float | None:
    """Seconds since this process started (Linux), or None where /proc is not there."""
    try:
        with open("/proc/uptime") as uptime, open("/proc/self/stat") as stat:
            since_boot = float(uptime.read().split()[0])
            started_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, since_boot - started_ticks / os.sysconf("SC_CLK_TCK"))


_first_cell = True


@dataclass
class StageClock:
    """Where a cell's wall time goes, stage by stage (a stage may be entered several times)."""

    seconds: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    @classmethod
    def for_cell(cls, startup: float | None, imports: float) -> StageClock:
        """The first cell of a process also carries the process's start and its imports."""
        global _first_cell
        clock = cls()
        if _first_cell:
            clock.seconds.update(startup=startup or 0.0, imports=imports)
            _first_cell = False
        return clock

    def cell_seconds(self) -> float:
        """The cell's own wall time so far: the process's start and imports left out."""
        return time.perf_counter() - self.started

    def timing(self, epoch_seconds: list[float], path: records.TrainingPath) -> records.RunTiming:
        """The result's timing: epochs (the first one compiles), stages, peak memory, path."""
        steady = epoch_seconds[1:]
        return records.RunTiming(
            epoch_seconds=epoch_seconds,
            total_seconds=sum(epoch_seconds),
            wall_seconds_this_attempt=self.cell_seconds(),
            finished=datetime.now(timezone.utc).isoformat(),
            first_epoch_seconds=epoch_seconds[0] if epoch_seconds else None,
            steady_epoch_seconds=statistics.median(steady) if steady else None,
            peak_rss_mb=peak_rss_mb(),
            gpu_peak_mb=gpu_peak_mb(),
            stages={stage: round(seconds, 4) for stage, seconds in self.seconds.items()},
            training_path=path,
        )

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            self.seconds[stage] = self.seconds.get(stage, 0.0) + elapsed


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MB if sys.platform == "darwin" else peak / 1024  # bytes there, KiB on Linux


def gpu_peak_mb() -> float | None:
    """The first accelerator's peak memory so far in this process; None on a CPU."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        stats = device.memory_stats() if device.platform == "gpu" else None
        return stats["peak_bytes_in_use"] / MB if stats else None
    if backend == "tensorflow":
        import tensorflow as tf

        if tf.config.list_logical_devices("GPU"):
            return float(tf.config.experimental.get_memory_info("GPU:0")["peak"]) / MB
    return None


def environment() -> dict[str, Any]:
    """Versions, backend, host and scheduler ids: what a result needs to be reproduced."""
    import keras

    backend = keras.backend.backend()
    versions = {
        "python": platform.python_version(),
        "keras": keras.__version__,
        "numpy": np.__version__,
    }
    if backend == "tensorflow":
        import tensorflow as tf

        versions["tensorflow"] = tf.__version__
    elif backend == "jax":
        import jax

        versions["jax"] = jax.__version__
    slurm = {
        key.lower(): os.environ[key]
        for key in (
            "SLURM_JOB_ID",
            "SLURM_ARRAY_JOB_ID",
            "SLURM_ARRAY_TASK_ID",
            "SLURM_RESTART_COUNT",
        )
        if key in os.environ
    }
    return {
        "versions": versions,
        "keras_backend": backend,
        "host": socket.gethostname(),
        "slurm": slurm or None,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
