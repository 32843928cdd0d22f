"""One safe reader: a FIFO, a device or a hard link in place of a file mnistsweep reads is one
warning or one `error:` line, never a hang; array sizes are checked before memory is allocated."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fake_sweeps import record_sweep, result_of
from hypothesis import given, settings
from hypothesis import strategies as st

from mnistsweep import fsio
from mnistsweep.errors import MnistsweepError
from mnistsweep.sweep import records, state
from mnistsweep.sweep.layout import RunLayout, SweepLayout
from mnistsweep.train import prepare

METRICS = {"test_accuracy": 0.9, "best_val_accuracy": 0.9, "epochs_run": 1}


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The command in its own process, so that a hang is a failed test, not a stuck suite."""
    return subprocess.run(
        [sys.executable, "-m", "mnistsweep", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MNISTSWEEP_DATA": str(cwd / "nodata")},
    )


def sweep_with_fifo(tmp_path: Path, where: str) -> Path:
    layout = SweepLayout(tmp_path / "s")
    (cell,) = record_sweep(layout.root, {"arch": ["linear"]})
    run = layout.run(cell)
    fsio.write_json(run.result, result_of(cell, metrics=METRICS))
    target = {"result": run.result, "sweep": layout.record, "lock": run.lock}[where]
    target.unlink(missing_ok=True)
    os.mkfifo(target)
    return layout.root


@pytest.mark.parametrize("command", ["aggregate"])
def test_a_fifo_as_result_json_is_one_warning_not_a_hang(tmp_path, command):
    done = cli(command, str(sweep_with_fifo(tmp_path, "result")), cwd=tmp_path)
    said = done.stdout + done.stderr
    assert "Traceback" not in said
    assert [line for line in said.splitlines() if "result.json" in line and "unreadable" in line]


@pytest.mark.parametrize("command", ["aggregate", "status", "report", "archive"])
def test_a_fifo_as_sweep_json_is_one_error_line(tmp_path, command):
    done = cli(command, str(sweep_with_fifo(tmp_path, "sweep")), cwd=tmp_path)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), done.stderr


def test_a_fifo_as_the_lock_is_not_held_and_cannot_be_taken(tmp_path):
    run = RunLayout(tmp_path / "run")
    run.root.mkdir()
    os.mkfifo(run.lock)
    assert not state.is_locked(run.lock)
    with pytest.raises(fsio.UnsafePathError, match="not a regular file"):
        fsio.open_lock(run.lock)


def test_a_fifo_as_the_spec_or_the_archive_is_one_error_line(tmp_path):
    os.mkfifo(tmp_path / "spec.yaml")
    os.mkfifo(tmp_path / "s.tar.xz")
    for args in (
        ("launch", "spec.yaml", "--dry-run", "--executor", "local"),
        ("archive", "--extract", "s.tar.xz", "--results-dir", "out"),
    ):
        done = cli(*args, cwd=tmp_path)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1, done.stderr
        assert "not a regular file" in lines[0]
    assert not (tmp_path / "out").exists()


def test_a_hardlinked_record_is_damaged_not_read(tmp_path):
    outside = tmp_path / "elsewhere.json"
    (cell,) = record_sweep(tmp_path / "s", {"arch": ["linear"]})
    fsio.write_json(outside, result_of(cell, metrics=METRICS))
    run = RunLayout(tmp_path / "run")
    run.root.mkdir()
    os.link(outside, run.result)
    with pytest.raises(records.DamagedRecord):
        records.read(records.RunResult, run.result)
    with pytest.raises(fsio.UnreadableFile, match="hard links"):
        fsio.read_bytes(run.result, 1024)


