"""Sweep throughput on one GPU: packed, concurrent cells against the naive way.

Naive: one `python -m mnistsweep train` process per cell, one after another (what users do in a
shell loop). Packed: one local launch whose single job trains the cells `--concurrent` at a time,
with JAX's persistent compilation cache shared by the workers. Same cells, same results; the
figure of merit is cell-epochs per GPU-second, reported as packed / naive.

    KERAS_BACKEND=jax python bench/gpu_throughput.py --cells 8 --epochs 3 --arch fancy_cnn
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml


def write_spec(folder: Path, name: str, args: argparse.Namespace) -> Path:
    document = {
        "name": name,
        "grid": {"seed": list(range(args.cells))},
        "train": {"arch": args.arch, "epochs": args.epochs, "batch_size": args.batch_size},
        "executor": {"backend": "local", "concurrent_cells": args.concurrent},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def naive(folder: Path, args: argparse.Namespace) -> float:
    started = time.perf_counter()
    for seed in range(args.cells):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "mnistsweep",
                "train",
                "--out",
                str(folder / f"naive-{seed}"),
                "--set",
                f"arch={args.arch}",
                "--set",
                f"epochs={args.epochs}",
                "--set",
                f"batch_size={args.batch_size}",
                "--set",
                f"seed={seed}",
            ],
            check=True,
            capture_output=True,
        )
    return time.perf_counter() - started


def packed(folder: Path, args: argparse.Namespace) -> float:
    folder.mkdir(parents=True, exist_ok=True)
    spec = write_spec(folder, "packed", args)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "mnistsweep", "launch", str(spec), "--results-dir", str(folder)],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def test_accuracies(folder: Path) -> list[float]:
    return sorted(
        json.loads(p.read_text())["metrics"]["test_accuracy"] for p in folder.rglob("result.json")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--arch", default="fancy_cnn")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--concurrent", type=int, default=8)
    parser.add_argument("--skip-naive", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        packed_seconds = packed(root / "packed-results", args)
        cell_epochs = args.cells * args.epochs
        print(f"packed: {packed_seconds:.1f} s, {cell_epochs / packed_seconds:.2f} cell-epochs/s")
        if args.skip_naive:
            return
        naive_seconds = naive(root / "naive-results", args)
        print(f"naive:  {naive_seconds:.1f} s, {cell_epochs / naive_seconds:.2f} cell-epochs/s")
        backend = os.environ.get("KERAS_BACKEND", "tensorflow")
        print(
            f"throughput ratio packed/naive: {naive_seconds / packed_seconds:.2f}x "
            f"({args.cells} x {args.arch}, {args.epochs} epochs, batch {args.batch_size}, "
            f"{args.concurrent} at once, backend {backend})"
        )
        same = test_accuracies(root / "packed-results") == test_accuracies(root / "naive-results")
        print(f"same test accuracies both ways: {same}")


if __name__ == "__main__":
    main()
