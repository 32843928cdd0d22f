"""Scores of class probabilities against labels, with numpy only (no TensorFlow import).

The trainer scores its best model with these, and the ensemble scores averaged probabilities with
the same functions, so a single run and an ensemble are measured alike.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

# Keras clips probabilities at its epsilon before the log: a confident mistake costs
# -log(1e-7) ≈ 16.1 instead of infinity.
PROBABILITY_FLOOR = 1e-7


def accuracy(probabilities: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Share of rows whose most probable class is the label."""
    probs, targets = _checked(probabilities, labels)
    return float(np.mean(np.argmax(probs, axis=1) == targets))


def cross_entropy(probabilities: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Mean sparse categorical cross-entropy, as Keras computes it from probabilities."""
    probs, targets = _checked(probabilities, labels)
    picked = probs[np.arange(len(targets)), targets]
    return float(-np.mean(np.log(np.clip(picked, PROBABILITY_FLOOR, 1.0))))


def _checked(probabilities: npt.ArrayLike, labels: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probabilities, dtype=np.float64)
    targets = np.asarray(labels).astype(np.int64).ravel()
    if probs.ndim != 2 or len(probs) != len(targets) or len(targets) == 0:
        raise ValueError(
            f"expected (n, classes) probabilities and n labels, n > 0; "
            f"got {probs.shape} and {targets.shape}"
        )
    return probs, targets
