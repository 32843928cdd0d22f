"""Top-k ensemble: the k runs with the best validation accuracy, their class probabilities averaged.

Runs are ranked on validation accuracy and never on test accuracy: the test set only scores the
choice. Probabilities are streamed, one run's arrays at a time, into a running sum, so an ensemble
over thousands of runs needs the memory of one. The validation split is the last share of the
60,000 training images, the same for every run, so validation probabilities align row by row.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mnistsweep.sweep.rundir import RunFiles, write_json_atomic

RANKING = ["best_val_accuracy", "best_val_loss", "run_dir"]  # ties: lower loss, then the name
EPSILON = 1e-7  # Keras clips probabilities here before taking the log
MAX_PROBLEMS_SHOWN = 5
FILENAME = "ensemble.json"


@dataclass(frozen=True)
class Labels:
    """MNIST's training labels (the validation split is their last share) and test labels."""

    train: np.ndarray
    test: np.ndarray

    def validation(self, size: int) -> np.ndarray:
        return self.train[len(self.train) - size :]


@dataclass(frozen=True)
class Member:
    run_dir: str
    cell_name: str
    arch: str
    best_val_accuracy: float
    test_accuracy: float


@dataclass
class Ensemble:
    """Members in rank order; `curve` row k-1 is the ensemble of the first k members."""

    members: list[Member]
    curve: pd.DataFrame  # k, val_accuracy, val_loss, test_accuracy, test_loss
    test_probabilities: np.ndarray  # averaged over all members
    problems: list[str] = field(default_factory=list)

    @property
    def k(self) -> int:
        return len(self.members)

    @property
    def final(self) -> dict[str, float]:
        return {key: float(value) for key, value in self.curve.iloc[-1].items() if key != "k"}

    def best_by_validation(self) -> dict[str, float]:
        """The k with the best ensemble validation accuracy (lower loss, then smaller k on ties)."""
        order = self.curve.sort_values(
            ["val_accuracy", "val_loss", "k"], ascending=[False, True, True]
        )
        return {key: float(value) for key, value in order.iloc[0].items()}


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(probabilities, axis=1) == labels))


def cross_entropy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Keras's categorical cross-entropy: clip at 1e-7 so a confident mistake stays finite."""
    picked = np.clip(probabilities[np.arange(len(labels)), labels], EPSILON, 1.0)
    return float(-np.mean(np.log(picked)))


def rank_by_validation(runs: pd.DataFrame) -> pd.DataFrame:
    """Completed runs, best validation accuracy first. Test accuracy plays no part."""
    done = runs[runs["status"] == "completed"] if len(runs) else runs
    if done.empty:
        return done
    ascending = [False, True, True]
    return done.sort_values(RANKING, ascending=ascending, na_position="last")


