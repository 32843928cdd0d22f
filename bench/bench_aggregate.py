"""How long aggregation takes for a sweep of 10,000 runs (goal: 3 seconds, not minutes).

Writes 10,000 synthetic run folders (result.json and history.json shaped like the trainer's, and
class probabilities for the best-on-validation few) into a temporary folder, then times each
stage of a report: `runs.load_runs`, `tables.summarize`, the configuration and marginal
tables, the ensembles (`ensemble.find_ensembles`: greedy selection over a library capped at the
best 200 runs, top-k, per architecture), and `build.write_report` end to end. Prints the raw
seconds and the ratio to the goal, and the size of the sweep's archive (`archive` command).
The files were just written, so they are read from the page cache: a cold read from a cluster's
shared filesystem is slower.

    .venv/bin/python bench/bench_aggregate.py [--runs 10000] [--probabilities 100] [--top-k 10]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mnistsweep.analysis import archive, ensemble, runs, tables
from mnistsweep.errors import MnistsweepError
from mnistsweep.report import build
from mnistsweep.sweep.layout import SweepLayout
from mnistsweep.sweep.spec import Cell, parse_spec
from mnistsweep.train import data
from mnistsweep.vocabulary import ARCHITECTURE_NAMES, NORMALIZATION_NAMES

GOAL_SECONDS = 3.0
EPOCHS = 20
VAL_SIZE, TEST_SIZE = 6000, 10000


def grid_for(runs: int) -> dict[str, list]:
    """arch x normalization x dropout x seed with at least `runs` cells (10 x 4 x 5 x 50)."""
    dropouts = [None, 0.1, 0.2, 0.3, 0.5]
    configurations = len(ARCHITECTURE_NAMES[:10]) * len(NORMALIZATION_NAMES) * len(dropouts)
    seeds = max(1, math.ceil(runs / configurations))
    return {
        "arch": list(ARCHITECTURE_NAMES[:10]),
        "normalization": list(NORMALIZATION_NAMES),
        "dropout": dropouts,
        "seed": list(range(seeds)),
    }


def result_for(cell: Cell, rng: random.Random) -> dict[str, Any]:
    """A completed run's result.json with the trainer's keys (env, per-epoch timing, params)."""
    val_accuracy = 0.9 + 0.09 * rng.random()
    epoch_seconds = [1.0 + rng.random() for _ in range(EPOCHS)]
    return {
        "status": "completed",
        "cell_id": cell.id,
        "cell_name": cell.name,
        "axes": list(cell.axes),
        "config": dict(cell.config),
        "metrics": {
            "best_val_loss": 0.05 + 0.1 * rng.random(),
            "best_epoch": rng.randrange(EPOCHS),
            "epochs_run": EPOCHS,
            "final_train_accuracy": 0.99,
            "test_accuracy": val_accuracy - 0.005 + 0.01 * rng.random(),
            "test_loss": 0.05 + 0.1 * rng.random(),
            "best_val_accuracy": val_accuracy,
        },
        "timing": {
            "epoch_seconds": epoch_seconds,
            "total_seconds": sum(epoch_seconds),
            "wall_seconds_this_attempt": sum(epoch_seconds) + 8,
            "finished": "2026-01-01T00:00:00+00:00",
        },
        "resumed_at_epochs": [],
        "diverged_at_epoch": None,
        "env": {
            "versions": {"python": "3.11.2", "keras": "3.15.0", "numpy": "2.4.0"},
            "keras_backend": "tensorflow",
            "host": "node042",
            "slurm": {"slurm_job_id": "123456", "slurm_array_task_id": "7"},
            "cuda_visible_devices": "0",
        },
        "params": {"trainable": 269322, "total": 269322},
    }


def write_sweep(sweep_dir: Path, runs: int, with_probabilities: int, labels: ensemble.Labels):
    """The folder `launch` would leave behind; plain writes (no fsync) to keep set-up short."""
    grid = grid_for(runs)
    document = {"name": "bench", "grid": grid, "train": {"epochs": EPOCHS}}
    cells = parse_spec(document, sweep_dir / "sweep.json", allow_large=True).cells()[:runs]
    record = {
        "name": "bench",
        "fingerprint": "bench",
        "spec_path": "bench/bench_aggregate.py",
        "axes": list(grid),
        "grid": grid,
        "train": document["train"],
        "ensemble_top_k": 10,
        "cells": len(cells),
    }
    layout = SweepLayout(sweep_dir)
    sweep_dir.mkdir(parents=True)
    layout.record.write_text(json.dumps(record))
    rng = random.Random(0)
    written = []
    for cell in cells:
        run = layout.run(cell)
        run.root.mkdir(parents=True)
        result = result_for(cell, rng)
        run.result.write_text(json.dumps(result, indent=1))
        curve = [result["metrics"]["best_val_accuracy"] - 0.02 / (epoch + 1) for epoch in range(20)]
        run.history.write_text(json.dumps({"val_accuracy": curve}))
        written.append((result["metrics"]["best_val_accuracy"], run.root.name))
    generator = np.random.default_rng(0)
    for _, name in sorted(written, reverse=True)[:with_probabilities]:
        run = layout.run_named(name)
        np.save(run.val_probs, noisy_probabilities(labels.validation(VAL_SIZE), generator))
        np.save(run.test_probs, noisy_probabilities(labels.test, generator))


def noisy_probabilities(labels: np.ndarray, generator: np.random.Generator) -> np.ndarray:
    logits = generator.normal(size=(len(labels), 10)).astype(np.float32)
    logits[np.arange(len(labels)), labels] += 8.0  # ~99% right, confident: like trained nets
    exponentials = np.exp(logits)
    return exponentials / exponentials.sum(axis=1, keepdims=True)


def labels_for_bench() -> tuple[ensemble.Labels, Path | None]:
    """MNIST's labels when the data is prepared (so the report draws its digits), else random."""
    try:
        mnist = data.load()
        return ensemble.Labels(mnist.y_train, mnist.y_test), data.default_data_dir()
    except MnistsweepError:
        generator = np.random.default_rng(1)
        train = generator.integers(0, 10, 60000)
        return ensemble.Labels(train, generator.integers(0, 10, TEST_SIZE)), None


