"""A sweep archive back into a results folder: all or nothing.

The archive is read in one pass (tar's own order, bounded memory) into a hidden staging folder
inside the results dir. Each member must be a regular file at a path a sweep folder holds
(top files, `report_files/X`, `runs/<cell>/<RunLayout file>`, `runs/<cell>/tb/...`), under one
sweep name, without `..`, absolute names, links or devices, and given once; the bytes actually
written are counted against a cap per member and in all (a small archive that expands into a
huge file is refused as soon as the cap is reached). Then every run folder must be the sweep's
own (`sweep.identity` against the archive's sweep.json). Only then does anything move into place:
a new sweep folder is renamed in whole; into an existing folder of the same spec, each run folder
that is not there yet is renamed in (one rename each), so a run that exists is never replaced, and
a retry after an interruption finishes what was left. A failure or Ctrl-C removes the staging
folder; one left by a killed process (its pid gone) is removed by the next extraction.
"""

from __future__ import annotations

import bz2
import contextlib
import errno
import gzip
import io
import lzma
import os
import shutil
import socket
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO, cast

import numpy as np

from mnistsweep import fsio
from mnistsweep.analysis.archive import TOP_FILES, safe_component
from mnistsweep.errors import MnistsweepError
from mnistsweep.sweep import guard, identity, records
from mnistsweep.sweep.layout import RunLayout, SweepLayout

MAX_TOTAL_BYTES = 4 * 1024**3  # extracted, all members together
MAX_FILE_BYTES = 64 * 1024**2  # a record, a history, probabilities, a page of the report
MAX_MODEL_BYTES = 1024**3  # one model.keras (vgg_bn's is 60 MB)
MAX_MEMBERS = 1_000_000
EXPANSION_FLOOR = 64 * 1024**2  # what any archive may expand to, whatever its size
EXPANSION_RATIO = 50  # and beyond that, times its own size
MAX_DEPTH = 8  # runs/<cell>/tb/<group>/<file> is 5
CHUNK = 1024**2
STAGING = ".extracting-"  # <results dir>/.extracting-<host>-<pid>-<random>/


@dataclass(frozen=True)
class Extracted:
    sweep_dir: Path
    added: int  # run folders moved into place (all of them for a new sweep folder)
    kept: int  # run folders already there (same spec): left as they were


class Refused(MnistsweepError):
    """One member or run of the archive breaks a rule; nothing has been moved into place."""


def extract(archive_path: Path, results_dir: Path) -> Extracted:
    """Read an archive back into `results_dir/<sweep name>/` (see the module's rules)."""
    created = not results_dir.exists() and not results_dir.is_symlink()
    _results_folder(results_dir)
    _remove_stale_staging(results_dir)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f"{STAGING}{_owner()}-", dir=results_dir))
    except OSError as error:
        raise fsio.disk_error(results_dir, error) from None
    try:
        name = _stage(archive_path, staging)
        record = _verify(archive_path, SweepLayout(staging / name))
        return _move(SweepLayout(staging / name), SweepLayout.of(results_dir, name), record)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            _remove_if_empty(results_dir)


def _results_folder(results_dir: Path) -> None:
    """Created if missing; it may be a link (to a larger disk), as for every other command:
    the sweep folder inside it is where links are refused."""
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise MnistsweepError(f"{results_dir}: is a file; --results-dir must be a folder") from None
    except OSError as error:
        raise fsio.disk_error(results_dir, error) from None


# --- staging: one pass over the members --------------------------------------------------------


def _stage(archive_path: Path, staging: Path) -> str:
    """Every member written under `staging`; the sweep's name."""
    try:
        with (
            fsio.open_read(archive_path, single_link=False) as stream,
            _decompressed(stream) as plain,
            tarfile.open(fileobj=plain, mode="r|", tarinfo=_Member) as bundle,
        ):
            allowance = _allowance(os.fstat(stream.fileno()).st_size)
            return _copy_members(archive_path, bundle, staging, allowance)
    except fsio.UnreadableFile as error:
        raise MnistsweepError(f"{error}; not a sweep archive") from None
    except (tarfile.TarError, EOFError, lzma.LZMAError, zlib.error) as error:
        raise MnistsweepError(f"{archive_path}: not a readable sweep archive ({error})") from None
    except OSError as error:
        if error.errno == errno.ENAMETOOLONG:  # the path itself would drown the advice
            raise MnistsweepError(
                f"cannot write under {_shortened(staging.parent)}: {error.strerror}; choose a "
                "shorter --results-dir"
            ) from None
        if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            raise fsio.disk_error(staging.parent, error) from None
        raise MnistsweepError(f"{archive_path}: not a readable sweep archive ({error})") from None


