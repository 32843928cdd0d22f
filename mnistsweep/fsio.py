"""The one way mnistsweep writes files: atomic, never through a symlink, clear on a full disk.

A reader sees the old content, the new content, or nothing — never half a file: content goes to a
temporary file in the same folder, is flushed to disk, then renamed over the target. A symlink
planted where mnistsweep writes (the target itself, or a folder it creates) is refused, so nothing
outside the sweep folder is ever written, truncated or deleted through one. A full, read-only or
forbidden disk is one `MnistsweepError` naming the path, and leaves no empty or partial file.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from mnistsweep.errors import MnistsweepError

_UMASK = os.umask(0)
os.umask(_UMASK)


class UnsafePathError(MnistsweepError):
    """A symlink, or a file where a folder belongs, inside a folder mnistsweep writes to."""


def disk_error(path: Path, error: OSError) -> MnistsweepError:
    """An OSError from writing `path` as one line the user can act on."""
    reason = error.strerror or str(error)
    hint = {
        errno.ENOSPC: "; free some space (or move the results with --results-dir) and run again",
        errno.EDQUOT: "; the disk quota is used up",
        errno.EROFS: "; the filesystem is read-only: choose another --results-dir",
        errno.EACCES: "; you may not write there: choose another --results-dir",
    }.get(error.errno or 0, "")
    return MnistsweepError(f"cannot write {path}: {reason}{hint}")


def ensure_dir(path: Path, root: Path | None = None) -> Path:
    """Create `path` (and parents) as real folders. Refuse a symlink or a file in its place, and
    in every folder between `root` (a sweep folder, which may itself sit behind a link) and it."""
    checked = [path]
    if root is not None and path.is_relative_to(root):
        checked += [folder for folder in path.parents if folder.is_relative_to(root)]
    for folder in checked:
        if folder.is_symlink():
            raise UnsafePathError(
                f"{folder}: is a symlink; mnistsweep does not write through links"
            )
        if folder.exists() and not folder.is_dir():
            raise UnsafePathError(f"{folder}: is a file, expected a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UnsafePathError(f"{path}: a file stands where a folder is expected") from None
    except OSError as error:
        raise disk_error(path, error) from None
    return path


def refuse_symlink(path: Path) -> None:
    if path.is_symlink():
        raise UnsafePathError(f"{path}: is a symlink; mnistsweep does not write through links")


@contextmanager
def _atomic(path: Path, mode: str) -> Iterator[IO[Any]]:
    ensure_dir(path.parent)
    refuse_symlink(path)
    try:
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as error:
        raise disk_error(path, error) from None
    try:
        os.chmod(temporary, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide results from the group
        with os.fdopen(descriptor, mode) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)  # replaces a link planted meanwhile, never writes through it
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise disk_error(path, error) from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> Path:
    with _atomic(path, "w") as stream:
        stream.write(text)
    return path


def write_bytes(path: Path, content: bytes) -> Path:
    with _atomic(path, "wb") as stream:
        stream.write(content)
    return path


def write_with(path: Path, save: Callable[[Path], object]) -> Path:
    """For writers that want a file name (Keras, matplotlib, numpy): `save` writes a temporary
    name with the same suffix, which is then renamed into place."""
    ensure_dir(path.parent)
    refuse_symlink(path)
    temporary = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        save(temporary)
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise disk_error(path, error) from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path, content: Any) -> Path:
    return write_text(path, json.dumps(content, indent=1, default=_jsonable, allow_nan=True))


def _jsonable(value: Any) -> Any:
    """numpy scalars and paths turn up in metrics and configs."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def append_line(path: Path, line: str) -> None:
    """Append one line in one write (O_APPEND): concurrent writers never interleave within it."""
    ensure_dir(path.parent)
    refuse_symlink(path)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o666)
        try:
            os.write(descriptor, (line.rstrip("\n") + "\n").encode())
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    except OSError as error:
        raise disk_error(path, error) from None


def open_lock(path: Path) -> int:
    """A lock file's descriptor, created if missing, never truncated, never through a symlink."""
    ensure_dir(path.parent)
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UnsafePathError(f"{path}: is a symlink; refusing to use it as a lock") from None
        raise disk_error(path, error) from None


def read_text(path: Path, limit: int = 64 * 1024 * 1024) -> str | None:
    """A file's text, or None when it is missing, unreadable, a link or over `limit` bytes."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        with os.fdopen(descriptor, "rb") as stream:
            if os.fstat(stream.fileno()).st_size > limit:
                return None
            content = stream.read()
    except OSError:
        return None
    return content.decode("utf-8", errors="replace")


def remove_matching(
    folder: Path, patterns: tuple[str, ...], keep: frozenset[str] = frozenset()
) -> None:
    """Delete files matching `patterns` inside `folder` itself (not through a symlinked folder)."""
    if folder.is_symlink() or not folder.is_dir():
        return
    for pattern in patterns:
        for path in folder.glob(pattern):
            if path.name not in keep and (path.is_symlink() or path.is_file()):
                path.unlink(missing_ok=True)
