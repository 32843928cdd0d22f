"""Train one cell: data split → model → fit, one epoch at a time → best state → result.json.

The trainer knows nothing about SLURM or the sweep's other cells. Everything a later stage needs
(metrics, history, class probabilities, the best model) lands in the cell's run directory, and
`result.json` is written last and atomically: its presence means the run is complete.

Every random stream is a function of the cell's seed and the epoch, or restored from the
checkpoint: the data order of epoch e is a permutation drawn from (seed, e), and the dropout and
augmentation seed generators are variables saved with the weights. A run stopped at any epoch
boundary and resumed therefore ends bit for bit where the run left alone ends.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from mnistsweep.train import runtime  # numpy only: the process's start is timed before Keras

STARTUP_SECONDS = runtime.process_age()
_IMPORTS_STARTED = time.perf_counter()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter, CUDA probes

# The imports below are timed (E402): they are a part of the first cell's overhead.
import keras  # noqa: E402
import numpy as np  # noqa: E402

from mnistsweep import fsio, metrics  # noqa: E402
from mnistsweep.errors import MnistsweepError  # noqa: E402
from mnistsweep.sweep import records, rungs  # noqa: E402
from mnistsweep.sweep.layout import RunLayout, SweepLayout  # noqa: E402
from mnistsweep.sweep.spec import Cell  # noqa: E402
from mnistsweep.sweep.state import CellState  # noqa: E402
from mnistsweep.train import data, models, provenance  # noqa: E402
from mnistsweep.train.checkpoint import Checkpoints  # noqa: E402
from mnistsweep.train.pace import Pace  # noqa: E402
from mnistsweep.train.runtime import Split, StageClock  # noqa: E402
from mnistsweep.train.tblog import EventLog  # noqa: E402

IMPORT_SECONDS = time.perf_counter() - _IMPORTS_STARTED
EVAL_BATCH = 2048  # inference needs no small batches; large ones are several times faster
# Training steps per call into TensorFlow: small nets spend much of a step in dispatch (1.5x the
# MLP's epoch speed on 2 cores at 32). JAX unrolls these steps into one program, which would
# multiply its compile time, so there each call stays one step.
STEPS_PER_EXECUTION = {"tensorflow": 32}
# Divergence: a non-finite loss, or an absurd one with nothing learnt: an epoch's mean training
# loss above a thousand times chance level (ln 10 ≈ 2.3) while its training accuracy stays below
# twice chance. Neither part alone would do. Healthy nets never come near the bound: on raw
# 0..255 pixels the worst starts near 170 (baseline_mlp; logistic regression 150), and l2=1.0
# adds at most 1,150 at initialisation (fcn_512). But Keras computes the training loss from the
# logits, unclipped, so logistic regression on raw pixels at learning_rate=10 averages 58,000
# while reaching 88% accuracy: large, yet learning. Measured with diverged runs: 7.6e7 at 16%
# (mlp, l2=1, learning_rate=10), 3.1e6 at 10% (mlp on raw pixels, learning_rate=1).
DIVERGED_LOSS = 1000 * math.log(10)
CHANCE_ACCURACY = 0.1


def split_data(mnist: data.Mnist, validation_split: float, train_subset: int | None) -> Split:
    """Training, validation (the last share of the 60,000, the same for every seed) and test."""
    n_val = round(len(mnist.x_train) * validation_split)
    n_train = len(mnist.x_train) - n_val
    if n_val == 0 or n_train == 0:
        raise MnistsweepError(
            f"train.validation_split: {validation_split} leaves {n_val} validation and "
            f"{n_train} training images of {len(mnist.x_train)}; choose a share that leaves "
            f"both (e.g. 0.1)"
        )
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


def load_split(data_dir: Path | None, validation_split: float, train_subset: int | None) -> Split:
    """The split, made once per process: a job's cells share it."""
    key = (str(data_dir), validation_split, train_subset)
    return runtime.SPLITS.get(
        key, lambda: split_data(data.load(data_dir), validation_split, train_subset)
    )


