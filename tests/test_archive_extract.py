"""`archive --extract` is all or nothing: a damaged or forged archive changes nothing on disk, a
merge never replaces a run that exists, and a failed or interrupted extraction leaves nothing that
blocks the retry its message advises (each retry is run here)."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_archive import make_sweep

from mnistsweep.__main__ import main
from mnistsweep.analysis import archive, extract
from mnistsweep.sweep.layout import SweepLayout
from mnistsweep.sweep.spec import parse_spec

FIXTURES = [HealthCheck.function_scoped_fixture]
Members = list[tuple[str, bytes]]


def tree(root: Path) -> dict[str, str]:
    """Every entry under `root` with a digest of its content (or what kind of entry it is)."""
    if not root.exists():
        return {}
    found = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_symlink():
            found[relative] = "link"
        elif path.is_file():
            found[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            found[relative] = "folder"
    return found


def members_of(path: Path) -> Members:
    with tarfile.open(path) as bundle:
        return [
            (member.name, bundle.extractfile(member).read())  # type: ignore[union-attr]
            for member in bundle.getmembers()
            if member.isfile()
        ]


def write_tar(path: Path, members: Members, mode: str = "w") -> Path:
    with tarfile.open(path, mode) as bundle:
        for name, content in members:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            bundle.addfile(info, io.BytesIO(content))
    return path


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> tuple[Path, Members]:
    """A real sweep's archive (4 runs), and its members."""
    root = tmp_path_factory.mktemp("original")
    layout = make_sweep(root / "results")
    path, _ = archive.archive(layout.root, root / "small.tar.xz")
    return path, members_of(path)


def run_folders(members: Members) -> list[str]:
    return sorted({name.split("/")[2] for name, _ in members if name.count("/") >= 3})


