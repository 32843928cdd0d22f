"""A sweep's results in one compressed file (tar.xz), and back into a results folder.

What goes in: sweep.json, spec.yaml, the aggregate and report files, and per run result.json,
history.json, summary.txt, error.txt and the class probabilities stored as float16 (three
significant digits: plenty to ensemble and to report; read back as float32). Checkpoints, models
and TensorBoard event files stay out unless asked for: they are most of a sweep's bytes and no
table needs them.

Extraction trusts nothing in the file: every member must be a regular file (or a folder) at a
path the sweep layout knows, under one sweep name, with no absolute path and no `..`; the whole
is capped in size and count; nothing is written before every member has been checked. Into an
existing folder of another spec nothing is written; into one of the same spec only missing files
are added, so no result is ever overwritten.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Final

import numpy as np

from mnistsweep import fsio
from mnistsweep.errors import MnistsweepError
from mnistsweep.sweep import records
from mnistsweep.sweep.layout import RunLayout, SweepLayout

SUFFIX = ".tar.xz"
MAX_TOTAL_BYTES = 4 * 1024**3  # extracted, all members together
MAX_MEMBERS = 1_000_000
PRESET: Final = (
    1  # xz level: float16 probabilities barely compress; level 6 saved 3% for 1.7x the time
)
TOP_FILES = ("sweep.json", "spec.yaml", "summary.csv", "ensemble.json", "report.md", "report.html")
RUN_FILES = (
    "result.json",
    "history.json",
    "summary.txt",
    "error.txt",
    "probs_val.npy",
    "probs_test.npy",
)
MODEL_FILES = ("model.keras",)
PROBABILITY_FILES = ("probs_val.npy", "probs_test.npy")


@dataclass(frozen=True)
class Extracted:
    sweep_dir: Path
    written: int
    kept: int  # files already there (same spec): left as they were


# --- writing ---------------------------------------------------------------------------------


def archive(
    sweep_dir: Path,
    output: Path | None = None,
    *,
    with_models: bool = False,
    with_tensorboard: bool = False,
) -> Path:
    """Write the sweep's results into `output` (default: `<sweep folder>.tar.xz` beside it),
    never inside the sweep folder itself (it would overwrite or archive its own files)."""
    sweep_dir = sweep_dir.resolve()  # `archive .` names the folder, not ""
    layout = SweepLayout(sweep_dir)
    name = _sweep_name(layout)
    target = output or sweep_dir.parent / f"{sweep_dir.name}{SUFFIX}"
    if target.resolve().is_relative_to(sweep_dir):
        raise MnistsweepError(
            f"{target}: inside the sweep folder {sweep_dir}; write the archive outside it (-o)"
        )
    files = list(_files(layout, with_models=with_models, with_tensorboard=with_tensorboard))

    def save(temporary: Path) -> None:
        with tarfile.open(temporary, "w:xz", preset=PRESET) as bundle:
            for path in files:
                relative = path.relative_to(layout.root).as_posix()
                _add(bundle, f"{name}/{relative}", _content(path))

    return fsio.write_with(target, save)


def _sweep_name(layout: SweepLayout) -> str:
    try:
        record = records.read(records.SweepRecord, layout.record)
    except records.DamagedRecord as damaged:
        raise MnistsweepError(f"{damaged}; cannot archive a damaged sweep folder") from None
    if record is None:
        raise MnistsweepError(f"{layout.root}: not a sweep folder (sweep.json missing)")
    return _safe_component(layout.root.name)


def _files(layout: SweepLayout, *, with_models: bool, with_tensorboard: bool) -> Iterator[Path]:
    """Regular files only (a planted symlink is never followed into the archive)."""
    yield from _regular(layout.root / name for name in TOP_FILES)
    if layout.report_files.is_dir() and not layout.report_files.is_symlink():
        yield from _regular(sorted(layout.report_files.iterdir()))
    names = RUN_FILES + (MODEL_FILES if with_models else ())
    for run in layout.run_folders():
        yield from _regular(run.root / name for name in names)
        if with_tensorboard and run.tensorboard.is_dir() and not run.tensorboard.is_symlink():
            yield from _regular(sorted(run.tensorboard.rglob("*")))


def _regular(paths: Iterator[Path] | list[Path]) -> Iterator[Path]:
    return (path for path in paths if path.is_file() and not path.is_symlink())


def _content(path: Path) -> bytes:
    if path.name in PROBABILITY_FILES:
        try:
            probabilities = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return path.read_bytes()  # kept as it is; the ensemble names it as unusable
        buffer = io.BytesIO()
        np.save(buffer, probabilities.astype(np.float16))
        return buffer.getvalue()
    return path.read_bytes()


def _add(bundle: tarfile.TarFile, name: str, content: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(content), 0o644, int(time.time())
    bundle.addfile(info, io.BytesIO(content))


# --- reading ---------------------------------------------------------------------------------


def extract(archive_path: Path, results_dir: Path) -> Extracted:
    """Read an archive back into `results_dir/<sweep name>/` (see the module's rules)."""
    try:
        with (
            fsio.open_read(archive_path, single_link=False) as stream,
            tarfile.open(fileobj=stream, mode="r:*") as bundle,
        ):
            members = bundle.getmembers()
            name, files = _checked(archive_path, members)
            layout = SweepLayout.of(results_dir, name)
            _refuse_another_spec(archive_path, bundle, files, layout)
            return _write(bundle, files, layout)
    except fsio.UnreadableFile as error:
        raise MnistsweepError(f"{error}; not a sweep archive") from None
    except (tarfile.TarError, EOFError, OSError) as error:
        raise MnistsweepError(f"{archive_path}: not a readable sweep archive ({error})") from None


def _checked(
    archive_path: Path, members: list[tarfile.TarInfo]
) -> tuple[str, dict[str, tarfile.TarInfo]]:
    """The sweep name and its files by relative path, or one line saying what is refused."""
    if len(members) > MAX_MEMBERS:
        raise MnistsweepError(f"{archive_path}: more than {MAX_MEMBERS} members; refused")
    names, files, total = set(), {}, 0
    for member in members:
        if not (member.isfile() or member.isdir()):
            raise MnistsweepError(
                f"{archive_path}: {member.name!r} is a link or a device, not a file; refused"
            )
        parts = _member_parts(archive_path, member.name)
        names.add(parts[0])
        if member.isfile() and len(parts) > 1:
            relative = "/".join(parts[1:])
            _allowed(archive_path, relative)
            files[relative] = member
            total += member.size
    if total > MAX_TOTAL_BYTES:
        raise MnistsweepError(
            f"{archive_path}: {total / 1024**3:.1f} GiB once extracted, over the "
            f"{MAX_TOTAL_BYTES / 1024**3:.0f} GiB cap; refused"
        )
    if len(names) != 1:
        raise MnistsweepError(f"{archive_path}: expected one sweep folder, found {len(names)}")
    if "sweep.json" not in files:
        raise MnistsweepError(f"{archive_path}: holds no sweep.json; not a sweep archive")
    return names.pop(), files


def _member_parts(archive_path: Path, name: str) -> list[str]:
    path = PurePosixPath(name)
    parts = [part for part in path.parts if part not in ("", ".")]
    if path.is_absolute() or "\\" in name or ".." in parts or not parts:
        raise MnistsweepError(f"{archive_path}: unsafe member path {name!r}; refused")
    _safe_component(parts[0])
    return parts


def _allowed(archive_path: Path, relative: str) -> None:
    """Only paths a sweep folder holds: top files, report_files/X, runs/<cell>/<known file>."""
    parts = relative.split("/")
    top = len(parts) == 1 and parts[0] in TOP_FILES
    report = len(parts) == 2 and parts[0] == "report_files"
    run_file = len(parts) == 3 and parts[0] == "runs" and parts[2] in RUN_FILES + MODEL_FILES
    tensorboard = len(parts) >= 4 and parts[0] == "runs" and parts[2] == "tb"
    if not (top or report or run_file or tensorboard):
        raise MnistsweepError(f"{archive_path}: {relative!r} is no file of a sweep folder; refused")


def _safe_component(name: str) -> str:
    if name in ("", ".", "..") or "/" in name or not name.isprintable():
        raise MnistsweepError(f"{name!r}: not a usable sweep folder name")
    return name


def _destination(layout: SweepLayout, relative: str) -> Path:
    parts = relative.split("/")
    if parts[0] == "runs":
        run: RunLayout = layout.run_named(parts[1])
        return run.root.joinpath(*parts[2:])
    if parts[0] == "report_files":
        return layout.report_file(parts[1])
    return layout.root / parts[0]


def _refuse_another_spec(
    archive_path: Path,
    bundle: tarfile.TarFile,
    files: dict[str, tarfile.TarInfo],
    layout: SweepLayout,
) -> None:
    if not layout.root.exists() and not layout.root.is_symlink():
        return
    incoming = records.parse(records.SweepRecord, _json(bundle, files["sweep.json"]), archive_path)
    try:
        present = records.read(records.SweepRecord, layout.record)
    except records.DamagedRecord as damaged:
        raise MnistsweepError(f"{damaged}; not extracting over it") from None
    if present is None and any(layout.root.iterdir()):
        raise MnistsweepError(f"{layout.root}: exists and is not a sweep folder; not extracting")
    if present is not None and present.fingerprint != incoming.fingerprint:
        raise MnistsweepError(
            f"{layout.root}: holds another spec's results (from {present.spec_path}); extract "
            "into another --results-dir: results of different specs are never mixed"
        )


def _json(bundle: tarfile.TarFile, member: tarfile.TarInfo) -> object:
    stream = bundle.extractfile(member)
    if stream is None or member.size > records.MAX_RECORD_BYTES:
        raise MnistsweepError(f"{member.name}: unreadable")
    try:
        return json.loads(stream.read())
    except ValueError as error:
        raise MnistsweepError(f"{member.name}: not JSON ({error})") from None


def _write(
    bundle: tarfile.TarFile, files: dict[str, tarfile.TarInfo], layout: SweepLayout
) -> Extracted:
    layout.create()
    written = kept = 0
    for relative, member in sorted(files.items()):
        target = _destination(layout, relative)
        if target.exists() or target.is_symlink():
            kept += 1
            continue
        stream = bundle.extractfile(member)
        content = stream.read() if stream is not None else b""
        if target.name in PROBABILITY_FILES:
            content = _as_float32(content)
        fsio.ensure_dir(target.parent, layout.root)
        fsio.write_bytes(target, content)
        written += 1
    return Extracted(layout.root, written, kept)


def _as_float32(content: bytes) -> bytes:
    try:
        probabilities = np.load(io.BytesIO(content), allow_pickle=False)
    except (OSError, ValueError):
        return content  # kept as it came; the ensemble names it as unusable
    buffer = io.BytesIO()
    np.save(buffer, probabilities.astype(np.float32))
    return buffer.getvalue()
