"""Tests of mnistsweep.train.data: where the data is, loading it, and verifying it by content.

Tampered copies of the real MNIST (a flipped pixel, shuffled labels, blanked images, swapped
splits, a cut file) are generated with hypothesis; each must be refused by `load`, by
`data check` and by `launch`, with one line that names the file and the fix.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mnistsweep.cli import main
from mnistsweep.errors import MnistsweepError
from mnistsweep.train import data
from mnistsweep.train.data import (
    DATA_ENV,
    KEYS,
    SHA256,
    TEST_COUNTS,
    TRAIN_COUNTS,
    Mnist,
    content_digest,
    data_path,
    default_data_dir,
    load,
    verify,
)

# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def real(mnist_dir: Path) -> Mnist:
    return load(mnist_dir)


@pytest.fixture(scope="session")
def good_bytes(mnist_dir: Path) -> bytes:
    """The prepared file as `data prepare` writes it (compressed npz)."""
    return data_path(mnist_dir).read_bytes()


def _copy(mnist: Mnist, **changes: np.ndarray) -> Mnist:
    arrays = {key: getattr(mnist, key).copy() for key in KEYS}
    arrays.update(changes)
    return Mnist(**arrays)


def _arrays(mnist: Mnist) -> dict[str, np.ndarray]:
    return {key: getattr(mnist, key) for key in KEYS}


def _save(directory: Path, arrays: dict[str, np.ndarray]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    np.savez(directory / "mnist.npz", **arrays)
    return directory / "mnist.npz"


# --- real data -------------------------------------------------------------------------------


def test_real_mnist_is_accepted_and_is_mnist(real: Mnist) -> None:
    verify(real, "real")
    assert {key: content_digest(getattr(real, key)) for key in KEYS} == SHA256
    assert np.bincount(real.y_train).tolist() == list(TRAIN_COUNTS)
    assert np.bincount(real.y_test).tolist() == list(TEST_COUNTS)
    # the first training image (a 5), row 5, as printed in countless tutorials
    assert real.x_train[0, 5, 12:24].tolist() == [
        3,
        18,
        18,
        18,
        126,
        136,
        175,
        26,
        166,
        255,
        247,
        127,
    ]
    assert real.x_train.mean() / 255 == pytest.approx(0.1307, abs=1e-4)


def test_mnist_repr_is_short(real: Mnist) -> None:
    assert repr(real) == (
        "Mnist(x_train=uint8[60000, 28, 28], y_train=uint8[60000], "
        "x_test=uint8[10000, 28, 28], y_test=uint8[10000])"
    )


def test_digest_does_not_depend_on_memory_layout(real: Mnist) -> None:
    assert content_digest(np.asfortranarray(real.x_test)) == SHA256["x_test"]
    assert content_digest(real.x_test[::-1][::-1]) == SHA256["x_test"]


def test_data_module_does_not_import_keras() -> None:
    code = (
        "import sys, mnistsweep.train.data; "
        "print('keras' in sys.modules, 'tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# --- default dir -----------------------------------------------------------------------------


def test_default_data_dir_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "d"))
    assert default_data_dir() == tmp_path / "d"


def test_default_data_dir_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(DATA_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_data_dir() == tmp_path / ".cache" / "mnistsweep"


def test_load_uses_env(monkeypatch: pytest.MonkeyPatch, mnist_dir: Path, real: Mnist) -> None:
    monkeypatch.setenv(DATA_ENV, str(mnist_dir))
    loaded = load()
    assert all(np.array_equal(getattr(loaded, key), getattr(real, key)) for key in KEYS)


# --- verified once per file and process --------------------------------------------------------


@pytest.fixture
def digest_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Count the arrays hashed (each call hashes one array)."""
    calls: list[str] = []
    original = data.content_digest

    def counting(array: np.ndarray) -> str:
        calls.append(str(array.shape))
        return original(array)

    monkeypatch.setattr(data, "content_digest", counting)
    return calls