def npy_header_only(shape: tuple[int, ...], dtype: str) -> bytes:
    """An .npy file that declares `shape` but holds no data."""
    buffer = io.BytesIO()
    header = {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(1, 10**6), min_size=1, max_size=4).map(tuple),
    dtype=st.sampled_from(["u1", "<f4", "<f8", "<i8"]),
)
def test_a_declared_shape_is_checked_before_any_allocation(tmp_path_factory, shape, dtype):
    path = tmp_path_factory.mktemp("npy") / "probs_test.npy"
    path.write_bytes(npy_header_only(shape, dtype))
    declared = int(np.prod(shape, dtype=object)) * np.dtype(dtype).itemsize
    # The file holds none of the data it declares: refused from the header, whatever the cap.
    with pytest.raises(fsio.UnreadableFile):
        fsio.load_npy(path, max_bytes=declared + 1)
    with pytest.raises(fsio.TooLarge):
        fsio.read_npy(io.BytesIO(path.read_bytes()), str(path), declared - 1)


def test_a_real_array_reads_back(tmp_path):
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "a.npy", array)
    assert np.array_equal(fsio.load_npy(tmp_path / "a.npy", 10**6), array)


class _HugeArray:
    """Pickles as numpy's `_reconstruct(ndarray, shape, dtype)` with an enormous shape."""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        from numpy.core.multiarray import _reconstruct

        return (_reconstruct, (np.ndarray, (400_000_000,), b"f"))


def test_a_tiny_pickle_declaring_a_huge_array_is_refused_before_allocating(tmp_path):
    path = tmp_path / "mnist.pkl"
    path.write_bytes(pickle.dumps(((_HugeArray(), 0), (0, 0), (0, 0)), protocol=2))
    assert path.stat().st_size < 1000
    with pytest.raises(MnistsweepError, match="cap"):
        prepare._from_file(path)


def test_a_data_file_that_is_a_fifo_is_one_line(tmp_path):
    os.mkfifo(tmp_path / "mnist.npz")
    with pytest.raises(MnistsweepError, match="not a regular file"):
        from mnistsweep.train import data

        data.load(tmp_path)


def archivable_sweep(tmp_path: Path) -> Path:
    layout = SweepLayout(tmp_path / "s")
    record_sweep(layout.root, {"arch": ["linear"]})
    return layout.root


@pytest.mark.parametrize("inside", ["sweep.json", "runs/x.tar.xz", "new.tar.xz"])
def test_archive_output_inside_the_sweep_folder_is_refused(tmp_path, inside):
    sweep = archivable_sweep(tmp_path)
    before = (sweep / "sweep.json").read_bytes()
    done = cli("archive", "s", "-o", f"s/{inside}", cwd=tmp_path)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "inside the sweep folder" in lines[0]
    assert (sweep / "sweep.json").read_bytes() == before
    assert not (sweep / inside).exists() or inside == "sweep.json"


def test_archive_of_dot_names_the_folder(tmp_path):
    sweep = archivable_sweep(tmp_path)
    done = cli("archive", ".", cwd=sweep)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "s.tar.xz").is_file()


@settings(max_examples=30, deadline=None)
@given(
    rows=st.integers(0, 50),
    cut=st.integers(1, 200),
)
def test_mapped_probabilities_are_the_file_or_refused_when_short(tmp_path_factory, rows, cut):
    """The ensemble's memory-mapped read: the saved array exactly, or one UnreadableFile when
    the file holds less than its header declares."""
    path = tmp_path_factory.mktemp("npy") / "probs_test.npy"
    array = np.random.default_rng(rows).random((rows, 10), dtype=np.float32)
    np.save(path, array)
    assert np.array_equal(np.asarray(fsio.map_npy(path)), array)
    if rows:
        content = path.read_bytes()
        path.write_bytes(content[: max(1, len(content) - cut)])
        with pytest.raises(fsio.UnreadableFile):
            fsio.map_npy(path)


@pytest.mark.parametrize("kind", ["fifo", "symlink"])
def test_probabilities_that_are_a_fifo_or_a_link_are_refused_at_once(tmp_path, kind):
    path = tmp_path / "probs_val.npy"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        np.save(tmp_path / "real.npy", np.zeros((2, 10), np.float32))
        path.symlink_to(tmp_path / "real.npy")
    with pytest.raises(fsio.UnreadableFile, match=r"probs_val\.npy"):
        fsio.map_npy(path)
