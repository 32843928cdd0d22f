"""Train one cell: data split → model → fit with per-epoch checkpoints → best model → result.json.

The trainer knows nothing about SLURM or the sweep's other cells. Everything a later stage needs
(metrics, history, class probabilities, the best model) lands in the cell's run directory, and
`result.json` is written last and atomically: its presence means the run is complete.
"""

from __future__ import annotations

import json
import math
import os
import platform
import socket
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter, CUDA probes

import keras
import numpy as np

from mnistsweep.sweep.rundir import RunFiles, write_json_atomic
from mnistsweep.sweep.spec import Cell
from mnistsweep.train import data, models
from mnistsweep.train.tblog import EventLog

EVAL_BATCH = 2048  # inference needs no small batches; large ones are several times faster
# Training steps per call into TensorFlow: small nets spend much of a step in dispatch (1.5x the
# MLP's epoch speed on 2 cores at 32). JAX unrolls these steps into one program, which would
# multiply its compile time, so there each call stays one step.
STEPS_PER_EXECUTION = {"tensorflow": 32}


@dataclass(frozen=True)
class Split:
    """Training, validation (the last share of the 60,000, the same for every seed) and test."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def split_data(mnist: data.Mnist, validation_split: float, train_subset: int | None) -> Split:
    n_val = round(len(mnist.x_train) * validation_split)
    n_train = len(mnist.x_train) - n_val
    limit = min(train_subset or n_train, n_train)

    def as_float(x: np.ndarray) -> np.ndarray:
        return x.astype("float32")

    return Split(
        x_train=as_float(mnist.x_train[:limit]),
        y_train=mnist.y_train[:limit].astype("int32"),
        x_val=as_float(mnist.x_train[n_train:]),
        y_val=mnist.y_train[n_train:].astype("int32"),
        x_test=as_float(mnist.x_test),
        y_test=mnist.y_test.astype("int32"),
    )


def deterministic_kernels(model: keras.Model) -> bool:
    """Same seed, same result, at XLA's speed where the layers allow it.

    An XLA-compiled step is deterministic on its own; TensorFlow's op determinism would turn XLA
    off (Keras refuses both at once), so it is switched on only for models XLA cannot compile
    (TensorFlow's image transform in the augmentation layer). Returns whether to use XLA.
    """
    use_xla = all(layer.supports_jit for layer in model.layers)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf
        from tensorflow.python.framework import config as tf_config

        if use_xla:
            tf_config.disable_op_determinism()  # a process may train several cells in turn
        else:
            tf.config.experimental.enable_op_determinism()
    return use_xla


def learning_rate(config: dict[str, Any], steps_per_epoch: int) -> Any:
    initial = config["learning_rate"]
    total_steps = steps_per_epoch * config["epochs"]
    if config["lr_schedule"] == "cosine":
        return keras.optimizers.schedules.CosineDecay(initial, decay_steps=total_steps, alpha=0.01)
    if config["lr_schedule"] == "exponential":
        # Down to 1% of the initial rate by the last epoch.
        return keras.optimizers.schedules.ExponentialDecay(initial, total_steps, decay_rate=0.01)
    return initial


class RunRecorder(keras.callbacks.Callback):
    """Per epoch: history, timing, TensorBoard scalars, best weights, and a resumable checkpoint.

    Every file is replaced atomically, so a job killed at any moment resumes from its last
    completed epoch with weights, optimizer state, history and best-so-far intact.
    """

    def __init__(self, files: RunFiles, state: dict[str, Any], events: EventLog):
        super().__init__()
        self.files = files
        self.state = state
        self.events = events
        self._epoch_start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = dict(logs or {})
        seconds = time.perf_counter() - self._epoch_start
        history = self.state["history"]
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            history.setdefault(key, []).append(float(logs.get(key, math.nan)))
        history.setdefault("seconds", []).append(seconds)
        self.events.scalars(
            "train", {"epoch_loss": logs["loss"], "epoch_accuracy": logs["accuracy"]}, epoch
        )
        self.events.scalars(
            "validation",
            {"epoch_loss": logs["val_loss"], "epoch_accuracy": logs["val_accuracy"]},
            epoch,
        )
        if not (math.isfinite(logs["loss"]) and math.isfinite(logs["val_loss"])):
            self.state["diverged_at"] = epoch
            self.model.stop_training = True
            return
        # New files under new names first; state.json, written last, commits the epoch.
        if logs["val_loss"] < self.state["best_val_loss"]:
            best = self.files.best_weights_of(epoch)
            save_atomic(best, self.model.save_weights)
            self.state.update(
                best_val_loss=float(logs["val_loss"]), best_epoch=epoch, best_weights=best.name
            )
        checkpoint = self.files.checkpoint_after(epoch + 1)
        save_atomic(checkpoint, self.model.save)
        self.state.update(epochs_done=epoch + 1, checkpoint=checkpoint.name)
        write_json_atomic(self.files.state, self.state)
        self.files.remove_training_files(
            keep=[checkpoint, self.files.named_in(self.state, "best_weights")]
        )


def save_atomic(path: Path, save: Any) -> None:
    """Keras picks the format from the suffix, so the temporary name keeps it."""
    temporary = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    save(str(temporary))
    os.replace(temporary, path)


def run_cell(cell: Cell, run_dir: Path, data_dir: Path | None = None) -> dict[str, Any]:
    """Train `cell` in `run_dir` (resuming if a checkpoint is there) and return its result."""
    files = RunFiles(run_dir)
    files.root.mkdir(parents=True, exist_ok=True)
    config = dict(cell.config)
    started = time.time()
    split = split_data(data.load(data_dir), config["validation_split"], config["train_subset"])
    steps_per_epoch = math.ceil(len(split.x_train) / config["batch_size"])

    state = files.read_state(cell.id)
    if state is not None:
        model = keras.models.load_model(files.named_in(state, "checkpoint"))
        keras.utils.set_random_seed(config["seed"] + state["epochs_done"])
        deterministic_kernels(model)
    else:
        keras.utils.set_random_seed(config["seed"])
        state = {
            "cell_id": cell.id,
            "epochs_done": 0,
            "best_val_loss": math.inf,
            "best_epoch": None,
            "history": {},
            "resumed_at": [],
        }
        model = models.build_model(
            config["arch"],
            normalization=config["normalization"],
            x_train=split.x_train,
            dropout=config["dropout"],
            l2=config["l2"],
            augment=config["augment"],
            seed=config["seed"],
        )
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate(config, steps_per_epoch)),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
            jit_compile=deterministic_kernels(model),
            steps_per_execution=STEPS_PER_EXECUTION.get(keras.backend.backend(), 1),
        )
        write_summary(files, cell)
    if state["epochs_done"]:
        state["resumed_at"].append(state["epochs_done"])

    events = EventLog(files.tensorboard)
    try:
        if state["epochs_done"] == 0:
            events.text("train", "summary", "```\n" + files.summary.read_text() + "\n```")
            events.hparams(tensorboard_hparams(cell), trial_id=cell.name)
        model.fit(
            split.x_train,
            split.y_train,
            batch_size=config["batch_size"],
            epochs=config["epochs"],
            initial_epoch=state["epochs_done"],
            validation_data=(split.x_val, split.y_val),
            validation_batch_size=EVAL_BATCH,
            callbacks=[RunRecorder(files, state, events)],
            verbose=0,
        )
        if "diverged_at" in state:
            result = base_result(cell, state, started, status="diverged")
        else:
            result = evaluate_best(model, files, split, cell, state, started)
            events.scalars("test", {"test_accuracy": result["metrics"]["test_accuracy"]}, 0)
    finally:
        events.close()
    write_json_atomic(files.history, state["history"])
    write_json_atomic(files.result, result)
    # model.keras holds the best weights now; the resume point and the weights copy are spent.
    files.remove_training_files()
    return result


def evaluate_best(
    model: keras.Model,
    files: RunFiles,
    split: Split,
    cell: Cell,
    state: dict[str, Any],
    started: float,
) -> dict[str, Any]:
    """Restore the weights with the lowest validation loss, then score them on the test set."""
    model.load_weights(files.named_in(state, "best_weights"))
    save_atomic(files.model, model.save)
    val_probs = model.predict(split.x_val, batch_size=EVAL_BATCH, verbose=0)
    test_probs = model.predict(split.x_test, batch_size=EVAL_BATCH, verbose=0)
    np.save(files.val_probs, val_probs.astype("float32"))
    np.save(files.test_probs, test_probs.astype("float32"))
    result = base_result(cell, state, started, status="completed")
    result["metrics"].update(
        test_accuracy=accuracy(test_probs, split.y_test),
        test_loss=cross_entropy(test_probs, split.y_test),
        best_val_accuracy=accuracy(val_probs, split.y_val),
    )
    result["params"] = {
        "trainable": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
        "total": int(model.count_params()),
    }
    return result


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(probabilities, axis=1) == labels))


def cross_entropy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Keras's categorical cross-entropy: clip at 1e-7 so a confident mistake stays finite."""
    picked = np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1.0)
    return float(-np.mean(np.log(picked)))