def test_a_file_is_hashed_once_per_process(
    real: Mnist, tmp_path: Path, digest_calls: list[str]
) -> None:
    _save(tmp_path, _arrays(real))
    load(tmp_path)
    assert len(digest_calls) == 4
    load(tmp_path)
    load(tmp_path)
    assert len(digest_calls) == 4


def test_a_background_check_raises_what_load_raises(real: Mnist, tmp_path: Path) -> None:
    _save(tmp_path / "good", _arrays(real))
    good = data.BackgroundCheck(tmp_path / "good")
    good.wait()
    good.wait()  # waiting again: the same answer
    images = real.x_train.copy()
    images[5, 3, 3] ^= 0x10
    _save(tmp_path / "altered", _arrays(_copy(real, x_train=images)))
    for folder, problem in (
        (tmp_path / "missing", "no MNIST at"),
        (tmp_path / "altered", "x_train"),
    ):
        with pytest.raises(MnistsweepError) as from_load:
            load(folder)
        with pytest.raises(MnistsweepError, match=problem) as from_thread:
            data.BackgroundCheck(folder).wait()
        assert str(from_thread.value) == str(from_load.value)


def test_a_file_changed_in_place_is_verified_again(real: Mnist, tmp_path: Path) -> None:
    """Same size, same path, same inode, modification time set back: still caught."""
    path = _save(tmp_path, _arrays(real))
    load(tmp_path)
    before = path.stat()
    images = real.x_test.copy()
    images[0, 14, 14] ^= 0xFF
    altered = io.BytesIO()
    np.savez(altered, **_arrays(_copy(real, x_test=images)))  # uncompressed: the same size
    with path.open("r+b") as stream:  # the same inode
        stream.write(altered.getvalue())
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size and path.stat().st_ino == before.st_ino
    with pytest.raises(MnistsweepError, match="content of x_test differs"):
        load(tmp_path)


# --- tampered data, generated ------------------------------------------------------------------


@dataclass(frozen=True)
class Tamper:
    """One way to damage MNIST: what it does, and which array the message must name."""

    description: str
    damage: Callable[[Mnist, bytes], dict[str, np.ndarray] | bytes]
    named_array: str | None  # None: a damaged file, no array to name


def _flip_pixel(key: str, index: int, row: int, column: int, xor: int) -> Tamper:
    def damage(mnist: Mnist, _: bytes) -> dict[str, np.ndarray]:
        images = getattr(mnist, key).copy()
        images[index % len(images), row, column] ^= xor
        return _arrays(_copy(mnist, **{key: images}))

    return Tamper(f"{key}[{index}, {row}, {column}] ^= {xor}", damage, key)


def _permute_labels(key: str, start: int, length: int, seed: int) -> Tamper:
    def damage(mnist: Mnist, _: bytes) -> dict[str, np.ndarray]:
        labels = getattr(mnist, key).copy()
        window = labels[start : start + length]  # a view: permuted in place
        original = window.copy()
        window[:] = np.random.default_rng(seed).permutation(original)
        if np.array_equal(window, original):  # a permutation that changes nothing: swap two
            other = start + int(np.argmax(labels[start:] != labels[start]))
            labels[[start, other]] = labels[[other, start]]
        return _arrays(_copy(mnist, **{key: labels}))

    return Tamper(f"{key}[{start}:+{length}] permuted ({seed})", damage, key)


def _zero_images(key: str, count: int, seed: int) -> Tamper:
    def damage(mnist: Mnist, _: bytes) -> dict[str, np.ndarray]:
        images = getattr(mnist, key).copy()
        chosen = np.random.default_rng(seed).choice(len(images), size=count, replace=False)
        images[chosen] = 0
        return _arrays(_copy(mnist, **{key: images}))

    return Tamper(f"{count} {key} images zeroed ({seed})", damage, key)


