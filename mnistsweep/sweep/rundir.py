"""A run directory is the unit of truth: the names of its files, and how they are read and written.

Writers replace files atomically (temporary file, then rename) so a reader sees either the old
content, the new content, or nothing; never half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# A result with one of these statuses is final: relaunching the sweep does not train it again.
FINAL_STATUSES = ("completed", "diverged")
_UMASK = os.umask(0)
os.umask(_UMASK)


def write_json_atomic(path: Path, content: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.chmod(temporary, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide results from the group
    try:
        with os.fdopen(descriptor, "w") as stream:
            json.dump(content, stream, indent=1, default=_jsonable)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _jsonable(value: Any) -> Any:
    """numpy scalars and paths turn up in metrics and configs."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def read_json(path: Path) -> Any:
    """Parsed JSON, or None when the file is missing or unreadable (a run killed mid-way)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class RunFiles:
    root: Path

    @property
    def result(self) -> Path:
        return self.root / "result.json"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    def checkpoint_after(self, epochs_done: int) -> Path:
        return self.root / f"checkpoint-{epochs_done:04d}.keras"

    def best_weights_of(self, epoch: int) -> Path:
        return self.root / f"best-{epoch:04d}.weights.h5"

    def named_in(self, state: Mapping[str, Any], key: str) -> Path:
        """The file a training state names under `key` ("checkpoint" or "best_weights").

        state.json is an epoch's commit point: files are written under new names first, so a
        kill between writes cannot leave a checkpoint ahead of (or behind) the state that
        describes it."""
        name = state.get(key)
        return self.root / (Path(name).name if isinstance(name, str) else f"no-{key}")

    @property
    def checkpoint(self) -> Path:
        """The resume checkpoint that state.json on disk names."""
        return self.named_in(self._state_on_disk(), "checkpoint")

    @property
    def best_weights(self) -> Path:
        """The best-so-far weights that state.json on disk names."""
        return self.named_in(self._state_on_disk(), "best_weights")

    def _state_on_disk(self) -> Mapping[str, Any]:
        state = read_json(self.state)
        return state if isinstance(state, dict) else {}

    def remove_training_files(self, keep: Sequence[Path] = ()) -> None:
        """Drop checkpoints and best weights other than `keep` (superseded, or all once the run
        is final), and temporary files a killed writer left."""
        kept = {path.name for path in keep}
        for pattern in ("checkpoint-*.keras", "best-*.weights.h5", ".tmp-*"):
            for path in self.root.glob(pattern):
                if path.name not in kept:
                    path.unlink(missing_ok=True)

    @property
    def model(self) -> Path:
        return self.root / "model.keras"

    @property
    def history(self) -> Path:
        return self.root / "history.json"

    @property
    def val_probs(self) -> Path:
        return self.root / "probs_val.npy"

    @property
    def test_probs(self) -> Path:
        return self.root / "probs_test.npy"

    @property
    def summary(self) -> Path:
        return self.root / "summary.txt"

    @property
    def error(self) -> Path:
        return self.root / "error.txt"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tb"

    def read_result(self) -> dict[str, Any] | None:
        result = read_json(self.result)
        return result if isinstance(result, dict) and "status" in result else None

    def status(self) -> str | None:
        """completed, diverged or failed from result.json; None when the run has not finished."""
        result = self.read_result()
        return result["status"] if result else None

    def archive_failure(self) -> None:
        """Before a retry: keep the failed attempt's record aside, so the new attempt's result
        is the only result.json and the old error stays readable."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for path in (self.result, self.error):
            if path.exists():
                os.replace(path, path.with_name(f"failed-{stamp}-{path.name}"))

    def read_state(self, cell_id: str) -> dict[str, Any] | None:
        """The resume point, if an earlier attempt of this very cell left a usable one."""
        state = read_json(self.state)
        if not (isinstance(state, dict) and state.get("cell_id") == cell_id):
            return None
        if state.get("epochs_done", 0) < 1 or not self.named_in(state, "checkpoint").exists():
            return None
        return state