def base_result(cell: Cell, state: dict[str, Any], started: float, status: str) -> dict[str, Any]:
    history = state["history"]
    finished = time.time()
    return {
        "status": status,
        "cell_id": cell.id,
        "cell_name": cell.name,
        "axes": list(cell.axes),
        "config": dict(cell.config),
        "metrics": {
            "best_val_loss": state["best_val_loss"] if state["best_epoch"] is not None else None,
            "best_epoch": state["best_epoch"],
            "epochs_run": len(history.get("loss", [])),
            "final_train_accuracy": (history.get("accuracy") or [None])[-1],
        },
        "timing": {
            "epoch_seconds": history.get("seconds", []),
            "total_seconds": sum(history.get("seconds", [])),
            "wall_seconds_this_attempt": finished - started,
            "finished": datetime.fromtimestamp(finished, timezone.utc).isoformat(),
        },
        "resumed_at_epochs": state["resumed_at"],
        "diverged_at_epoch": state.get("diverged_at"),
        "env": environment(),
    }


def tensorboard_hparams(cell: Cell) -> dict[str, Any]:
    """HParams accepts str, bool and numbers; None (a tutorial default) is shown as text."""
    return {
        axis: "default" if cell.config[axis] is None else cell.config[axis] for axis in cell.axes
    }


def write_summary(files: RunFiles, cell: Cell) -> None:
    """The tutorials keep the command and its arguments beside every run: so do we."""
    lines = [
        f"command: {' '.join(sys.argv)}",
        f"cell: {cell.name} ({cell.id})",
        "config: " + json.dumps(dict(cell.config), sort_keys=True),
    ]
    files.summary.write_text("\n".join(lines) + "\n")


def environment() -> dict[str, Any]:
    backend = keras.backend.backend()
    versions = {
        "python": platform.python_version(),
        "keras": keras.__version__,
        "numpy": np.__version__,
    }
    if backend == "tensorflow":
        import tensorflow as tf

        versions["tensorflow"] = tf.__version__
    elif backend == "jax":
        import jax

        versions["jax"] = jax.__version__
    slurm = {
        key.lower(): os.environ[key]
        for key in (
            "SLURM_JOB_ID",
            "SLURM_ARRAY_JOB_ID",
            "SLURM_ARRAY_TASK_ID",
            "SLURM_RESTART_COUNT",
        )
        if key in os.environ
    }
    return {
        "versions": versions,
        "keras_backend": backend,
        "host": socket.gethostname(),
        "slurm": slurm or None,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
