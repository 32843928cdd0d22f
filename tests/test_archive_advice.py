"""Every command that archive, extract and report advise is run here, as the message gives it,
and must then do what the message promised."""

from __future__ import annotations

import errno
import html
import os
import re
import shlex
from pathlib import Path

import pytest
from test_archive import make_sweep

from mnistsweep.__main__ import main
from mnistsweep.analysis import archive, extract
from mnistsweep.sweep.layout import SweepLayout

PREFIX = ["python", "-m", "mnistsweep"]


def advised(text: str) -> list[list[str]]:
    """Each `python -m mnistsweep ...` command quoted in backticks, as arguments of main()."""
    plain = html.unescape(re.sub(r"\\(.)", r"\1", text))  # as Markdown's reader sees it
    commands = [shlex.split(found) for found in re.findall(r"`([^`]+)`", plain)]
    return [command[3:] for command in commands if command[:3] == PREFIX]


@pytest.fixture
def sweep_archive(tmp_path) -> Path:
    return archive.archive(make_sweep(tmp_path / "made").root, tmp_path / "small.tar.xz")[0]


def test_extracting_over_another_spec_advises_another_results_dir_and_that_works(
    tmp_path, capsys, sweep_archive
):
    make_sweep(tmp_path / "taken", learning_rate=0.01)
    assert (
        main(["archive", "--extract", str(sweep_archive), "--results-dir", str(tmp_path / "taken")])
        == 2
    )
    assert "extract into another --results-dir" in capsys.readouterr().err
    other = tmp_path / "another"
    assert main(["archive", "--extract", str(sweep_archive), "--results-dir", str(other)]) == 0
    assert len(SweepLayout(other / "small").run_folders()) == 4


def test_an_archive_inside_the_sweep_advises_writing_outside_with_o_and_that_works(
    tmp_path, capsys
):
    layout = make_sweep(tmp_path / "results")
    inside = layout.root / "x.tar.xz"
    assert main(["archive", str(layout.root), "-o", str(inside)]) == 2
    assert "write the archive outside it (-o)" in capsys.readouterr().err
    assert not inside.exists()
    assert main(["archive", str(layout.root), "-o", str(tmp_path / "x.tar.xz")]) == 0


def test_a_full_disk_advises_another_results_dir_too_and_that_works(
    tmp_path, capsys, monkeypatch, sweep_archive
):
    def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(extract, "_copy", full)
    results = ["archive", "--extract", str(sweep_archive), "--results-dir"]
    assert main([*results, str(tmp_path / "full")]) == 2
    assert "or move the results with --results-dir" in capsys.readouterr().err
    monkeypatch.undo()  # the other folder is on a disk with space
    assert main([*results, str(tmp_path / "roomy")]) == 0
    assert not (tmp_path / "full").exists()


@pytest.mark.slow
def test_the_extraction_advises_a_report_and_that_report_runs(
    tmp_path, capsys, monkeypatch, mnist_dir, sweep_archive
):
    monkeypatch.setenv("MNISTSWEEP_DATA", str(mnist_dir))
    results = tmp_path / "results"
    assert main(["archive", "--extract", str(sweep_archive), "--results-dir", str(results)]) == 0
    [command] = advised(capsys.readouterr().out)
    assert command[0] == "report"
    assert main(command) == 0
    assert SweepLayout(results / "small").report_html.is_file()


@pytest.mark.slow
def test_a_report_without_mnist_advises_data_prepare_and_that_makes_the_report_whole(
    tmp_path, capsys, mnist_dir, sweep_archive
):
    """The advice names the data dir the report was given, so the report run again finds it."""
    results = tmp_path / "results"
    assert main(["archive", "--extract", str(sweep_archive), "--results-dir", str(results)]) == 0
    empty = tmp_path / "no data here"
    empty.mkdir()
    report = ["report", str(results / "small"), "--data-dir", str(empty)]
    assert main(report) == 0
    page = SweepLayout(results / "small").report_md.read_text().splitlines()
    [note] = [line for line in page if "MNIST is not available" in line]
    [prepare] = advised(note)
    assert prepare[:2] == ["data", "prepare"]
    assert main(prepare) == 0
    assert main(report) == 0
    assert "MNIST is not available" not in SweepLayout(results / "small").report_md.read_text()