def deterministic_path(model: keras.Model, arch: str) -> records.TrainingPath:
    """Same seed, same result, on the path measured fastest for `arch` (runtime.training_path).

    An XLA-compiled step is deterministic on its own; TensorFlow's kernels are made so by its
    op determinism, which must be off for XLA (Keras refuses both at once) and is set here for
    each cell, since a process may train cells of both paths in turn.
    """
    backend = keras.backend.backend()
    jit_possible = all(layer.supports_jit for layer in model.layers)
    path = runtime.training_path(backend, arch, jit_possible)
    if backend == "tensorflow":
        import tensorflow as tf
        from tensorflow.python.framework import config as tf_config

        if path == "tensorflow-xla":
            tf_config.disable_op_determinism()
        else:
            tf.config.experimental.enable_op_determinism()
    return path


def learning_rate(config: dict[str, Any], steps_per_epoch: int) -> Any:
    initial = config["learning_rate"]
    total_steps = steps_per_epoch * config["epochs"]
    if config["lr_schedule"] == "cosine":
        return keras.optimizers.schedules.CosineDecay(initial, decay_steps=total_steps, alpha=0.01)
    if config["lr_schedule"] == "exponential":
        # Down to 1% of the initial rate by the last epoch.
        return keras.optimizers.schedules.ExponentialDecay(initial, total_steps, decay_rate=0.01)
    return initial


def initial_model(
    config: dict[str, Any], split: Split, data_dir: Path | None
) -> tuple[keras.Model, records.TrainingPath]:
    """The cell's freshly initialised, compiled model, its optimizer built, and its path.

    A process that trains several cells differing only by seed compiles once: the new cell's
    initial weights and seed generators are built as for a fresh model, then assigned into the
    compiled model of an earlier cell, whose optimizer goes back to its initial state.
    """
    keras.utils.set_random_seed(config["seed"])
    model = models.build_model(
        config["arch"],
        normalization=config["normalization"],
        x_train=split.x_train,
        dropout=config["dropout"],
        l2=config["l2"],
        augment=config["augment"],
        seed=config["seed"],
    )
    path = deterministic_path(model, config["arch"])
    key = runtime.compile_key(config, data_dir)
    compiled = runtime.COMPILED.find(key)
    if compiled is not None:
        compiled.reset_to(model)
        return compiled.model, path
    steps_per_epoch = math.ceil(len(split.x_train) / config["batch_size"])
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate(config, steps_per_epoch)),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=path != "tensorflow-kernels",
        steps_per_execution=STEPS_PER_EXECUTION.get(keras.backend.backend(), 1),
    )
    model.optimizer.build(model.trainable_variables)
    runtime.COMPILED.add(key, model)
    return model, path


def epoch_order(seed: int, epoch: int, size: int) -> np.ndarray:
    """The order of the training images in `epoch`: a function of (seed, epoch) only."""
    return np.random.default_rng([seed, epoch]).permutation(size)


def predict(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """Class probabilities, by calling the model on large batches: no inference program to
    trace and compile (a second or more per cell), the same numbers every time."""
    batches = [
        keras.ops.convert_to_numpy(model(images[start : start + EVAL_BATCH], training=False))
        for start in range(0, len(images), EVAL_BATCH)
    ]
    return np.concatenate(batches).astype("float32")


def validation_loss(model: keras.Model, probabilities: np.ndarray, labels: np.ndarray) -> float:
    """As Keras's `val_loss`: cross-entropy plus the L2 penalties of the current weights."""
    penalty = sum(float(keras.ops.convert_to_numpy(loss)) for loss in model.losses)
    return metrics.cross_entropy(probabilities, labels) + penalty


def is_diverged(train_loss: float, train_accuracy: float, val_loss: float) -> bool:
    if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
        return True
    return train_loss > DIVERGED_LOSS and train_accuracy < 2 * CHANCE_ACCURACY


def fit_inputs(images: np.ndarray, labels: np.ndarray, batch_size: int) -> dict[str, Any]:
    """`fit`'s data arguments for one epoch, in this order and these batches.

    On TensorFlow, Keras feeds numpy arrays through a tf.data pipeline with a parallel map and
    autotuned prefetch; tearing it down when `fit` returns left both cores idle for 4 s on
    10,800 images and 16 s on 54,000 (measured: fancy_cnn, vgg_bn), once per epoch because the
    trainer fits one epoch at a time. A plain sliced and batched dataset with autotuning off
    gives the same batches (same order, same partial last batch) with no such wait."""
    if keras.backend.backend() != "tensorflow":
        return {"x": images, "y": labels, "batch_size": batch_size}
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)
    return {"x": dataset.with_options(options)}


