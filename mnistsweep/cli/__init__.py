"""The command line: each command declares its options and its action once, in its own module.

`main` parses, calls the command's action, and turns a user error into one line and exit code 2.
Exit codes: 0 success; 1 some cells failed, were lost or have no result; 2 a user error (bad spec,
missing data, damaged sweep folder); 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys

from mnistsweep.cli import archive, data, launch, results, status, train
from mnistsweep.errors import MnistsweepError

COMMANDS = (data, launch, train, results, status, archive)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mnistsweep",
        description="Sweeps of the classic Keras MNIST tutorials, locally or on SLURM.",
    )
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(subcommands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except MnistsweepError as error:
        print(f"error: {one_line(str(error))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(getattr(args, "interrupted_message", "interrupted"), file=sys.stderr)
        return 130


def one_line(message: str, limit: int = 2000) -> str:
    """Errors are one line: a newline or a control character from a file never splits them."""
    flat = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in message)
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
