"""CPU trainer: `python -m mnistsweep train` against the tutorials' plain `model.fit` script.

Both train the same net (built by the registry, so the nets are identical) on the same real
MNIST split at the same settings, each in a fresh process, alternating net by net so that a busy
machine slows both alike. The plain script does what the tutorials do: `model.compile` at its
defaults (Keras turns XLA off on a CPU-only TensorFlow), `fit` with validation, ModelCheckpoint
on validation loss, the TensorBoard callback, `evaluate` of the best model. Each way reports its
first epoch (tracing, compiling) and the median of its later ("steady") epochs; the figure of
merit is plain steady / mnistsweep steady.

`--all` runs every net at its settings in `sweeps/full.yaml` (CASES), and the two variants of
a net there that change its speed (vanilla_cnn with dropout, fancy_cnn augmented);
`--paths tensorflow-xla,tensorflow-kernels` runs mnistsweep once per path (the measure that chose
runtime.TENSORFLOW_PATHS) instead of on its chosen one.

    .venv/bin/python bench/cpu_trainer.py --all --train-subset 10800 --epochs 3
    .venv/bin/python bench/cpu_trainer.py --arch mlp --epochs 20 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CHOSEN = "chosen"

# Each net at its settings in sweeps/full.yaml (the block of its tutorial row).
CASES: dict[str, dict[str, Any]] = {
    "linear": {"arch": "linear"},
    "mlp": {"arch": "mlp"},
    "vanilla_cnn": {"arch": "vanilla_cnn"},
    "vanilla_cnn dropout 0.25": {"arch": "vanilla_cnn", "dropout": 0.25},
    "fancy_cnn": {"arch": "fancy_cnn"},
    "fancy_cnn augmented": {"arch": "fancy_cnn", "augment": "standard"},
    "baseline_mlp": {"arch": "baseline_mlp", "normalization": "minmax", "batch_size": 200},
    "simple_cnn": {"arch": "simple_cnn", "normalization": "minmax", "batch_size": 200},
    "larger_cnn": {"arch": "larger_cnn", "normalization": "minmax", "batch_size": 200},
    "fcn_512": {"arch": "fcn_512", "normalization": "minmax"},
    "bn_cnn": {"arch": "bn_cnn", "normalization": "minmax", "augment": "light"},
    "mlp_sigmoid": {"arch": "mlp_sigmoid", "normalization": "standardize_global"},
    "vgg": {"arch": "vgg", "normalization": "standardize_global"},
    "vgg_dropout": {"arch": "vgg_dropout", "normalization": "standardize_global", "augment": "vgg"},
    "vgg_bn": {"arch": "vgg_bn", "normalization": "standardize_global", "augment": "vgg"},
}
DEFAULTS: dict[str, Any] = {
    "normalization": "standardize",
    "dropout": None,
    "augment": "none",
    "batch_size": 128,
}

# The plain script: argv[1] is a JSON of settings, argv[2] the output folder.
TUTORIAL_SCRIPT = """
import json, sys, time
import keras
import numpy as np
from mnistsweep.train import data, models

case, out = json.loads(sys.argv[1]), sys.argv[2]
mnist = data.load(None)
x, y = mnist.x_train.astype("float32"), mnist.y_train
x_train, y_train = x[:54000][: case["train_subset"]], y[:54000][: case["train_subset"]]
x_val, y_val = x[54000:], y[54000:]
keras.utils.set_random_seed(0)
model = models.build_model(case["arch"], normalization=case["normalization"], x_train=x_train,
                           dropout=case["dropout"], augment=case["augment"], seed=0)
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])

class Epochs(keras.callbacks.Callback):
    seconds = []
    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()
    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.started)

model.fit(x_train, y_train, batch_size=case["batch_size"], epochs=case["epochs"],
          validation_data=(x_val, y_val), verbose=0,
          callbacks=[Epochs(), keras.callbacks.ModelCheckpoint(out + "/best.keras",
                     save_best_only=True), keras.callbacks.TensorBoard(out + "/tb")])
model = keras.models.load_model(out + "/best.keras")
accuracy = model.evaluate(mnist.x_test.astype("float32"), mnist.y_test, verbose=0)[1]
json.dump({"epoch_seconds": Epochs.seconds, "test_accuracy": accuracy},
          open(out + "/plain.json", "w"))
"""

# mnistsweep's own command, with the net's path forced for the measure that chooses it.
MNISTSWEEP_SCRIPT = """
import sys
from mnistsweep.train import runtime
arch, path = sys.argv[1], sys.argv[2]
if path != "chosen":
    runtime.TENSORFLOW_PATHS[arch] = path
