"""A sweep's results in one compressed file (tar.xz); `extract.py` reads one back.

What goes in: sweep.json, spec.yaml, the aggregate and report files, and per run the files
`RunLayout.RESULT_FILES` lists (records, history, command, error, class probabilities stored as
float16: three significant digits, plenty to ensemble and to report; read back as float32).
Models and TensorBoard event files stay out unless asked for: they are most of a sweep's bytes
and no table needs them; so do unfinished cells' resume points (`RunLayout.RESUME_FILES`), which
let a relaunch from the extracted folder go on from their last committed epoch. Only the sweep's
own run folders go in (`sweep.identity`): a foreign one is named in one warning and left out.
Every file is read through `fsio.open_read` and streamed.
"""

from __future__ import annotations

import io
import os
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import numpy as np

from mnistsweep import fsio
from mnistsweep.errors import MnistsweepError
from mnistsweep.sweep import guard, identity, records
from mnistsweep.sweep.layout import RunLayout, SweepLayout

SUFFIX = ".tar.xz"
PRESET: Final = (
    1  # xz level: float16 probabilities barely compress; level 6 saved 3% for 1.7x the time
)
TOP_FILES = ("sweep.json", "spec.yaml", "summary.csv", "ensemble.json", "report.md", "report.html")
MAX_PROBABILITY_BYTES = 64 * 1024**2  # 60,000 x 10 float32 is 2.4 MB


def archive(
    sweep_dir: Path,
    output: Path | None = None,
    *,
    with_models: bool = False,
    with_tensorboard: bool = False,
    with_resume_points: bool = False,
) -> tuple[Path, str | None]:
    """Write the sweep's results into `output` (default: `<sweep folder>.tar.xz` beside it),
    never inside the sweep folder itself (it would overwrite or archive its own files); the
    path written, and the warning naming foreign run folders left out (None when none)."""
    sweep_dir = sweep_dir.resolve()  # `archive .` names the folder, not ""
    layout = SweepLayout(sweep_dir)
    name = safe_component(layout.root.name)
    target = output or sweep_dir.parent / f"{sweep_dir.name}{SUFFIX}"
    if target.resolve().is_relative_to(sweep_dir):
        raise MnistsweepError(
            f"{target}: inside the sweep folder {sweep_dir}; write the archive outside it (-o)"
        )
    own = identity.SweepIdentity.of(guard.read_record(sweep_dir))
    runs = layout.run_folders()
    foreign = [found for run in runs if (found := own.check(run.root)) is not None]
    strangers = {item.name for item in foreign}
    kept = [run for run in runs if run.root.name not in strangers]
    files = list(
        _files(
            layout,
            kept,
            with_models=with_models,
            with_tensorboard=with_tensorboard,
            with_resume_points=with_resume_points,
        )
    )

    def save(temporary: Path) -> None:
        with tarfile.open(temporary, "w:xz", preset=PRESET) as bundle:
            for path in files:
                _add(bundle, f"{name}/{path.relative_to(layout.root).as_posix()}", path)

    written = fsio.write_with(target, save)
    return written, identity.warning(foreign) if foreign else None


def safe_component(name: str) -> str:
    """A sweep folder's name as an archive's top folder: one plain, visible path component."""
    if name in ("", ".", "..") or "/" in name or name.startswith(".") or not name.isprintable():
        raise MnistsweepError(f"{name!r}: not a usable sweep folder name")
    return name


def _files(
    layout: SweepLayout,
    runs: list[RunLayout],
    *,
    with_models: bool,
    with_tensorboard: bool,
    with_resume_points: bool,
) -> Iterator[Path]:
    """Regular files only (a planted symlink is never followed into the archive)."""
    yield from _regular(layout.root / name for name in TOP_FILES)
    if layout.report_files.is_dir() and not layout.report_files.is_symlink():
        yield from _regular(sorted(layout.report_files.iterdir()))
    names = RunLayout.RESULT_FILES + (RunLayout.MODEL_FILES if with_models else ())
    for run in runs:
        yield from _regular(run.root / name for name in names)
        if with_tensorboard and run.tensorboard.is_dir() and not run.tensorboard.is_symlink():
            yield from _regular(sorted(run.tensorboard.rglob("*")))
        if with_resume_points and not run.result.exists():
            yield from _regular(_resume_point(run))


def _resume_point(run: RunLayout) -> list[Path]:
    """state.json and the training states it names; nothing when it is missing or damaged (the
    cell then trains from its start, as it would here)."""
    try:
        state = records.read(records.RunState, run.state)
    except records.DamagedRecord:
        return []
    if state is None:
        return []
    named = {run.named(name) for name in (state.checkpoint, state.best_weights) if name}
    return [run.state, *(path for path in sorted(named) if RunLayout.is_resume_file(path.name))]


def _regular(paths: Iterator[Path] | list[Path]) -> Iterator[Path]:
    return (path for path in paths if path.is_file() and not path.is_symlink())


def _add(bundle: tarfile.TarFile, name: str, path: Path) -> None:
    """One member, streamed from the safe reader (float16 probabilities built in memory)."""
    info = tarfile.TarInfo(name)
    info.mode, info.mtime = 0o644, int(time.time())
    if path.name in RunLayout.PROBABILITY_FILES:
        content = _float16(path)
        if content is not None:
            info.size = len(content)
            bundle.addfile(info, io.BytesIO(content))
            return
    with fsio.open_read(path) as stream:
        info.size = os.fstat(stream.fileno()).st_size
        bundle.addfile(info, stream)


def _float16(path: Path) -> bytes | None:
    """None when the file is no usable array: it travels as it is, and the ensemble names it."""
    try:
        probabilities = fsio.load_npy(path, MAX_PROBABILITY_BYTES)
    except fsio.UnreadableFile:
        return None
    buffer = io.BytesIO()
    np.save(buffer, probabilities.astype(np.float16))
    return buffer.getvalue()