def _swap_splits(mnist: Mnist, _: bytes) -> dict[str, np.ndarray]:
    return {"x_train": mnist.x_test, "y_train": mnist.y_test,
            "x_test": mnist.x_train, "y_test": mnist.y_train}  # fmt: skip


def _truncate_arrays(key: str, count: int) -> Tamper:
    def damage(mnist: Mnist, _: bytes) -> dict[str, np.ndarray]:
        return _arrays(_copy(mnist, **{key: getattr(mnist, key)[:-count]}))

    return Tamper(f"last {count} of {key} cut", damage, key)


def _truncate_file(fraction: float) -> Tamper:
    def damage(_: Mnist, good: bytes) -> bytes:
        return good[: int(len(good) * fraction)]

    return Tamper(f"file cut at {fraction:.3f}", damage, None)


tampers = st.one_of(
    st.builds(
        _flip_pixel,
        st.sampled_from(["x_train", "x_test"]),
        st.integers(0, 59_999),
        st.integers(0, 27),
        st.integers(0, 27),
        st.integers(1, 255),
    ),
    st.builds(
        _permute_labels,
        st.sampled_from(["y_train", "y_test"]),
        st.integers(10, 9_000),
        st.integers(2, 1_000),
        st.integers(0, 2**32 - 1),
    ),
    st.builds(
        _zero_images,
        st.sampled_from(["x_train", "x_test"]),
        st.integers(1, 3_000),
        st.integers(0, 2**32 - 1),
    ),
    st.just(Tamper("train and test swapped", _swap_splits, "x_train")),
    st.builds(_truncate_arrays, st.sampled_from(KEYS), st.integers(1, 5_000)),
    st.builds(_truncate_file, st.floats(0.0, 0.999)),
)


def _write_tampered(directory: Path, tamper: Tamper, real: Mnist, good: bytes) -> Path:
    damaged = tamper.damage(real, good)
    if isinstance(damaged, bytes):
        directory.mkdir(parents=True)
        (directory / "mnist.npz").write_bytes(damaged)
        return directory / "mnist.npz"
    return _save(directory, damaged)


