"""The path a GPU run takes, Keras on JAX, on this machine's CPU: a tiny sweep launched with
KERAS_BACKEND=jax trains every cell on JAX, and its report is written. (Exact resume on JAX after
a kill: tests/test_resume.py.)"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mnistsweep.sweep import records

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed"),
]

REPO = Path(__file__).resolve().parents[1]


def mnistsweep(*arguments: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "PYTHONPATH": str(REPO),
        "MNISTSWEEP_DATA": str(data_dir),
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    return subprocess.run(
        [sys.executable, "-m", "mnistsweep", *arguments],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_sweep_on_jax_completes_and_is_reported(tmp_path, mnist_dir, tiny_spec):
    spec = tiny_spec("jax", grid={"arch": ["linear", "simple_cnn"], "seed": [0, 1]}, epochs=2)
    results = tmp_path / "results"
    launched = mnistsweep("launch", str(spec), "--results-dir", str(results), data_dir=mnist_dir)
    assert launched.returncode == 0, launched.stdout[-2000:] + launched.stderr[-3000:]

    found = sorted((results / "jax" / "runs").glob("*/result.json"))
    assert len(found) == 4
    for path in found:
        result = records.read(records.RunResult, path)
        assert result is not None and result.status == "completed", path
        assert result.env is not None and result.env["keras_backend"] == "jax"
        assert result.timing.training_path == "jax-xla"
        assert result.provenance is not None and "jax" in result.provenance.versions
        assert result.metrics.test_accuracy is not None and result.metrics.test_accuracy > 0.5

    (results / "jax" / "report.md").unlink(missing_ok=True)  # the launch wrote one
    reported = mnistsweep("report", str(results / "jax"), data_dir=mnist_dir)
    assert reported.returncode == 0, reported.stderr[-3000:]
    assert "simple_cnn" in (results / "jax" / "report.md").read_text()
