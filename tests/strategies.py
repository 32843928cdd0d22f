"""Hypothesis strategies shared by the tests: every value each train key accepts."""

from __future__ import annotations

from hypothesis import strategies as st

from mnistsweep.sweep.spec import LR_SCHEDULES
from mnistsweep.vocabulary import ARCHITECTURE_NAMES, AUGMENTATION_NAMES, NORMALIZATION_NAMES

# Odd values included (tiny floats print with 'e-'). A new train key must be added here to be
# generated (test_reliability checks the keys against the spec's).
VALID_TRAIN_VALUES: dict[str, st.SearchStrategy] = {
    "arch": st.sampled_from(ARCHITECTURE_NAMES),
    "normalization": st.sampled_from(NORMALIZATION_NAMES),
    "dropout": st.none() | st.floats(0.0, 0.9),
    "seed": st.integers(0, 2**31 - 1),
    "epochs": st.integers(1, 10_000),
    "batch_size": st.integers(1, 60_000),
    "learning_rate": st.floats(0.0, 10.0, exclude_min=True),
    "lr_schedule": st.sampled_from(LR_SCHEDULES),
    "validation_split": st.floats(1e-4, 0.5),  # at least 6 of the 60,000 held out
    "augment": st.booleans() | st.sampled_from(AUGMENTATION_NAMES),
    "l2": st.floats(0.0, 1.0),
    "train_subset": st.none() | st.integers(10, 60_000),
}