def _cli(*arguments: str) -> tuple[int, str]:
    """`python -m mnistsweep ARGUMENTS` in this process: (exit code, stderr)."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(arguments))
    return code, stderr.getvalue()


def _assert_refusal(message: str, path: Path, tamper: Tamper) -> None:
    assert "\n" not in message.strip(), message
    assert str(path) in message and "data prepare --force" in message, message
    if tamper.named_array is not None:
        assert tamper.named_array in message, message


@pytest.fixture(scope="session")
def spec_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "tampered.yaml"
    document = {
        "name": "tampered",
        "grid": {"arch": ["linear"], "seed": [0]},
        "train": {"epochs": 1, "train_subset": 500},
        "executor": {"backend": "local"},
    }
    path.write_text(yaml.safe_dump(document))
    return path


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(tamper=tampers)
# The issue's own cases, always run: labels shuffled after the tenth, 3,000 images blanked.
@example(tamper=_permute_labels("y_train", 10, 59_990, seed=0))
@example(tamper=_zero_images("x_train", 3_000, seed=0))
@example(tamper=_flip_pixel("x_test", 9_999, 27, 27, xor=1))
@example(tamper=Tamper("train and test swapped", _swap_splits, "x_train"))
@example(tamper=_truncate_arrays("y_test", 1))
@example(tamper=_truncate_file(0.5))
def test_tampered_data_is_refused_everywhere(
    tamper: Tamper,
    real: Mnist,
    good_bytes: bytes,
    spec_file: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    folder = tmp_path_factory.mktemp("tampered")
    path = _write_tampered(folder / "data", tamper, real, good_bytes)

    with pytest.raises(MnistsweepError) as refused:
        load(path.parent)
    _assert_refusal(str(refused.value), path, tamper)

    code, stderr = _cli("data", "check", "--data-dir", str(path.parent))
    assert code == 2 and stderr.startswith("error: "), stderr
    _assert_refusal(stderr, path, tamper)

    results = folder / "results"
    code, stderr = _cli(
        "launch", str(spec_file), "--data-dir", str(path.parent), "--results-dir", str(results)
    )
    assert code == 2 and stderr.startswith("error: "), stderr
    _assert_refusal(stderr, path, tamper)
    written = sorted(p.relative_to(results) for p in results.rglob("*")) if results.exists() else []
    assert written == [], written  # nothing recorded, nothing submitted


def test_data_check_accepts_real_data(mnist_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "check", "--data-dir", str(mnist_dir)]) == 0
    assert "content verified by SHA-256" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda m: {"y_test": m.y_test.astype(np.int64)}, "y_test has dtype int64"),
        (lambda m: {"x_train": m.x_train[:59999]}, r"x_train has shape \(59999, 28, 28\)"),
        (lambda m: {"x_test": m.x_test // 2}, "content of x_test differs"),
        (lambda m: {"y_test": np.where(m.y_test == 9, 10, m.y_test).astype(np.uint8)}, "0..9"),
        (lambda m: {"y_train": np.roll(m.y_train, 1)}, "first train labels"),
        (lambda m: {"x_train": list(m.x_train)}, "x_train is list, not a numpy array"),
    ],
)
def test_verify_names_origin_and_problem(
    real: Mnist, change: Callable[[Mnist], dict[str, np.ndarray]], match: str
) -> None:
    with pytest.raises(MnistsweepError, match=match) as error:
        verify(_copy(real, **change(real)), "my-origin")
    assert str(error.value).startswith("my-origin: ")


def test_wrong_class_counts_are_named(real: Mnist, tmp_path: Path) -> None:
    labels = real.y_train.copy()
    labels[100] = (labels[100] + 1) % 10
    _save(tmp_path, _arrays(_copy(real, y_train=labels)))
    with pytest.raises(MnistsweepError, match=r"train class counts .* differ from MNIST's"):
        load(tmp_path)


# --- missing and unreadable files --------------------------------------------------------------


def test_load_missing(tmp_path: Path) -> None:
    with pytest.raises(MnistsweepError) as error:
        load(tmp_path / "nowhere")
    message = str(error.value)
    assert str(tmp_path / "nowhere" / "mnist.npz") in message
    assert "python -m mnistsweep data prepare" in message and DATA_ENV in message


def test_load_missing_default_dir_names_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    with pytest.raises(MnistsweepError, match="data prepare") as error:
        load()
    assert str(tmp_path / "mnist.npz") in str(error.value)


def test_data_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "mnist.npz").write_bytes(b"x")
    with pytest.raises(MnistsweepError, match="must be a directory"):
        load(tmp_path / "mnist.npz")


@pytest.mark.parametrize("damage", ["garbage", "flipped", "empty"])
def test_load_corrupt_file(damage: str, good_bytes: bytes, tmp_path: Path) -> None:
    middle = len(good_bytes) // 2
    bad = {
        "garbage": os.urandom(1000),
        "flipped": good_bytes[:middle]
        + bytes(b ^ 0xFF for b in good_bytes[middle : middle + 100])
        + good_bytes[middle + 100 :],
        "empty": b"",
    }[damage]
    (tmp_path / "mnist.npz").write_bytes(bad)
    with pytest.raises(MnistsweepError) as error:
        load(tmp_path)
    assert str(tmp_path / "mnist.npz") in str(error.value)
    assert "data prepare --force" in str(error.value)


def test_load_missing_key(real: Mnist, tmp_path: Path) -> None:
    np.savez(tmp_path / "mnist.npz", x_train=real.x_train, y_train=real.y_train)
    with pytest.raises(MnistsweepError, match=r"lacks \['x_test', 'y_test'\]") as error:
        load(tmp_path)
    assert str(tmp_path / "mnist.npz") in str(error.value)
