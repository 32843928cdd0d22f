"""The one safe-write path: atomic, never through a symlink, one line when the disk says no."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mnistsweep import fsio
from mnistsweep.errors import MnistsweepError


def test_write_replaces_whole_files_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a" / "b.json"
    fsio.write_json(target, {"x": 1})
    fsio.write_json(target, {"x": 2})
    assert target.read_text().replace(" ", "").replace("\n", "") == '{"x":2}'
    assert sorted(p.name for p in target.parent.iterdir()) == ["b.json"]


def test_a_symlinked_target_is_replaced_not_written_through(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    link = tmp_path / "sweep" / "summary.csv"
    link.parent.mkdir()
    link.symlink_to(outside)
    with pytest.raises(fsio.UnsafePathError, match="symlink"):
        fsio.write_text(link, "a,b\n")
    assert outside.read_text() == "precious"


def test_a_symlinked_folder_inside_the_sweep_is_refused(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.md").write_text("keep")
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "report_files").symlink_to(victim)
    with pytest.raises(fsio.UnsafePathError, match="report_files"):
        fsio.ensure_dir(sweep / "report_files", sweep)
    fsio.remove_matching(sweep / "report_files", ("*.md",))
    assert (victim / "keep.md").read_text() == "keep"


def test_a_sweep_folder_behind_a_link_is_fine(tmp_path):
    """Users put results on scratch through a link: only links inside the sweep are refused."""
    real = tmp_path / "scratch"
    real.mkdir()
    (tmp_path / "results").symlink_to(real)
    sweep = tmp_path / "results" / "quick"
    fsio.ensure_dir(sweep / "runs" / "cell", sweep)
    assert (real / "quick" / "runs" / "cell").is_dir()


def test_a_lock_symlink_never_truncates_its_target(tmp_path):
    outside = tmp_path / "outside"
    outside.write_text("data")
    (tmp_path / ".lock").symlink_to(outside)
    with pytest.raises(fsio.UnsafePathError):
        fsio.open_lock(tmp_path / ".lock")
    assert outside.read_text() == "data"


def test_append_line_keeps_lines_whole(tmp_path):
    path = tmp_path / "jobs.jsonl"
    for i in range(50):
        fsio.append_line(path, f'{{"i": {i}}}')
    assert path.read_text().splitlines() == [f'{{"i": {i}}}' for i in range(50)]


@given(
    st.lists(
        st.lists(
            st.text(
                st.characters(exclude_characters="\n\r", exclude_categories=("Cs",)), max_size=40
            ),
            max_size=30,
        ),
        max_size=6,
    )
)
@settings(max_examples=50, deadline=None)
def test_append_lines_adds_each_batch_whole_and_in_order(batches):
    folder = Path(os.environ.get("TMPDIR", "/tmp")) / f"fsio-lines-{os.getpid()}"
    shutil.rmtree(folder, ignore_errors=True)
    path = folder / "jobs.jsonl"
    for batch in batches:
        fsio.append_lines(path, batch)
    expected = [line for batch in batches for line in batch]
    content = path.read_text(encoding="utf-8") if path.exists() else ""
    assert content == "".join(f"{line}\n" for line in expected)
    shutil.rmtree(folder, ignore_errors=True)


@given(st.binary(max_size=2048))
@settings(max_examples=50, deadline=None)
def test_read_text_never_raises(content):
    folder = Path(os.environ.get("TMPDIR", "/tmp")) / f"fsio-{os.getpid()}"
    folder.mkdir(exist_ok=True)
    path = folder / "f"
    path.write_bytes(content)
    assert isinstance(fsio.read_text(path), str)
    assert fsio.read_text(folder / "missing") is None
    assert fsio.read_text(folder) is None  # a folder, not a file
    shutil.rmtree(folder)


@contextlib.contextmanager
def mounted_tmpfs(where: Path, options: str) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'not root'})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_full_disk_is_one_line_and_leaves_no_partial_file(tmp_path):
    with mounted_tmpfs(tmp_path / "small", "size=64k") as disk:
        (disk / "summary.csv").write_text("old\n")
        with pytest.raises(MnistsweepError) as error:
            fsio.write_text(disk / "summary.csv", "x" * 200_000)
        message = str(error.value)
        assert "\n" not in message and "No space left" in message and "summary.csv" in message
        assert (disk / "summary.csv").read_text() == "old\n"  # the old file is intact
        assert sorted(p.name for p in disk.iterdir()) == ["summary.csv"]  # no temporary left


def test_a_read_only_disk_is_one_line(tmp_path):
    with mounted_tmpfs(tmp_path / "ro", "size=64k,ro") as disk:
        with pytest.raises(MnistsweepError) as error:
            fsio.write_json(disk / "sweep" / "sweep.json", {})
        assert "read-only" in str(error.value)