def _decompressed(stream: BinaryIO) -> IO[bytes]:
    """The tar inside, decompressed as it is read: each read yields at most what it asks for
    (tar's own "r|*" inflates a whole compressed block at once: 250 MB for a block of zeros).
    Closing it leaves `stream` to its own `with`."""
    magic = stream.read(6)
    stream.seek(0)
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(stream)
    if magic.startswith(b"\x1f\x8b"):
        return cast(IO[bytes], gzip.GzipFile(fileobj=stream))
    if magic.startswith(b"BZh"):
        return cast(IO[bytes], bz2.BZ2File(stream))
    return stream


class _Member(tarfile.TarInfo):
    """A member header; the archive's end without tar's end-of-archive blocks is refused (tar
    itself stops there quietly: an archive cut between two members would pass as whole)."""

    @classmethod
    def fromtarfile(cls, bundle: tarfile.TarFile) -> _Member:
        try:
            return super().fromtarfile(bundle)
        except tarfile.HeaderError as error:
            if type(error).__name__ in ("EmptyHeaderError", "TruncatedHeaderError"):
                raise tarfile.ReadError("cut short: no end-of-archive marker") from None
            raise


def _allowance(archive_bytes: int) -> int:
    """Results compress a few times at most (float16 probabilities barely): an archive that
    expands far beyond that is a bomb, refused before it fills the disk."""
    return min(MAX_TOTAL_BYTES, EXPANSION_FLOOR + EXPANSION_RATIO * archive_bytes)


def _copy_members(
    archive_path: Path, bundle: tarfile.TarFile, staging: Path, allowance: int
) -> str:
    names: set[str] = set()
    seen: set[str] = set()
    total = count = 0
    for member in bundle:
        count += 1
        if count > MAX_MEMBERS:
            raise Refused(f"{archive_path}: more than {MAX_MEMBERS:,} members; refused")
        if not (member.isfile() or member.isdir()):
            raise Refused(f"{archive_path}: {member.name!r} is a link or a device, not a file")
        parts = _member_parts(archive_path, member.name)
        names.add(parts[0])
        if len(names) > 1:
            raise Refused(f"{archive_path}: expected one sweep folder, found {sorted(names)}")
        if member.isdir() or len(parts) == 1:
            continue
        relative = "/".join(parts[1:])
        cap = _allowed(archive_path, relative)
        if relative in seen:
            raise Refused(f"{archive_path}: {relative!r} is in it twice; refused")
        seen.add(relative)
        if member.size > cap or total + member.size > allowance:
            raise Refused(f"{archive_path}: {relative!r} is over the size cap; refused")
        source = bundle.extractfile(member)
        target = staging.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)  # private, and no member is a link
        total += _copy(source, target, min(cap, allowance - total), archive_path, relative)
    if not names or "sweep.json" not in seen:
        raise Refused(f"{archive_path}: holds no sweep.json; not a sweep archive")
    return names.pop()


def _copy(source: IO[bytes] | None, target: Path, cap: int, origin: Path, relative: str) -> int:
    """The member's bytes into `target`, chunk by chunk, counting what is really written (a
    plain write: the staging folder is private, and removed whole unless all of it verifies)."""
    written = 0
    with open(target, "xb") as out:
        for chunk in _chunks(source):
            written += len(chunk)
            if written > cap:
                raise Refused(f"{origin}: {relative!r} expands over the size cap; refused")
            out.write(chunk)
    return written


def _shortened(path: Path) -> str:
    text = str(path)
    return text if len(text) <= 200 else f"{text[:90]}...{text[-90:]}"


def _chunks(source: IO[bytes] | None) -> Iterator[bytes]:
    while source is not None and (chunk := source.read(CHUNK)):
        yield chunk


def _member_parts(archive_path: Path, name: str) -> list[str]:
    path = PurePosixPath(name)
    parts = [part for part in path.parts if part not in ("", ".")]
    unsafe = path.is_absolute() or "\\" in name or ".." in parts or not parts
    if unsafe or len(parts) > MAX_DEPTH or not all(part.isprintable() for part in parts):
        raise Refused(f"{archive_path}: unsafe member path {name!r}; refused")
    try:
        safe_component(parts[0])
    except MnistsweepError:
        raise Refused(f"{archive_path}: unsafe member path {name!r}; refused") from None
    return parts


