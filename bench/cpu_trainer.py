"""CPU trainer: `python -m mnistsweep train` against the tutorials' plain `model.fit` script.

Both train the same architecture (built by the registry, so the nets are identical) on the same
real MNIST split for the same epochs, each in a fresh process, alternating so that a busy machine
slows both alike. The tutorial script does what the tutorials do: `validation_split=0.1`,
ModelCheckpoint on validation loss, the TensorBoard callback, `model.evaluate` on the test set
at its default batch. The figure is the ratio of median wall times (process start included).

    .venv/bin/python bench/cpu_trainer.py --arch fancy_cnn --epochs 2 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

TUTORIAL_SCRIPT = """
import sys
import keras
import numpy as np
from mnistsweep.train import data
from mnistsweep.train import models

arch, epochs, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
mnist = data.load(None)
x_train, y_train = mnist.x_train.astype("float32"), mnist.y_train
x_test, y_test = mnist.x_test.astype("float32"), mnist.y_test
keras.utils.set_random_seed(0)
model = models.build_model(arch, normalization="standardize", x_train=x_train[:54000],
                           dropout=None, l2=0.0, augment="none", seed=0)
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(x_train, y_train, batch_size=128, epochs=epochs, validation_split=0.1, verbose=0,
          callbacks=[keras.callbacks.ModelCheckpoint(out + "/best.keras", save_best_only=True),
                     keras.callbacks.TensorBoard(out + "/tb")])
model = keras.models.load_model(out + "/best.keras")
print("test accuracy", model.evaluate(x_test, y_test, verbose=0)[1])
"""


def timed(command: list[str]) -> float:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env, cwd=REPO)
    return time.perf_counter() - started


def tutorial(args: argparse.Namespace, out: Path) -> float:
    out.mkdir()
    script = [sys.executable, "-c", TUTORIAL_SCRIPT, args.arch, str(args.epochs), str(out)]
    return timed(script)


def mnistsweep(args: argparse.Namespace, out: Path) -> float:
    settings = ["--set", f"arch={args.arch}", "--set", f"epochs={args.epochs}"]
    return timed([sys.executable, "-m", "mnistsweep", "train", *settings, "--out", str(out)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="fancy_cnn")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    seconds: dict[str, list[float]] = {"tutorial": [], "mnistsweep": []}
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            for name, run in (("tutorial", tutorial), ("mnistsweep", mnistsweep)):
                seconds[name].append(run(args, Path(scratch) / f"{name}-{repeat}"))
                print(f"{name:>10} run {repeat + 1}: {seconds[name][-1]:.1f} s", flush=True)
    plain, ours = (statistics.median(seconds[name]) for name in ("tutorial", "mnistsweep"))
    print(
        f"CPU trainer speed-up {plain / ours:.2f}x: median {ours:.1f} s (mnistsweep train) vs "
        f"{plain:.1f} s (tutorial model.fit); {args.arch}, {args.epochs} epochs on 54,000 images, "
        f"{os.cpu_count()} cores, backend {os.environ.get('KERAS_BACKEND', 'tensorflow')}"
    )


if __name__ == "__main__":
    main()
