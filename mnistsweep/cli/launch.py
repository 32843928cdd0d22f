"""`launch`: train a sweep's unfinished cells, here or on SLURM; then aggregate and report.

This module declares the options and applies them to the spec through the spec's own schema;
execute.launch runs the launch and hands back its outcome; cli.launch_output prints it."""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from mnistsweep.cli.common import RESULTS_ENV, add_data_dir, default_results_dir
from mnistsweep.cli.launch_output import INTERRUPTED, ConsoleEvents, show_dry_run, show_outcome
from mnistsweep.execute.backends import AUTO, BACKENDS

if TYPE_CHECKING:
    from mnistsweep.execute.launch import LaunchRequest
    from mnistsweep.sweep.spec import Spec


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    launch = commands.add_parser("launch", help="train every unfinished cell of a sweep spec")
    launch.add_argument("spec", type=Path, help="sweep spec (YAML), e.g. sweeps/quick.yaml")
    launch.add_argument("--executor", choices=(AUTO, *BACKENDS), help="overrides executor.backend")
    launch.add_argument(
        "--results-dir",
        type=Path,
        default=None,
        help=f"default: ${RESULTS_ENV} or ./results; a sweep NAME lives in DIR/NAME",
    )
    add_data_dir(launch)
    launch.add_argument(
        "--dry-run",
        action="store_true",
        help="validate and list the cells (and the sbatch script) without running",
    )
    launch.add_argument(
        "--wait", action="store_true", help="SLURM: stay until every job ends, then aggregate"
    )
    launch.add_argument("--retry-failed", action="store_true", help="train failed cells again")
    launch.add_argument(
        "--allow-large", action="store_true", help="accept a grid above the cell limit (10,000)"
    )
    launch.add_argument(
        "--concurrent-cells",
        metavar="N",
        help="overrides executor.concurrent_cells: cells one job trains at once "
        "(several fill a GPU; on a CPU, 1); bounded by the spec's schema",
    )
    launch.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="AXIS=V1[,V2]",
        help="train only the cells with these axis values (repeatable), e.g. "
        "--only arch=linear,mlp; the rest stay for a later launch",
    )
    launch.set_defaults(func=run, interrupted_message=INTERRUPTED)


def run(args: argparse.Namespace) -> int:
    from mnistsweep.train import data

    # Started before the launch's modules are imported and its plan made, which it overlaps.
    checking = None if args.dry_run else data.BackgroundCheck(args.data_dir)
    from mnistsweep.execute import launch

    request = replace(make_request(args), data_checking=checking)
    events = ConsoleEvents()
    if args.dry_run:
        return show_dry_run(launch.dry_run(request, events))
    try:
        outcome = launch.launch(request, events)
    except KeyboardInterrupt:
        print(events.interrupted_message, file=sys.stderr)
        return 130
    return show_outcome(outcome, request)


def make_request(args: argparse.Namespace) -> LaunchRequest:
    from mnistsweep.execute import plan as planning
    from mnistsweep.execute.launch import LaunchRequest
    from mnistsweep.sweep.spec import load_spec

    spec = with_overrides(
        load_spec(args.spec, allow_large=args.allow_large),
        {"backend": args.executor, "concurrent_cells": number(args.concurrent_cells)},
    )
    return LaunchRequest(
        spec,
        args.results_dir or default_results_dir(),
        args.data_dir,
        args.retry_failed,
        planning.parse_only(spec, args.only),
        args.wait,
    )


def number(text: str | None) -> int | str | None:
    """An integer as given; anything else (a number of thousands of digits too) is passed on
    for the schema to refuse."""
    if text is not None and re.fullmatch(r"[+-]?[0-9]{1,18}", text.strip()):
        return int(text)
    return text


def with_overrides(spec: Spec, options: dict[str, object]) -> Spec:
    """The spec with command-line values for executor keys, checked by the spec's own schema
    (one bound per option); None keeps the spec's value. A bad value is one error line."""
    from pydantic import ValidationError

    from mnistsweep.errors import MnistsweepError
    from mnistsweep.sweep.spec import ExecutorOptions
    from mnistsweep.sweep.yaml_loader import shown

    given = {key: value for key, value in options.items() if value is not None}
    try:
        return replace(spec, executor=replace(spec.executor, **given))  # type: ignore[arg-type]
    except ValidationError as invalid:
        key = str(invalid.errors()[0]["loc"][0])
        field = ExecutorOptions.__pydantic_fields__[key]  # type: ignore[attr-defined]
        raise MnistsweepError(
            f"--{key.replace('_', '-')}: got {shown(given[key])}; expected {field.description}"
        ) from None