def train_epochs(
    model: keras.Model,
    split: Split,
    config: dict[str, Any],
    state: records.RunState,
    checkpoints: Checkpoints,
    events: EventLog,
    clock: StageClock,
    halving: rungs.Halving | None = None,
) -> np.ndarray | None:
    """Fit one epoch at a time from the committed state; each epoch ends committed to disk.
    Returns the best epoch's validation probabilities when this attempt trained that epoch;
    raises rungs.StoppedEarly when a rung of successive halving stops the cell."""
    best_val_probs = None
    pace = Pace.from_environment()
    first_epoch = state.epochs_done
    for epoch in range(first_epoch, config["epochs"]):
        if halving is not None and not halving.goes_on(epoch, state.history):
            raise rungs.StoppedEarly(epoch)
        started = time.perf_counter()
        order = epoch_order(config["seed"], epoch, len(split.x_train))
        with clock("train"):
            logs = model.fit(
                **fit_inputs(split.x_train[order], split.y_train[order], config["batch_size"]),
                epochs=epoch + 1,
                initial_epoch=epoch,
                shuffle=False,
                verbose=0,
            ).history
        with clock("validation"):
            val_probs = predict(model, split.x_val)
            val_loss = validation_loss(model, val_probs, split.y_val)
        epoch_metrics = {
            "loss": float(logs["loss"][-1]),
            "accuracy": float(logs["accuracy"][-1]),
            "val_loss": val_loss,
            "val_accuracy": metrics.accuracy(val_probs, split.y_val),
            "seconds": time.perf_counter() - started,
        }
        for key, value in epoch_metrics.items():
            state.history.setdefault(key, []).append(value)
        with clock("tensorboard"):
            log_epoch(events, epoch, epoch_metrics)
        if is_diverged(epoch_metrics["loss"], epoch_metrics["accuracy"], val_loss):
            state.diverged_at = epoch
            return None
        with clock("checkpoints"):
            checkpoints.commit_epoch(state, model, val_loss)
        if state.best_epoch == epoch:
            best_val_probs = val_probs
        pace.after_epoch(started, epoch + 1 - first_epoch, config["epochs"] - epoch - 1)
    return best_val_probs


def log_epoch(events: EventLog, epoch: int, values: dict[str, float]) -> None:
    """The scalars Keras's TensorBoard callback would write, under its names."""
    events.scalars(
        "train", {"epoch_loss": values["loss"], "epoch_accuracy": values["accuracy"]}, epoch
    )
    events.scalars(
        "validation",
        {"epoch_loss": values["val_loss"], "epoch_accuracy": values["val_accuracy"]},
        epoch,
    )


def run_cell(
    cell: Cell, run_dir: Path, data_dir: Path | None = None, sweep_dir: Path | None = None
) -> dict[str, Any]:
    """Train `cell` in `run_dir` (resuming if a checkpoint is there) and return its result.
    With its sweep folder (a job's cell) the spec's early stopping applies."""
    clock = StageClock.for_cell(STARTUP_SECONDS, IMPORT_SECONDS)
    run = RunLayout(Path(run_dir))
    run.create()
    config = dict(cell.config)
    with clock("data"):
        split = load_split(data_dir, config["validation_split"], config["train_subset"])
    with clock("model"):
        model, path = initial_model(config, split, data_dir)
    checkpoints = Checkpoints(run)
    with clock("checkpoints"):
        state, warning = checkpoints.resume(cell.id, model)
    if state is None:
        state = records.RunState(cell_id=cell.id)
        write_summary(run, cell)
    else:
        state.resumed_at.append(state.epochs_done)
    if warning:
        report_warning(run, cell, warning)

    events = EventLog(run.tensorboard)
    try:
        if state.epochs_done == 0:
            events.text("train", "summary", "```\n" + run.summary.read_text() + "\n```")
            events.hparams(tensorboard_hparams(cell), trial_id=cell.name)
        halving = rung_gate(cell, run, sweep_dir)
        try:
            best_val_probs = train_epochs(
                model, split, config, state, checkpoints, events, clock, halving
            )
        except rungs.StoppedEarly as stopped:  # its checkpoint stays: a promotion resumes it
            records.write(run.history, records.RunHistory(state.history))
            status = CellState.STOPPED_EARLY.value
            return {"cell_id": cell.id, "status": status, "epochs_run": stopped.rung}
        scores: dict[str, Any] = {}
        if state.diverged_at is None:
            with clock("evaluate"):
                scores = evaluate_best(model, run, checkpoints, split, state, best_val_probs)
            events.scalars("test", {"test_accuracy": scores["test_accuracy"]}, 0)
    finally:
        events.close()
    records.write(run.history, records.RunHistory(state.history))
    origin = provenance.provenance(data.data_path(data_dir))
    result = make_result(cell, state, scores, clock, path, origin, [warning] if warning else [])
    records.write(run.result, result)
    # model.keras holds the best state now; the resume point and the best state are spent.
    checkpoints.prune(keep=frozenset())
    return result.model_dump(mode="json")


