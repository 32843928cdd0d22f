"""What several commands share: the console, the default folders, argument types."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from rich.console import Console

from mnistsweep import fsio

RESULTS_ENV = "MNISTSWEEP_RESULTS"
console = Console(highlight=False, soft_wrap=True)


def default_results_dir() -> Path:
    """$MNISTSWEEP_RESULTS with `~` expanded as $MNISTSWEEP_DATA is (empty counts as unset),
    else ./results."""
    env = os.environ.get(RESULTS_ENV, "").strip()
    return fsio.expand_user(env) if env else Path("results")


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="where mnist.npz is: default $MNISTSWEEP_DATA or ~/.cache/mnistsweep",
    )


def add_sweep_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep_dir", type=Path, help="a sweep folder, e.g. results/quick")
