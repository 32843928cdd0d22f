"""Where a result comes from: the code that ran, the data it read, the libraries it used.

Computed once per process (a job's cells share it) from the files themselves, so a local run,
a SLURM job importing a launch's code snapshot, and `train` in a checkout record it alike.
"""

from __future__ import annotations

import functools
import hashlib
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import mnistsweep
from mnistsweep.sweep import records

PACKAGE_DIR = Path(mnistsweep.__file__).resolve().parent
LIBRARIES = ("keras", "tensorflow", "jax", "jaxlib", "numpy", "h5py")
GIT_TIMEOUT_SECONDS = 10


def code_sha256(package_dir: Path = PACKAGE_DIR) -> str:
    """SHA-256 over every file of the package (its path and its bytes), bytecode left out."""
    digest = hashlib.sha256()
    files = sorted(
        path
        for path in package_dir.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    )
    for path in files:
        content = path.read_bytes()
        name = path.relative_to(package_dir).as_posix().encode()
        digest.update(b"%d:%s%d:" % (len(name), name, len(content)))
        digest.update(content)
    return digest.hexdigest()


def _git(checkout: Path, *arguments: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(checkout), *arguments],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_SECONDS,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_version(package_dir: Path = PACKAGE_DIR) -> tuple[str | None, bool | None]:
    """(commit, dirty) when the package is a git checkout's own, else (None, None).

    A launch's code snapshot inside a checkout's results folder is not that checkout's code,
    so the checkout must be the package's parent folder. Dirty: uncommitted changes to the
    package's files, untracked ones included.
    """
    checkout = package_dir.parent
    top = _git(checkout, "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != checkout:
        return None, None
    commit = _git(checkout, "rev-parse", "HEAD")
    status = _git(checkout, "status", "--porcelain", "--", package_dir.name)
    if commit is None or status is None:
        return None, None
    return commit, bool(status)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@functools.lru_cache(maxsize=8)
def _data_sha256(path: Path, size: int, modified_ns: int) -> str:
    return file_sha256(path)


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


@functools.lru_cache(maxsize=1)
def _code() -> tuple[str | None, bool | None, str]:
    commit, dirty = git_version()
    return commit, dirty, code_sha256()


def provenance(data_file: Path) -> records.Provenance:
    """The record for a run that read `data_file`; the code's part is computed once a process."""
    commit, dirty, code = _code()
    stat = data_file.stat()
    return records.Provenance(
        git_commit=commit,
        git_dirty=dirty,
        package_version=mnistsweep.__version__,
        code_sha256=code,
        data_sha256=_data_sha256(data_file.resolve(), stat.st_size, stat.st_mtime_ns),
        versions=library_versions(),
    )