from mnistsweep.cli import main
sys.exit(main(sys.argv[3:]))
"""


def timed(command: list[str], backend: str) -> float:
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONPATH": str(REPO),
        "KERAS_BACKEND": backend,
    }
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"{command[:4]} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def plain(case: dict[str, Any], out: Path, backend: str) -> dict[str, Any]:
    out.mkdir(parents=True)
    wall = timed([sys.executable, "-c", TUTORIAL_SCRIPT, json.dumps(case), str(out)], backend)
    found = json.loads((out / "plain.json").read_text())
    return {**found, "wall": wall, "path": "plain fit"}


def mnistsweep(case: dict[str, Any], out: Path, backend: str, path: str) -> dict[str, Any]:
    settings = {key: value for key, value in case.items() if value is not None}
    flags = [part for key, value in settings.items() for part in ("--set", f"{key}={value}")]
    command = [sys.executable, "-c", MNISTSWEEP_SCRIPT, case["arch"], path, "train", *flags]
    wall = timed([*command, "--out", str(out)], backend)
    result = json.loads((out / "result.json").read_text())
    return {
        "epoch_seconds": result["timing"]["epoch_seconds"],
        "test_accuracy": result["metrics"]["test_accuracy"],
        "wall": wall,
        "path": result["timing"]["training_path"],
    }


def first_and_steady(run: dict[str, Any]) -> tuple[float, float]:
    seconds = run["epoch_seconds"]
    return seconds[0], statistics.median(seconds[1:]) if len(seconds) > 1 else math.nan


def measure(
    name: str, args: argparse.Namespace, scratch: Path, repeat: int
) -> dict[str, dict[str, Any]]:
    """One run of each way for the case `name`; plain first on even repeats, last on odd."""
    case = {
        **DEFAULTS,
        **CASES[name],
        "epochs": args.epochs,
        "train_subset": args.train_subset,
    }
    folder = scratch / f"{name.replace(' ', '_')}-{repeat}"
    ways: list[tuple[str, Any]] = [("plain", lambda: plain(case, folder / "plain", args.backend))]
    # TensorFlow's XLA cannot compile the augmentation: both paths are its kernels, run once.
    no_xla = case["augment"] != "none" and args.backend == "tensorflow"
    for path in args.paths:
        if not (no_xla and path == "tensorflow-xla" and "tensorflow-kernels" in args.paths):
            ways.append((path, lambda p=path: mnistsweep(case, folder / p, args.backend, p)))
    if repeat % 2:
        ways.reverse()
    runs: dict[str, dict[str, Any]] = {}
    for way, run in ways:
        runs[way] = run()
        first, steady = first_and_steady(runs[way])
        print(
            f"  {name:<26} {way:<20} first {first:7.2f} s  steady {steady:7.2f} s  "
            f"wall {runs[way]['wall']:6.1f} s  test {runs[way]['test_accuracy']:.4f}  "
            f"({runs[way]['path']})",
            flush=True,
        )
    for path in args.paths:
        runs.setdefault(path, runs.get("tensorflow-kernels", {}))
    return runs


def summary_rows(results: dict[str, list[dict[str, dict[str, Any]]]], paths: list[str]) -> str:
    """A Markdown table: per case, each way's first and steady epoch, and plain / mnistsweep."""
    header = ["net (settings)", "plain first", "plain steady"]
    for path in paths:
        header += [f"{path} first", f"{path} steady", f"{path} speed-up"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    ratios: dict[str, list[float]] = {path: [] for path in paths}
    for name, repeats in results.items():

        def median(way: str, index: int, runs: list[dict[str, dict[str, Any]]] = repeats) -> float:
            return statistics.median(first_and_steady(run[way])[index] for run in runs)

        cells = [name, f"{median('plain', 0):.2f}", f"{median('plain', 1):.2f}"]
        for path in paths:
            ratio = median("plain", 1) / median(path, 1)
            ratios[path].append(ratio)
            taken = repeats[0][path]["path"]
            cells += [f"{median(path, 0):.2f}", f"{median(path, 1):.2f} ({taken})", f"{ratio:.2f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    for path, values in ratios.items():
        geometric = math.exp(statistics.fmean(math.log(value) for value in values))
        lines.append(
            f"\n{path}: geometric mean speed-up {geometric:.2f}x, worst {min(values):.2f}x"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="every case of CASES")
    parser.add_argument("--arch", action="append", help="a case of CASES (repeatable)")
    parser.add_argument("--epochs", type=int, default=3, help="the first and N-1 steady epochs")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--train-subset", type=int, default=None, help="first N of 54,000")
    parser.add_argument("--backend", default=os.environ.get("KERAS_BACKEND", "tensorflow"))
    parser.add_argument(
        "--paths",
        type=lambda text: text.split(","),
        default=[CHOSEN],
        help="mnistsweep's paths to run: chosen (default) or tensorflow-xla,tensorflow-kernels",
    )
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    args = parser.parse_args()
    names = list(CASES) if args.all else (args.arch or ["fancy_cnn"])
    images = args.train_subset or 54_000
    print(
        f"{len(names)} cases, {args.epochs} epochs on {images:,} images, {args.repeats} repeat(s),"
        f" backend {args.backend}, {os.cpu_count()} cores; mnistsweep paths {args.paths}",
        flush=True,
    )
    started = time.perf_counter()
    results: dict[str, list[dict[str, dict[str, Any]]]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            for index, name in enumerate(names):
                runs = measure(name, args, Path(scratch), repeat + index)
                results.setdefault(name, []).append(runs)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print(summary_rows(results, args.paths))
    print(f"\n{time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
