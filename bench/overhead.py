"""Per-cell overhead: 8 short cells through `mnistsweep launch` against a plain Keras loop.

The cells: logistic regression and the 256-256 MLP, raw or standardized input, 2 seeds, 2 epochs
on 6,000 images (the validation set is the usual last 6,000 of the 60,000). mnistsweep trains
them as a user does — `python -m mnistsweep launch SPEC --executor local` in a fresh results
folder, the 8 cells packed into one job — with everything it does for a cell (checkpoints every
epoch, TensorBoard, the best model, probabilities, result.json, the report at the end). The
plain loop is one process that does what the tutorials do for each cell: build, compile, `fit`
with validation data, ModelCheckpoint (best by validation loss) and the TensorBoard callback,
reload the best model, `evaluate` on the test set, save the class probabilities. The two are
timed as whole processes (start included), alternating, so that a busy machine slows both alike.

    .venv/bin/python bench/overhead.py --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SEEDS = (0, 1)
ARCHS = ("linear", "mlp")
NORMALIZATIONS = ("raw", "standardize")
EPOCHS = 2
TRAIN_IMAGES = 6000

SPEC = f"""
name: overhead
grid:
  arch: {list(ARCHS)}
  normalization: {list(NORMALIZATIONS)}
  seed: {list(SEEDS)}
train:
  epochs: {EPOCHS}
  train_subset: {TRAIN_IMAGES}
executor:
  backend: local
  cells_per_job: 8
"""

PLAIN_LOOP = f"""
import sys
import keras
import numpy as np
from mnistsweep.train import data, models

out = sys.argv[1]
mnist = data.load(None)
x_train = mnist.x_train[:{TRAIN_IMAGES}].astype("float32")
y_train = mnist.y_train[:{TRAIN_IMAGES}]
x_val, y_val = mnist.x_train[-6000:].astype("float32"), mnist.y_train[-6000:]
x_test, y_test = mnist.x_test.astype("float32"), mnist.y_test
for arch in {ARCHS!r}:
    for normalization in {NORMALIZATIONS!r}:
        for seed in {SEEDS!r}:
            name = f"{{out}}/{{arch}}-{{normalization}}-{{seed}}"
            keras.utils.set_random_seed(seed)
            model = models.build_model(arch, normalization=normalization, x_train=x_train)
            model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                          metrics=["accuracy"])
            model.fit(x_train, y_train, batch_size=128, epochs={EPOCHS}, verbose=0,
                      validation_data=(x_val, y_val),
                      callbacks=[keras.callbacks.ModelCheckpoint(name + ".keras",
                                                                 save_best_only=True),
                                 keras.callbacks.TensorBoard(name + "-tb")])
            model = keras.models.load_model(name + ".keras")
            print(name, "test accuracy", model.evaluate(x_test, y_test, verbose=0)[1])
            np.save(name + "-probs_test.npy", model.predict(x_test, verbose=0))
            np.save(name + "-probs_val.npy", model.predict(x_val, verbose=0))
"""


def timed(command: list[str]) -> float:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
    if finished.returncode != 0:
        raise SystemExit(f"{command[:4]} failed:\n{finished.stdout}\n{finished.stderr}")
    return time.perf_counter() - started


def plain_loop(scratch: Path) -> float:
    scratch.mkdir()
    return timed([sys.executable, "-c", PLAIN_LOOP, str(scratch)])


def mnistsweep(scratch: Path) -> float:
    scratch.mkdir()
    spec = scratch / "overhead.yaml"
    spec.write_text(SPEC)
    command = [sys.executable, "-m", "mnistsweep", "launch", str(spec), "--executor", "local"]
    seconds = timed([*command, "--results-dir", str(scratch / "results")])
    report_stages(scratch / "results" / "overhead" / "runs")
    return seconds


def report_stages(runs: Path) -> None:
    """Where the trainer's time went, summed over the cells (from each result.json)."""
    totals: dict[str, float] = {}
    for result_file in sorted(runs.glob("*/result.json")):
        result = json.loads(result_file.read_text())
        assert result["status"] == "completed", result_file
        for stage, seconds in result["timing"]["stages"].items():
            totals[stage] = totals.get(stage, 0.0) + seconds
    stages = ", ".join(f"{stage} {seconds:.1f}" for stage, seconds in totals.items())
    print(f"    trainer stages (s, 8 cells): {stages}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    seconds: dict[str, list[float]] = {"plain loop": [], "mnistsweep": []}
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            for name, run in (("plain loop", plain_loop), ("mnistsweep", mnistsweep)):
                folder = Path(scratch) / f"{name.replace(' ', '-')}-{repeat}"
                seconds[name].append(run(folder))
                print(f"{name:>10} run {repeat + 1}: {seconds[name][-1]:.1f} s", flush=True)
    plain, ours = (statistics.median(seconds[name]) for name in ("plain loop", "mnistsweep"))
    print(
        f"short cells speed-up {plain / ours:.2f}x: median {ours:.1f} s (mnistsweep launch) vs "
        f"{plain:.1f} s (plain Keras loop); 8 cells, {EPOCHS} epochs on {TRAIN_IMAGES:,} "
        f"images, {os.cpu_count()} cores, backend {os.environ.get('KERAS_BACKEND', 'tensorflow')}"
    )


if __name__ == "__main__":
    main()