def build(runs: pd.DataFrame, top_k: int, labels: Labels) -> Ensemble | None:
    """The top-k ensemble of the completed runs, with its curve for k = 1..top_k.

    Runs whose probability files are missing or malformed are skipped (and named in
    `problems`); the next run in rank order takes their place. None when no run is usable.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    accumulator, skipped = _Accumulator(labels), []
    for _, row in rank_by_validation(runs).iterrows():
        probabilities = _load_probabilities(Path(row["run_dir"]), labels)
        if isinstance(probabilities, str):
            skipped.append(f"{Path(row['run_dir']).name}: {probabilities} (skipped)")
            continue
        accumulator.add(_member(row), *probabilities)
        if accumulator.count == top_k:
            break
    shown = skipped[:MAX_PROBLEMS_SHOWN]
    more = len(skipped) - len(shown)
    accumulator.problems[:0] = shown + ([f"... and {more} more runs skipped"] if more else [])
    return accumulator.result()


def best_per_architecture(runs: pd.DataFrame, top_k: int, labels: Labels) -> dict[str, dict]:
    """For each architecture, its own top-k ensemble at the k its validation accuracy prefers."""
    done = runs[runs["status"] == "completed"] if len(runs) else runs
    if done.empty or "arch" not in done.columns:
        return {}
    best = {}
    for arch, arch_runs in done.groupby("arch", sort=True):
        ensemble = build(arch_runs, top_k, labels)
        if ensemble is None:
            continue
        chosen = ensemble.best_by_validation()
        k = int(chosen.pop("k"))
        best[str(arch)] = {
            "k": k,
            **chosen,
            "members": [member.cell_name for member in ensemble.members[:k]],
        }
    return best


def summary(ensemble: Ensemble, top_k: int, per_architecture: dict[str, dict]) -> dict[str, Any]:
    """What ensemble.json holds: the members, the final scores, the curve and per-architecture."""
    return {
        "requested_top_k": top_k,
        "k": ensemble.k,
        "ranked_by": "best validation accuracy (ties: lower validation loss)",
        **ensemble.final,
        "best_k_by_validation": ensemble.best_by_validation(),
        "members": [asdict(member) for member in ensemble.members],
        "curve": ensemble.curve.to_dict(orient="records"),
        "per_architecture": per_architecture,
        "problems": ensemble.problems,
    }


def write(sweep_dir: Path, content: dict[str, Any]) -> Path:
    path = sweep_dir / FILENAME
    write_json_atomic(path, content)
    return path


# --- streaming -----------------------------------------------------------------------------------


class _Accumulator:
    """Running sums of validation and test probabilities, and the curve point after each run."""

    def __init__(self, labels: Labels):
        self.labels = labels
        self.members: list[Member] = []
        self.points: list[dict[str, float]] = []
        self.problems: list[str] = []
        self.val_sum: np.ndarray | None = None
        self.test_sum: np.ndarray | None = None

    @property
    def count(self) -> int:
        return len(self.members)

    def add(self, member: Member, val: np.ndarray, test: np.ndarray) -> None:
        if self.val_sum is None or self.test_sum is None:
            self.val_sum = np.zeros(val.shape, dtype=np.float64)
            self.test_sum = np.zeros(test.shape, dtype=np.float64)
        if len(val) < len(self.val_sum):  # a smaller validation_split: keep the common tail
            self.problems.append(
                f"{member.cell_name}: validation set of {len(val)} images; ensemble validation "
                f"scores from k={self.count + 1} on use the last {len(val)} only"
            )
            self.val_sum = self.val_sum[len(self.val_sum) - len(val) :]
        self.val_sum += val[len(val) - len(self.val_sum) :]
        self.test_sum += test
        self.members.append(member)
        self.points.append(self._scores())

    def _scores(self) -> dict[str, float]:
        assert self.val_sum is not None and self.test_sum is not None
        val_mean, test_mean = self.val_sum / self.count, self.test_sum / self.count
        val_labels = self.labels.validation(len(val_mean))
        return {
            "k": self.count,
            "val_accuracy": accuracy(val_mean, val_labels),
            "val_loss": cross_entropy(val_mean, val_labels),
            "test_accuracy": accuracy(test_mean, self.labels.test),
            "test_loss": cross_entropy(test_mean, self.labels.test),
        }

    def result(self) -> Ensemble | None:
        if not self.members or self.test_sum is None:
            return None
        return Ensemble(
            members=self.members,
            curve=pd.DataFrame(self.points),
            test_probabilities=self.test_sum / self.count,
            problems=self.problems,
        )


def _load_probabilities(run_dir: Path, labels: Labels) -> tuple[np.ndarray, np.ndarray] | str:
    """A run's (validation, test) probabilities, or why they cannot be used."""
    files = RunFiles(run_dir)
    try:
        val, test = np.load(files.val_probs), np.load(files.test_probs)
    except (OSError, ValueError) as error:
        return f"no probabilities ({type(error).__name__}: {error})"
    expected_test = (len(labels.test), 10)
    if test.shape != expected_test or val.ndim != 2 or not 0 < len(val) <= len(labels.train):
        return f"probabilities of shape {val.shape} / {test.shape}, not (n, 10) / {expected_test}"
    return val, test


def _member(row: pd.Series) -> Member:
    return Member(
        run_dir=str(row["run_dir"]),
        cell_name=str(row.get("cell_name") or Path(row["run_dir"]).name),
        arch=str(row.get("arch", "")),
        best_val_accuracy=float(row["best_val_accuracy"]),
        test_accuracy=float(row["test_accuracy"]),
    )
