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
import math
import os
import stat
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, BinaryIO

import numpy as np

from mnistsweep.errors import MnistsweepError

_UMASK = os.umask(0)
os.umask(_UMASK)


class UnsafePathError(MnistsweepError):
    """A symlink, or a file where a folder belongs, inside a folder mnistsweep writes to."""


def expand_user(path: Path | str) -> Path:
    """`~` and `~user` expanded; a user with no home is one MnistsweepError, not a traceback."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        user = str(path).split("/", 1)[0]
        raise MnistsweepError(f"{path}: {user}: no such user (cannot expand ~)") from None


def disk_error(path: Path, error: OSError) -> MnistsweepError:
    """An OSError from writing `path` as one line the user can act on."""
    reason = error.strerror or str(error)
    hint = {
        errno.ENOSPC: "; free some space (or move the results with --results-dir) and run again",
        errno.EDQUOT: "; the disk quota is used up",
        errno.EROFS: "; the filesystem is read-only: choose another --results-dir",
        errno.EACCES: "; you may not write there: choose another --results-dir",
        errno.ENAMETOOLONG: "; the path is too long: choose a shorter --results-dir",
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
    append_lines(path, [line])


def append_lines(path: Path, lines: Sequence[str]) -> None:
    """Append `lines` in one write and one fsync (O_APPEND): concurrent writers never interleave
    within it, and a launch recording 1,000 jobs syncs the disk once, not 1,000 times."""
    ensure_dir(path.parent)
    refuse_symlink(path)
    content = "".join(line.rstrip("\n") + "\n" for line in lines).encode()
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o666)
        try:
            written = 0
            while written < len(content):  # a regular file takes it whole; never lose a tail
                written += os.write(descriptor, content[written:])
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    except OSError as error:
        raise disk_error(path, error) from None


def open_lock(path: Path) -> int:
    """A lock file's descriptor, created if missing, never truncated, never through a symlink."""
    ensure_dir(path.parent)
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        descriptor = os.open(path, flags, 0o666)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UnsafePathError(f"{path}: is a symlink; refusing to use it as a lock") from None
        raise disk_error(path, error) from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise UnsafePathError(f"{path}: not a regular file (a FIFO or a device); remove it")
    return descriptor


class UnreadableFile(MnistsweepError):
    """A file mnistsweep reads that is a link, a FIFO, a device, a folder, hardlinked or too big."""


class TooLarge(UnreadableFile):
    """A file or an array over the size a reader accepts."""


_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def open_read(path: Path, *, limit: int | None = None, single_link: bool = True) -> BinaryIO:
    """The one way mnistsweep opens a file to read: never through a symlink, never blocking on
    a FIFO or a device (O_NONBLOCK, then fstat), only a regular file, at most `limit` bytes
    large, and (`single_link`, for the files of a sweep folder) not hardlinked, since a hard link
    is the symlink that O_NOFOLLOW cannot see. FileNotFoundError when missing, else
    UnreadableFile naming the file and why."""
    try:
        descriptor = os.open(path, _READ_FLAGS)
    except FileNotFoundError:
        raise
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UnreadableFile(f"{path}: is a symlink; mnistsweep reads no links") from None
        raise UnreadableFile(f"{path}: cannot read ({error.strerror or error})") from None
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise UnreadableFile(f"{path}: not a regular file (a FIFO, a device or a folder)")
        if single_link and status.st_nlink > 1:
            raise UnreadableFile(f"{path}: has {status.st_nlink} hard links; refused as a link")
        if limit is not None and status.st_size > limit:
            raise TooLarge(f"{path}: {status.st_size:,} bytes, over the {limit:,} cap")
        os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def read_bytes(path: Path, limit: int, *, single_link: bool = True) -> bytes:
    """A whole file, checked as `open_read` does; the cap counts the bytes actually read (a file
    that grows after the fstat is refused too)."""
    try:
        with open_read(path, limit=limit, single_link=single_link) as stream:
            content = stream.read(limit + 1)
    except OSError as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise UnreadableFile(f"{path}: cannot read ({error.strerror or error})") from None
    if len(content) > limit:
        raise TooLarge(f"{path}: over the {limit:,}-byte cap")
    return content


def read_text(path: Path, limit: int = 64 * 1024 * 1024, *, single_link: bool = True) -> str | None:
    """A file's text, or None when it is missing or refused by `open_read` (link, FIFO, device,
    hardlink, over `limit`): callers tell the two apart by whether the path exists."""
    try:
        content = read_bytes(path, limit, single_link=single_link)
    except (OSError, UnreadableFile):
        return None
    return content.decode("utf-8", errors="replace")


def npy_header(stream: IO[bytes], origin: str) -> tuple[tuple[int, ...], np.dtype[Any]]:
    """Shape and dtype from an .npy header, read before any array memory is allocated."""
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
    except (ValueError, OSError, EOFError, SyntaxError) as error:
        raise UnreadableFile(f"{origin}: not an .npy array ({error})") from None
    if dtype.hasobject:
        raise UnreadableFile(f"{origin}: holds Python objects; only numeric arrays are read")
    return tuple(int(n) for n in shape), dtype


def read_npy(stream: IO[bytes], origin: str, max_bytes: int) -> np.ndarray[Any, Any]:
    """One array from an open .npy stream: its header's shape times item size is checked
    against `max_bytes` before memory is allocated for it."""
    start = stream.tell() if stream.seekable() else None
    shape, dtype = npy_header(stream, origin)
    size = math.prod(shape) * dtype.itemsize
    if size > max_bytes:
        raise TooLarge(f"{origin}: an array of {size:,} bytes, over the {max_bytes:,} cap")
    if start is not None:
        stream.seek(start)
    else:
        raise UnreadableFile(f"{origin}: cannot re-read the array header")
    try:
        array: np.ndarray[Any, Any] = np.lib.format.read_array(stream, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise UnreadableFile(f"{origin}: a damaged .npy array ({error})") from None
    return array


def load_npy(path: Path, max_bytes: int) -> np.ndarray[Any, Any]:
    """An .npy file read through `open_read` and `read_npy` (a FIFO, a link, a declared shape
    larger than the file or the cap: one UnreadableFile)."""
    try:
        with open_read(path) as stream:
            size = os.fstat(stream.fileno()).st_size
            return read_npy(stream, str(path), min(max_bytes, size))
    except FileNotFoundError:
        raise UnreadableFile(f"{path}: missing") from None


def map_npy(path: Path) -> np.ndarray[Any, Any]:
    """An .npy file memory-mapped read-only, opened through `open_read` (a FIFO or a link is
    one UnreadableFile, never a hang), its declared shape checked against the file's size:
    the ensemble maps thousands of runs' probabilities without reading them all."""
    try:
        with open_read(path) as stream:
            shape, dtype = npy_header(stream, str(path))
            offset = stream.tell()
            size = os.fstat(stream.fileno()).st_size
            if offset + math.prod(shape) * dtype.itemsize > size:
                raise UnreadableFile(f"{path}: its header declares more data than the file holds")
            if math.prod(shape) == 0:
                return np.zeros(shape, dtype)
            return np.memmap(stream, dtype=dtype, mode="r", shape=shape, offset=offset)
    except FileNotFoundError:
        raise UnreadableFile(f"{path}: missing") from None


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
