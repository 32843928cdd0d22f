"""The per-epoch commit protocol of one run folder, and the exact resume point it keeps.

At the end of each epoch the training state — every model variable (weights, the dropout and
augmentation seed generators) and every optimizer variable (its step count included, so a
learning-rate schedule goes on where it was) — is saved under a new name, then state.json is
rewritten: that write commits the epoch. The checkpoint of the epoch with the lowest validation
loss so far is also the best state, so it is kept (under its own name) until a better one comes;
every other training file is pruned. A kill at any moment leaves state.json naming complete
files, and a resumed run continues bit for bit as if it had never stopped.

A resume point that cannot be used (a damaged state.json, a checkpoint that is missing,
truncated, or does not fit the model) is not a reason to stop the cell forever: it is reported
in one line and the cell starts again from scratch.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from mnistsweep import fsio
from mnistsweep.errors import MnistsweepError
from mnistsweep.sweep import records
from mnistsweep.sweep.layout import RunLayout


class DamagedCheckpoint(MnistsweepError):
    """A training-state file that exists but cannot be restored into this model."""


def training_variables(model: keras.Model) -> list[keras.Variable]:
    """What a resume must restore. `model.variables` includes the layers' seed generators,
    which `model.save` and `save_weights` leave out; the optimizer must be built already."""
    return [*model.variables, *model.optimizer.variables]


def save_training_state(path: Path, model: keras.Model) -> None:
    arrays = {
        f"v{index:04d}": keras.ops.convert_to_numpy(variable.value)
        for index, variable in enumerate(training_variables(model))
    }
    fsio.write_with(path, lambda temporary: np.savez(temporary, **arrays))


def restore_training_state(path: Path, model: keras.Model) -> None:
    """Assign every variable from `path`, or none of them (DamagedCheckpoint)."""
    variables = training_variables(model)
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = [stored[f"v{index:04d}"] for index in range(len(stored.files))]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise DamagedCheckpoint(f"{path.name}: unreadable ({error})") from None
    shapes_fit = len(arrays) == len(variables) and all(
        array.shape == tuple(variable.shape) and array.dtype == np.dtype(variable.dtype)
        for array, variable in zip(arrays, variables, strict=False)
    )
    if not shapes_fit:
        raise DamagedCheckpoint(f"{path.name}: made for another model")
    for variable, array in zip(variables, arrays, strict=True):
        variable.assign(array)


@dataclass(frozen=True)
class Checkpoints:
    """The training files of one run folder, written and read by the commit protocol."""

    run: RunLayout

    def resume(self, cell_id: str, model: keras.Model) -> tuple[records.RunState | None, str]:
        """The committed state restored into `model`, or None to start afresh, and a warning
        ("" when none) when an unusable resume point was thrown away."""
        try:
            state = records.read(records.RunState, self.run.state)
        except records.DamagedRecord as damaged:
            return self._discard(f"{damaged}")
        if state is None or state.epochs_done == 0:
            return None, ""
        if state.cell_id != cell_id:
            return self._discard(f"{self.run.state.name} belongs to cell {state.cell_id}")
        checkpoint = self.run.named(state.checkpoint)
        if not checkpoint.is_file() and self.run.result.exists():
            return None, ""  # a finished run, trained again: its training files are spent
        if not checkpoint.is_file():
            return self._discard(f"{checkpoint.name} named by {self.run.state.name} is missing")
        try:
            restore_training_state(checkpoint, model)
        except DamagedCheckpoint as damaged:
            return self._discard(str(damaged))
        return state, ""

    def _discard(self, problem: str) -> tuple[None, str]:
        self.run.state.unlink(missing_ok=True)
        self.prune(keep=frozenset())
        return None, f"resume point unusable ({problem}); training again from the first epoch"

    def commit_epoch(
        self, state: records.RunState, model: keras.Model, validation_loss: float
    ) -> None:
        """Save the state after `state.epochs_done + 1` epochs, then commit it in state.json."""
        epochs_done = state.epochs_done + 1
        checkpoint = self.run.training_state_after(epochs_done)
        save_training_state(checkpoint, model)
        if validation_loss < state.best_val_loss:
            state.best_val_loss = validation_loss
            state.best_epoch = epochs_done - 1
            state.best_weights = checkpoint.name
        state.epochs_done = epochs_done
        state.checkpoint = checkpoint.name
        records.write(self.run.state, state)
        self.prune(keep=frozenset({checkpoint.name, self.run.named(state.best_weights).name}))

    def restore_best(self, state: records.RunState, model: keras.Model) -> None:
        restore_training_state(self.run.named(state.best_weights), model)

    def prune(self, keep: frozenset[str]) -> None:
        """Remove training files other than `keep` (all of them once the run is final)."""
        fsio.remove_matching(self.run.root, RunLayout.TRAINING_FILES, keep=keep)