def refused(capsys, results: Path, archive_path: Path, before: dict[str, str]) -> str:
    """Extraction exits 2 with one error line, and the results dir is as it was."""
    assert main(["archive", "--extract", str(archive_path), "--results-dir", str(results)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert tree(results) == before
    return lines[0]


# --- forged and damaged archives ---------------------------------------------------------------


def another_specs_cell_folder() -> str:
    spec = parse_spec({"name": "other", "grid": {"arch": ["vgg"], "seed": [7]}}, Path("o.yaml"))
    return spec.cells()[0].dirname


def edit_result(members: Members, index: int, edit) -> Members:
    results = [i for i, (name, _) in enumerate(members) if name.endswith("/result.json")]
    position = results[index % len(results)]
    name, content = members[position]
    record = json.loads(content)
    edit(record)
    return [*members[:position], (name, json.dumps(record).encode()), *members[position + 1 :]]


FORGERIES = (
    "foreign run",
    "own run under a made-up id",
    "config edited",
    "cell id edited",
    "name edited",
    "accuracy out of range",
    "result not JSON",
    "duplicate member",
    "duplicate spelled differently",
    "unknown file in a run",
    "second sweep folder",
    "sweep.json edited",
)


def forgeries(members: Members, index: int, text: str) -> dict[str, Members]:
    """Each way an archive can lie: forged runs, edited results, extra or doubled members."""
    runs = run_folders(members)
    own = runs[index % len(runs)]
    foreign = another_specs_cell_folder()
    copied = [(n.replace(own, foreign), c) for n, c in members if f"/{own}/" in n]
    renamed = [(n.replace(own, own[:-12] + "0" * 12), c) for n, c in members if f"/{own}/" in n]
    twice = members[index % len(members)]
    return {
        "foreign run": members + copied,
        "own run under a made-up id": members + renamed,
        "config edited": edit_result(members, index, lambda r: r["config"].update(seed=99)),
        "cell id edited": edit_result(members, index, lambda r: r.update(cell_id="0" * 12)),
        "name edited": edit_result(members, index, lambda r: r.update(cell_name=text)),
        "accuracy out of range": edit_result(
            members, index, lambda r: r["metrics"].update(test_accuracy=2.0)
        ),
        "result not JSON": [
            (n, text.encode() if n.endswith(f"{own}/result.json") else c) for n, c in members
        ],
        "duplicate member": [*members, (twice[0], twice[1] + text.encode())],
        "duplicate spelled differently": [*members, (twice[0].replace("/", "/./", 1), twice[1])],
        "unknown file in a run": [*members, (f"small/runs/{own}/{text or 'x'}.sh", b"rm -rf ~")],
        "second sweep folder": [*members, (f"other{index}/sweep.json", b"{}")],
        "sweep.json edited": [
            (n, c.replace(b'"learning_rate": 0.001', b'"learning_rate": 0.01'))
            if n == "small/sweep.json"
            else (n, c)
            for n, c in members
        ],
    }


@settings(max_examples=12, deadline=None, suppress_health_check=FIXTURES)
@given(
    kind=st.sampled_from(FORGERIES),
    index=st.integers(0, 50),
    text=st.text(st.characters(codec="ascii", categories=["L", "N"]), max_size=8),
    into_existing=st.booleans(),
)
def test_a_forged_archive_changes_nothing(
    tmp_path_factory, capsys, original, kind, index, text, into_existing
):
    _, members = original
    every = forgeries(members, index, text)
    assert sorted(every) == sorted(FORGERIES)
    forged = every[kind]
    root = tmp_path_factory.mktemp("forged")
    results = root / "results"
    if into_existing:  # an unfinished copy of the same sweep: two runs missing
        layout = make_sweep(results)
        for run in layout.run_folders()[:2]:
            for file in sorted(run.root.rglob("*"), reverse=True):
                file.rmdir() if file.is_dir() else file.unlink()
            run.root.rmdir()
    before = tree(results)
    line = refused(capsys, results, write_tar(root / "forged.tar", forged), before)
    assert "forged.tar" in line


@settings(max_examples=15, deadline=None, suppress_health_check=FIXTURES)
@given(cut=st.floats(0.0, 1.0, exclude_max=True), compressed=st.booleans())
def test_a_truncated_archive_extracts_whole_or_not_at_all(
    tmp_path_factory, capsys, original, cut, compressed
):
    _, members = original
    root = tmp_path_factory.mktemp("truncated")
    whole = write_tar(root / "whole.tar", members, "w:xz" if compressed else "w")
    content = whole.read_bytes()
    damaged = root / "damaged.tar"
    damaged.write_bytes(content[: int(len(content) * cut)])
    results = root / "results"
    code = main(["archive", "--extract", str(damaged), "--results-dir", str(results)])
    capsys.readouterr()
    if code == 0:  # only the tar's end padding was cut: every member is there
        assert main(["archive", "--extract", str(whole), "--results-dir", str(root / "c")]) == 0
        assert tree(results) == tree(root / "c")
    else:
        assert code == 2 and tree(results) == {}


@settings(max_examples=8, deadline=None, suppress_health_check=FIXTURES)
@given(index=st.integers(1, 1000))
def test_an_archive_cut_between_two_members_is_refused(tmp_path_factory, capsys, original, index):
    """tar alone reads such an archive as complete, its last members missing."""
    _, members = original
    root = tmp_path_factory.mktemp("cut")
    whole = write_tar(root / "whole.tar", members)
    with tarfile.open(whole) as bundle:
        boundaries = [member.offset for member in bundle.getmembers()][1:]
    damaged = root / "damaged.tar"
    damaged.write_bytes(whole.read_bytes()[: boundaries[index % len(boundaries)]])
    assert "cut short" in refused(capsys, root / "results", damaged, {})


@settings(max_examples=6, deadline=None, suppress_health_check=FIXTURES)
@given(
    size=st.integers(300_001, 400_000), member=st.sampled_from(["report.md", "runs/R/summary.txt"])
)
def test_a_member_over_its_cap_is_refused_by_the_bytes_written(
    tmp_path_factory, capsys, monkeypatch, original, size, member
):
    _, members = original
    monkeypatch.setattr(extract, "MAX_FILE_BYTES", 300_000)  # above every member's real size
    name = "small/" + member.replace("R", run_folders(members)[0])
    big = [(n, c) for n, c in members if n != name] + [(name, b"0" * size)]
    root = tmp_path_factory.mktemp("big")
    line = refused(capsys, root / "results", write_tar(root / "big.tar.xz", big, "w:xz"), {})
    assert "size cap" in line and repr(name.removeprefix("small/")) in line


def test_an_archive_that_expands_far_beyond_its_size_is_refused(
    tmp_path, capsys, monkeypatch, original
):
    """A few KB of xz that would write megabytes of zeros: refused once the allowance is spent,
    whatever each member declares."""
    monkeypatch.setattr(extract, "EXPANSION_FLOOR", 0)
    record = next(member for member in original[1] if member[0] == "small/sweep.json")
    bomb = write_tar(
        tmp_path / "bomb.tar.xz", [record, ("small/report.html", b"\0" * 2**24)], "w:xz"
    )
    assert bomb.stat().st_size * extract.EXPANSION_RATIO < 2**24
    assert "'report.html' is over the size cap" in refused(capsys, tmp_path / "results", bomb, {})


# --- merging -----------------------------------------------------------------------------------


@settings(max_examples=6, deadline=None, suppress_health_check=FIXTURES)
@given(present=st.sets(st.integers(0, 3)), unfinished=st.sets(st.integers(0, 3)))
def test_merging_adds_only_absent_runs_and_never_touches_one_there(
    tmp_path_factory, capsys, original, present, unfinished
):
    path, _ = original
    root = tmp_path_factory.mktemp("merge")
    layout = make_sweep(root / "results")
    runs = layout.run_folders()
    for index, run in enumerate(runs):
        if index not in present:
            for file in sorted(run.root.rglob("*"), reverse=True):
                file.rmdir() if file.is_dir() else file.unlink()
            run.root.rmdir()
        elif index in unfinished:  # a cell still training: no result yet
            run.result.unlink()
            run.state.write_text(json.dumps({"cell_id": run.root.name[-12:], "epochs_done": 1}))
    before = tree(layout.root)
    assert main(["archive", "--extract", str(path), "--results-dir", str(root / "results")]) == 0
    out = capsys.readouterr().out
    assert f"extracted {4 - len(present)} run folder(s)" in out
    after = tree(layout.root)
    assert {k: v for k, v in after.items() if k in before} == before
    added = {k.split("/")[1] for k in after.keys() - before.keys()}
    assert added == {runs[i].root.name for i in range(4) if i not in present}


# --- failures and interruptions: the advised retry, run ----------------------------------------


def extract_command(path: Path, results: Path) -> list[str]:
    return ["archive", "--extract", str(path), "--results-dir", str(results)]


def fail_on_call(monkeypatch, name: str, number: int, error: BaseException) -> None:
    real = getattr(extract, name)
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == number:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(extract, name, failing)


@pytest.mark.parametrize("number", [1, 9])
def test_a_full_disk_then_the_advised_run_again_works(
    tmp_path, capsys, monkeypatch, original, number
):
    path, _ = original
    results = tmp_path / "results"
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    fail_on_call(monkeypatch, "_copy", number, full)
    assert main(extract_command(path, results)) == 2
    line = capsys.readouterr().err.strip()
    assert "free some space" in line and "run again" in line and "\n" not in line
    assert tree(results) == {}
    monkeypatch.undo()  # space freed
    assert main(extract_command(path, results)) == 0
    assert main(extract_command(path, tmp_path / "clean")) == 0
    assert tree(results) == tree(tmp_path / "clean")


def test_ctrl_c_while_staging_leaves_nothing_and_the_retry_works(tmp_path, monkeypatch, original):
    path, _ = original
    results = tmp_path / "results"
    fail_on_call(monkeypatch, "_copy", 5, KeyboardInterrupt())
    assert main(extract_command(path, results)) == 130
    assert tree(results) == {}
    monkeypatch.undo()
    assert main(extract_command(path, results)) == 0
    assert len(SweepLayout(results / "small").run_folders()) == 4


def test_ctrl_c_in_the_middle_of_a_merge_and_the_retry_finishes_it(
    tmp_path, capsys, monkeypatch, original
):
    path, _ = original
    layout = make_sweep(tmp_path / "results")
    kept = layout.run_folders()[0]
    for run in layout.run_folders()[1:]:
        for file in sorted(run.root.rglob("*"), reverse=True):
            file.rmdir() if file.is_dir() else file.unlink()
        run.root.rmdir()
    before = tree(kept.root)
    fail_on_call(monkeypatch, "_rename", 2, KeyboardInterrupt())
    assert main(extract_command(path, tmp_path / "results")) == 130
    assert len(layout.run_folders()) == 2
    monkeypatch.undo()
    capsys.readouterr()
    assert main(extract_command(path, tmp_path / "results")) == 0
    assert "extracted 2 run folder(s)" in capsys.readouterr().out
    assert len(layout.run_folders()) == 4 and tree(kept.root) == before
    assert [p.name for p in (tmp_path / "results").iterdir()] == ["small"]


def test_a_name_too_long_then_the_advised_shorter_results_dir_works(tmp_path, capsys, original):
    path, _ = original
    # 4,020 characters: the staging folder fits under Linux's 4,096, a run's files do not
    deep = tmp_path.joinpath(*["d" * 200] * ((4020 - len(str(tmp_path))) // 201))
    deep = deep / ("e" * (4019 - len(str(deep))))
    assert len(str(deep)) == 4020
    assert main(extract_command(path, deep)) == 2
    line = capsys.readouterr().err.strip()
    assert "too long" in line and "shorter --results-dir" in line
    assert tree(deep) == {}
    assert main(extract_command(path, tmp_path / "short")) == 0


def test_a_killed_extraction_leaves_nothing_that_blocks_the_retry(tmp_path, original):
    """kill -9 mid-extraction (the staging folder is there), then the same command again."""
    _, members = original
    results = tmp_path / "results"
    results.mkdir()
    large = [*members, ("small/report.html", os.urandom(48 * 2**20))]
    slow = write_tar(tmp_path / "slow.tar", large)
    child = subprocess.Popen(
        [sys.executable, "-m", "mnistsweep", *extract_command(slow, results)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while child.poll() is None and not list(results.glob(f"{extract.STAGING}*")):
            pass
        child.kill()
    finally:
        child.wait()
    assert child.returncode == -9, "the extraction ended before it could be killed"
    assert list(results.glob(f"{extract.STAGING}*")), "killed before staging"
    live = results / f"{extract.STAGING}{extract._owner()}-abc"  # this very process: alive
    live.mkdir()
    assert main(extract_command(slow, results)) == 0
    assert sorted(p.name for p in results.iterdir()) == sorted([live.name, "small"])
    assert len(SweepLayout(results / "small").run_folders()) == 4


class Zeros(io.RawIOBase):
    """`size` zero bytes, read as a stream (never held in memory)."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        count = min(len(buffer), self.left)
        buffer[:count] = bytes(count)
        self.left -= count
        return count


@pytest.mark.slow
def test_a_small_archive_declaring_a_gibibyte_is_refused_in_bounded_memory(tmp_path, original):
    """150 KB of xz holding a 1 GiB model of zeros: one line, within 1 GiB of address space
    (the whole-member read of before needed 2.7 GB), nothing written."""
    import resource

    record = next(member for member in original[1] if member[0] == "small/sweep.json")
    run = run_folders(original[1])[0]
    bomb = tmp_path / "bomb.tar.xz"
    with tarfile.open(bomb, "w:xz", preset=1) as bundle:
        for name, size, content in (
            (record[0], len(record[1]), io.BytesIO(record[1])),
            (f"small/runs/{run}/model.keras", 2**30, Zeros(2**30)),
        ):
            info = tarfile.TarInfo(name)
            info.size = size
            bundle.addfile(info, content)
    assert bomb.stat().st_size < 2**20

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2**30, 2**30))

    done = subprocess.run(
        [sys.executable, "-m", "mnistsweep", *extract_command(bomb, tmp_path / "results")],
        capture_output=True,
        text=True,
        preexec_fn=limited,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and "over the size cap" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and tree(tmp_path / "results") == {}
