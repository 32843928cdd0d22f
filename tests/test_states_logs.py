"""Quiet logs: a job's task log holds mnistsweep's lines and real errors, not the frameworks'
start-up banners (absl prints them while TensorFlow's libraries load, whatever the settings)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnistsweep.execute import job
from mnistsweep.sweep.layout import SweepLayout
from mnistsweep.sweep.spec import load_spec

BANNERS = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796226783.456954   25855 port.cc:153] oneDNN custom operations are on. You may "
    "see slightly different numerical results",
    "I0000 00:00:1796226783.458021   25855 cudart_stub.cc:31] Could not find cuda drivers on your "
    "machine, GPU will not be used.",
    "E0000 00:00:1718 5 cuda_dnn.cc:8310] Unable to register cuDNN factory: Attempting to register "
    "factory for plugin cuDNN when one has already been registered",
]
OTHER_LINES = st.text(
    st.characters(categories=["L", "Nd", "P", "Zs"], exclude_characters="\r\x85\u2028\u2029"),
    max_size=40,
).filter(lambda line: not job.BANNER_LINE.search(line))


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=st.lists(st.one_of(st.sampled_from(BANNERS), OTHER_LINES), max_size=8))
def test_a_framework_start_keeps_every_line_of_its_stderr_but_the_banners(capfd, lines):
    capfd.readouterr()
    with job.banners_dropped():
        os.write(2, "".join(f"{line}\n" for line in lines).encode())
    err = capfd.readouterr().err
    assert err.splitlines() == [line for line in lines if line not in BANNERS]


@pytest.mark.slow
def test_a_trained_cells_task_log_has_no_banners_and_a_failure_still_shows(tmp_path, mnist_dir):
    spec_path = tmp_path / "quiet.yaml"
    document = {
        "name": "quiet",
        "grid": {"seed": [0, 1]},
        "train": {"arch": "linear", "epochs": 1, "train_subset": 500},
        "executor": {"backend": "local", "cells_per_job": 2},
    }
    spec_path.write_text(yaml.safe_dump(document))
    cells = load_spec(spec_path).cells()
    # The job's own settings only: none from this test process (conftest quiets TensorFlow).
    quiet = ("TF_CPP_MIN_LOG_LEVEL", "GRPC_VERBOSITY", "GLOG_minloglevel", "ABSL_MIN_LOG_LEVEL")
    environment = {key: value for key, value in os.environ.items() if key not in quiet}
    environment |= {"MNISTSWEEP_DATA": str(mnist_dir), "MNISTSWEEP_FAIL_CELLS": cells[1].id}
    command = [sys.executable, "-m", "mnistsweep", "launch", str(spec_path)]
    launched = subprocess.run(
        [*command, "--results-dir", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=environment,
        timeout=600,
        cwd=tmp_path,
    )
    assert launched.returncode == 1, launched.stdout + launched.stderr  # one cell failed

    local = SweepLayout(tmp_path / "out" / "quiet").local_submitit
    logs = "".join(path.read_text() for path in Path(local).glob("*_log.err"))
    assert "injected failure" in logs  # a real error still shows
    assert f"mnistsweep: cell {cells[1].name} failed: RuntimeError: injected failure" in logs
    for banner in ("oneDNN custom operations", "cuda drivers", "absl::InitializeLog"):
        assert banner not in logs, logs