def rung_gate(cell: Cell, run: RunLayout, sweep_dir: Path | None) -> rungs.Halving | None:
    if cell.early_stopping is None or sweep_dir is None:
        return None
    return rungs.Halving(
        sweep=SweepLayout(sweep_dir),
        run=run,
        cell_id=cell.id,
        block=cell.block,
        block_size=cell.block_size,
        epochs=cell.config["epochs"],
        options=cell.early_stopping,
    )


def evaluate_best(
    model: keras.Model,
    run: RunLayout,
    checkpoints: Checkpoints,
    split: Split,
    state: records.RunState,
    best_val_probs: np.ndarray | None,
) -> dict[str, Any]:
    """Restore the state with the lowest validation loss, save it, score it on the test set.
    Its validation probabilities are those of its epoch (the same numbers): not computed twice."""
    checkpoints.restore_best(state, model)
    fsio.write_with(run.model, models.inference_model(model).save)
    val_probs = predict(model, split.x_val) if best_val_probs is None else best_val_probs
    test_probs = predict(model, split.x_test)
    fsio.write_with(run.val_probs, lambda path: np.save(path, val_probs))
    fsio.write_with(run.test_probs, lambda path: np.save(path, test_probs))
    return {
        "test_accuracy": metrics.accuracy(test_probs, split.y_test),
        "test_loss": metrics.cross_entropy(test_probs, split.y_test),
        "best_val_accuracy": metrics.accuracy(val_probs, split.y_val),
        "params": {
            "trainable": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
            "total": int(model.count_params()),
        },
    }


def make_result(
    cell: Cell,
    state: records.RunState,
    scores: dict[str, Any],
    clock: StageClock,
    path: records.TrainingPath,
    origin: records.Provenance,
    warnings: list[str],
) -> records.RunResult:
    history = state.history
    params = scores.pop("params", None)
    return records.RunResult(
        status="diverged" if state.diverged_at is not None else "completed",
        cell_id=cell.id,
        cell_name=cell.name,
        axes=list(cell.axes),
        config=dict(cell.config),
        metrics=records.RunMetrics(
            best_val_loss=state.best_val_loss if state.best_epoch is not None else None,
            best_epoch=state.best_epoch,
            epochs_run=len(history.get("loss", [])),
            final_train_accuracy=history["accuracy"][-1] if history.get("accuracy") else None,
            **scores,
        ),
        timing=clock.timing(history.get("seconds", []), path),
        params=params,
        resumed_at_epochs=state.resumed_at,
        diverged_at_epoch=state.diverged_at,
        env=runtime.environment(),
        provenance=origin,
        warnings=warnings,
    )


def report_warning(run: RunLayout, cell: Cell, warning: str) -> None:
    """One line on stderr (the job's log) and in the run's summary.txt."""
    print(f"warning: {cell.name}: {warning}", file=sys.stderr, flush=True)
    fsio.append_line(run.summary, f"warning: {warning}")


def tensorboard_hparams(cell: Cell) -> dict[str, Any]:
    """HParams accepts str, bool and numbers; None (a tutorial default) is shown as text."""
    return {
        axis: "default" if cell.config[axis] is None else cell.config[axis] for axis in cell.axes
    }


def write_summary(run: RunLayout, cell: Cell) -> None:
    """The tutorials keep the command and its arguments beside every run: so do we."""
    lines = [
        f"command: {' '.join(sys.argv)}",
        f"cell: {cell.name} ({cell.id})",
        "config: " + json.dumps(dict(cell.config), sort_keys=True),
    ]
    fsio.write_text(run.summary, "\n".join(lines) + "\n")
