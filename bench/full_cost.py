"""The CPU cost of a sweep, block by block, from a `cpu_trainer.py --json` measurement.

Each cell costs its first epoch plus (epochs - 1) steady epochs on the path the trainer takes
for it, taken from the bench case with its net, augmentation and dropout. A measurement on a
subset is scaled to the cell's training images: the steady epoch in proportion, the first
epoch's extra (tracing, compiling) as measured. Cells that differ only by seed reuse a
compiled model within a job, so a block's later seeds pay less than counted here.

    .venv/bin/python bench/full_cost.py /tmp/bench.json --measured-images 10800
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import yaml

from mnistsweep.sweep.spec import parse_spec
from mnistsweep.train import runtime

REPO = Path(__file__).resolve().parents[1]
TRAIN_IMAGES = 54_000


def bench_case(config: dict[str, Any]) -> str:
    """The cpu_trainer.py case that measured a cell's speed (see its CASES)."""
    arch = config["arch"]
    if arch == "vanilla_cnn" and config["dropout"]:
        return "vanilla_cnn dropout 0.25"
    if arch == "fancy_cnn" and config["augment"] != "none":
        return "fancy_cnn augmented"
    return str(arch)


def epoch_seconds(
    runs: list[dict[str, Any]], config: dict[str, Any], scale: float
) -> tuple[float, float]:
    """(first, steady) seconds of a full cell epoch on the trainer's path for `config`."""
    path = runtime.training_path("tensorflow", config["arch"], config["augment"] == "none")
    way = path if path in runs[0] else "chosen"
    firsts = [run[way]["epoch_seconds"][0] for run in runs]
    steadies = [statistics.median(run[way]["epoch_seconds"][1:]) for run in runs]
    first, steady = statistics.median(firsts), statistics.median(steadies)
    return first - steady + steady * scale, steady * scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("measurement", type=Path, help="cpu_trainer.py --json output")
    parser.add_argument("--measured-images", type=int, default=TRAIN_IMAGES)
    parser.add_argument("--spec", type=Path, default=REPO / "sweeps" / "full.yaml")
    args = parser.parse_args()
    measured = json.loads(args.measurement.read_text())
    document = yaml.safe_load(args.spec.read_text())
    total = 0.0
    print("| block | net | cells | epochs | steady epoch | first epoch | CPU-seconds |")
    print("|---|---|---|---|---|---|---|")
    for number, block in enumerate(document["grid"], start=1):
        groups: dict[tuple[str, int], list[float]] = {}
        times: dict[tuple[str, int], tuple[float, float]] = {}
        for cell in parse_spec({**document, "grid": block}, args.spec).cells():
            config = dict(cell.config)
            images = min(config["train_subset"] or TRAIN_IMAGES, TRAIN_IMAGES)
            case = bench_case(config)
            first, steady = epoch_seconds(measured[case], config, images / args.measured_images)
            key = (case, config["epochs"])
            groups.setdefault(key, []).append(first + (config["epochs"] - 1) * steady)
            times[key] = (first, steady)
        for (case, epochs), costs in groups.items():
            first, steady = times[(case, epochs)]
            print(
                f"| {number} | {case} | {len(costs)} | {epochs} | {steady:.1f} s | {first:.1f} s "
                f"| {sum(costs):,.0f} |"
            )
            total += sum(costs)
    print(f"\n{total:,.0f} CPU-seconds ({total / 3600:.1f} h) for {args.spec.name}")


if __name__ == "__main__":
    main()