def _allowed(archive_path: Path, relative: str) -> int:
    """The size cap of a path a sweep folder holds; any other path is refused."""
    parts = relative.split("/")
    top = len(parts) == 1 and parts[0] in TOP_FILES
    report = len(parts) == 2 and parts[0] == "report_files"
    in_run = len(parts) >= 3 and parts[0] == "runs"
    names = RunLayout.RESULT_FILES + RunLayout.MODEL_FILES
    run_file = (
        in_run and len(parts) == 3 and (parts[2] in names or RunLayout.is_resume_file(parts[2]))
    )
    tensorboard = in_run and len(parts) >= 4 and parts[2] == RunLayout.TENSORBOARD
    if not (top or report or run_file or tensorboard):
        raise Refused(f"{archive_path}: {relative!r} is no file of a sweep folder; refused")
    return MAX_MODEL_BYTES if parts[-1] in RunLayout.MODEL_FILES else MAX_FILE_BYTES


# --- verifying what was staged -----------------------------------------------------------------


def _verify(archive_path: Path, staged: SweepLayout) -> records.SweepRecord:
    """The archive's own sweep.json, once every run folder is shown to be one of its cells."""
    try:
        record = records.read(records.SweepRecord, staged.record)
        assert record is not None  # staging checked that sweep.json is there
        own = identity.SweepIdentity.of(record)
    except MnistsweepError as error:
        raise Refused(f"{archive_path}: its sweep.json: {_inside(error, staged)}") from None
    for run in staged.run_folders():
        try:
            result = records.read(records.RunResult, run.result)
            records.read(records.RunState, run.state)
        except records.DamagedRecord as damaged:
            raise Refused(f"{archive_path}: {_inside(damaged, staged)}") from None
        foreign = own.check(run.root)
        if foreign is not None:
            raise Refused(
                f"{archive_path}: runs/{foreign.name}: {foreign.reason}; a forged or foreign "
                "run, refused (nothing extracted)"
            )
        del result  # read for its own checks: a damaged record is refused, not skipped
        for path in (run.val_probs, run.test_probs):
            _as_float32(path)
    return record


def _inside(error: MnistsweepError, staged: SweepLayout) -> str:
    """A message about a staged file, naming it as the archive's member."""
    return str(error).replace(f"{staged.root}/", "")


def _as_float32(path: Path) -> None:
    """Probabilities travel as float16; a file that is no array is kept as it came (the
    ensemble names it as unusable)."""
    if not path.is_file():
        return
    try:
        probabilities = fsio.load_npy(path, MAX_FILE_BYTES)
    except fsio.UnreadableFile:
        return
    buffer = io.BytesIO()
    np.save(buffer, probabilities.astype(np.float32))
    fsio.write_bytes(path, buffer.getvalue())


# --- moving into place -------------------------------------------------------------------------


def _move(staged: SweepLayout, target: SweepLayout, record: records.SweepRecord) -> Extracted:
    runs = staged.run_folders()
    if _empty_or_missing(target.root):  # an empty folder is replaced by the rename
        _rename(staged.root, target.root)
        return Extracted(target.root, len(runs), 0)
    _refuse_another_spec(target, record)
    target.create(target.runs)
    added = kept = 0
    for run in runs:
        destination = target.runs / run.root.name
        if destination.exists() or destination.is_symlink():
            kept += 1
            continue
        _rename(run.root, destination)
        added += 1
    return Extracted(target.root, added, kept)


def _empty_or_missing(folder: Path) -> bool:
    if folder.is_symlink():
        return False
    if not folder.exists():
        return True
    return folder.is_dir() and not any(folder.iterdir())


def _rename(source: Path, destination: Path) -> None:
    try:
        os.rename(source, destination)
    except OSError as error:
        raise fsio.disk_error(destination, error) from None


def _refuse_another_spec(target: SweepLayout, incoming: records.SweepRecord) -> None:
    if target.root.is_symlink():
        raise MnistsweepError(f"{target.root}: not a folder; not extracting over it")
    try:
        present = guard.read_record(target.root)
    except MnistsweepError as refused:
        raise MnistsweepError(f"{refused}; not extracting over it") from None
    if present.fingerprint != incoming.fingerprint:
        raise MnistsweepError(
            f"{target.root}: holds another spec's results (from {present.spec_path}); extract "
            "into another --results-dir: results of different specs are never mixed"
        )


# --- staging folders left behind ---------------------------------------------------------------


def _owner() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _remove_stale_staging(results_dir: Path) -> None:
    """Staging folders of this machine whose process is gone (killed mid-extraction)."""
    prefix = f"{STAGING}{socket.gethostname()}-"
    for entry in results_dir.glob(f"{prefix}*"):
        pid = entry.name.removeprefix(prefix).split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)) and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not empty: another sweep lives there
        folder.rmdir()