def timed(name: str, action: Callable[[], Any], timings: dict[str, float]) -> Any:
    started = time.perf_counter()
    value = action()
    timings[name] = time.perf_counter() - started
    print(f"  {name:<34} {timings[name]:7.3f} s", flush=True)
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--probabilities", type=int, default=100, help="runs given probs files")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--keep", type=Path, help="write the sweep here and keep it")
    parser.add_argument("--no-report", action="store_true", help="skip the end-to-end report")
    arguments = parser.parse_args()

    labels, data_dir = labels_for_bench()
    with tempfile.TemporaryDirectory(prefix="bench-aggregate-") as temporary:
        sweep_dir = (arguments.keep or Path(temporary)) / "bench"
        started = time.perf_counter()
        write_sweep(sweep_dir, arguments.runs, arguments.probabilities, labels)
        print(f"wrote {arguments.runs} run folders in {time.perf_counter() - started:.1f} s")
        print(f"timings ({arguments.runs} runs, warm page cache):")
        timings: dict[str, float] = {}
        axes = json.loads(SweepLayout(sweep_dir).record.read_text())["axes"]
        frame = timed("runs.load_runs", lambda: runs.load_runs(sweep_dir), timings).frame
        timed("tables.summarize", lambda: tables.summarize(frame, axes), timings)
        timed("configuration_table", lambda: tables.configuration_table(frame, axes), timings)
        timed("marginal_tables", lambda: tables.marginal_tables(frame, axes), timings)
        timed(
            f"ensemble.find_ensembles (top {arguments.top_k})",
            lambda: ensemble.find_ensembles(frame, labels, arguments.top_k),
            timings,
        )
        core = sum(timings.values())
        print(f"load + tables + ensemble: {core:.3f} s = {core / GOAL_SECONDS:.2f} x the 3 s goal")
        if not arguments.no_report:
            timed(
                "build.write_report (end to end)",
                lambda: build.write_report(sweep_dir, arguments.top_k, data_dir=data_dir),
                timings,
            )
            seconds = timings["build.write_report (end to end)"]
            print(f"whole report: {seconds:.3f} s = {seconds / GOAL_SECONDS:.2f} x the goal")
        bundle = timed("archive.archive", lambda: archive.archive(sweep_dir), timings)
        print(f"archive: {bundle.stat().st_size / 1024**2:.1f} MiB for {arguments.runs} runs")


if __name__ == "__main__":
    main()
