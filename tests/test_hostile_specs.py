"""Hostile spec files: whatever the bytes, the CLI answers with exit 0, or exit 2 and one line.

Random documents, duplicate keys, alias bombs, huge numbers, control characters, non-UTF-8 and
random bytes are written to files and given to the real command line (`launch --dry-run`), in
process; the worst of them also to a fresh interpreter under memory and CPU limits. Every answer
is quick, names the file, never shows a traceback, and writes nothing outside the results folder.
"""

from __future__ import annotations

import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from strategies import VALID_TRAIN_VALUES

from mnistsweep.__main__ import main
from mnistsweep.cli.train import choose_cell
from mnistsweep.errors import MnistsweepError
from mnistsweep.execute import plan as planning
from mnistsweep.sweep.spec import (
    MAX_CELLS,
    TRAIN_SETTINGS,
    SpecError,
    load_spec,
    parse_spec,
)
from mnistsweep.sweep.yaml_loader import MAX_SHOWN

REPO = Path(__file__).resolve().parents[1]
# Time bounds count this process's CPU seconds, not the wall clock: they catch a blow-up (minutes
# of parsing) without failing on a machine that is merely busy.
SECONDS_PER_RUN = 2.0
HOSTILE = settings(
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)

VALID = """\
name: hostile
grid:
  arch: [linear, mlp]
  seed: [0, 1]
train:
  epochs: 1
  dropout: 0.25
executor:
  backend: local
  slurm:
    partition: gpu
    setup: ["module load cuda"]
    additional: {mail-type: END}
ensemble:
  top_k: 2
"""


# --- Running the CLI on a file -----------------------------------------------------------------


def snapshot(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    """Every path under root (but skip) with its size and mode: what a run must leave alone."""
    found: dict[str, tuple[int, int]] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if Path(folder, d) != skip]
        for name in [*dirs, *files]:
            path = Path(folder, name)
            status = path.lstat()
            found[str(path.relative_to(root))] = (status.st_size, status.st_mode)
    return found


@contextmanager
def working_directory(path: Path) -> Iterator[None]:
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def launch_dry_run(
    content: bytes | str, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, str, Path]:
    """Write the spec in a fresh sandbox, run `launch --dry-run` there, check the contract, and
    return (exit code, stderr, spec path). The sandbox holds the spec's folder, the CWD and the
    results folder; only the results folder may change."""
    with tempfile.TemporaryDirectory() as base_name:
        base = Path(base_name)
        (base / "specs").mkdir()
        (base / "cwd").mkdir()
        results = base / "results"
        spec_path = base / "specs" / "spec.yaml"
        if isinstance(content, str):
            content = content.encode("utf-8", "surrogatepass")
        spec_path.write_bytes(content)
        before = snapshot(base, results)
        capsys.readouterr()
        started = time.process_time()
        with working_directory(base / "cwd"):
            code = main(
                [
                    *("launch", str(spec_path), "--dry-run", "--executor", "local"),
                    *("--results-dir", str(results), *extra),
                ]
            )
        elapsed = time.process_time() - started
        captured = capsys.readouterr()
        assert snapshot(base, results) == before, "a dry run wrote outside the results folder"
    assert elapsed < SECONDS_PER_RUN, f"{elapsed:.2f} s"
    assert code in (0, 2), (code, captured.err)
    assert "Traceback" not in captured.err + captured.out
    if code == 2:
        assert_one_line_error(captured.err, str(spec_path))
    return code, captured.err, spec_path


def assert_one_line_error(stderr: str, *fragments: str) -> str:
    lines = stderr.strip("\n").split("\n")
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    assert "\r" not in lines[0] and "\x00" not in lines[0], repr(lines[0])
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


# --- Writing YAML by hand, so that it can be wrong in every way --------------------------------


class Raw(str):
    """Text emitted into the YAML as is: huge numbers, aliases, tags."""


def emit(value: Any) -> str:
    """Flow-style YAML for any value, including what yaml.safe_dump refuses to write."""
    if isinstance(value, Raw):
        return str(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        return repr(value)
    if isinstance(value, str):
        return quoted(value)
    if isinstance(value, list):
        return "[" + ", ".join(emit(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{emit(k)}: {emit(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def quoted(text: str) -> str:
    """A double-quoted YAML string: every character outside printable ASCII as an escape, which
    the parser decodes, so that control characters reach the spec as such."""
    escaped = "".join(
        c
        if " " <= c <= "~" and c not in '"\\'
        else (f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}")
        for c in text
    )
    return f'"{escaped}"'


def emit_pairs(pairs: list[tuple[Any, Any]]) -> str:
    """A flow mapping from pairs: keys may repeat."""
    return "{" + ", ".join(f"{emit(k)}: {emit(v)}" for k, v in pairs) + "}"


CONTROL = ["\n", "\r", "\x00", "\x1b", "\x07", "\x7f", "\x85", "\x9b", "\u2028", "\t"]
huge_numbers = st.builds(
    lambda sign, digits, tail: Raw(sign + "9" * digits + tail),
    st.sampled_from(["", "-", "+"]),
    st.integers(60, 6000),
    st.sampled_from(["", ".5", "e3", "0"]),
)
hostile_text = st.text(
    st.sampled_from(["a", "Z", "0", ".", "-", "_", " ", "é", "/", *CONTROL])
    | st.characters(codec="utf-8"),
    max_size=30,
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.integers(-3, 70_000),
    st.floats(allow_nan=True, allow_infinity=True),
    hostile_text,
    huge_numbers,
    st.sampled_from([*TRAIN_SETTINGS, "linear", "mlp", "standard", "slurm", "local", "gpu"]),
)
KEYS = [
    *TRAIN_SETTINGS,
    *("name", "grid", "train", "executor", "ensemble", "slurm", "backend", "top_k"),
    *("partition", "account", "qos", "constraint", "setup", "additional", "mem_gb"),
    *("cpus_per_task", "gpus_per_node", "timeout_min", "cells_per_job", "local_parallel"),
    *("output", "job-name", "mail-type", "export", "time"),
]
keys = st.sampled_from(KEYS) | hostile_text
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)


# Values each key accepts (mostly): a good share of the random documents is valid.
PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    **VALID_TRAIN_VALUES,
    "name": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True),
    "backend": st.sampled_from(["auto", "local", "slurm"]),
    "cells_per_job": st.integers(1, 1024),
    "local_parallel": st.integers(1, 1024),
    "partition": st.from_regex(r"[a-z][a-z0-9,_-]{0,10}", fullmatch=True),
    "qos": st.from_regex(r"[a-z][a-z0-9_-]{0,10}", fullmatch=True),
    "mem_gb": st.floats(0.5, 4096),
    "setup": st.lists(st.from_regex(r"[ -~]{1,30}", fullmatch=True), max_size=3),
    "top_k": st.integers(1, 1000),
}


@st.composite
def documents(draw: st.DrawFn) -> dict[Any, Any]:
    """A spec-shaped document: known sections, each perhaps replaced by anything."""
    document: dict[Any, Any] = yaml.safe_load(VALID)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(
            st.sampled_from(
                [
                    ("name",),
                    ("grid",),
                    ("grid", "seed"),
                    ("grid", draw(st.sampled_from(list(TRAIN_SETTINGS)))),
                    ("train", draw(st.sampled_from(list(TRAIN_SETTINGS)))),
                    ("train",),
                    ("executor", "backend"),
                    ("executor", draw(st.sampled_from(["cells_per_job", "local_parallel"]))),
                    ("executor", "slurm", draw(st.sampled_from(["partition", "qos", "mem_gb"]))),
                    ("executor", "slurm", "setup"),
                    ("executor", "slurm", "additional"),
                    ("executor", "slurm", "additional", draw(keys)),
                    ("ensemble", "top_k"),
                    (draw(keys),),
                ]
            )
        )
        target = document
        for key in path[:-1]:
            if not isinstance(target.get(key), dict):
                target[key] = {}
            target = target[key]
        plausible = PLAUSIBLE.get(path[-1], values)
        if path[0] == "grid" and len(path) == 2:
            plausible = st.lists(plausible, min_size=1, max_size=3)
        target[path[-1]] = draw(values | plausible)
    return document


# --- Property tests through the command line ----------------------------------------------------


@settings(HOSTILE, max_examples=100)
@given(documents())
def test_random_documents_are_accepted_or_refused_in_one_line(capsys, document):
    code, _, _ = launch_dry_run(emit(document), capsys)
    if code == 0:  # then the spec module agrees it is valid, and its cells expand
        spec = parse_spec(yaml.safe_load(emit(document)), Path("again.yaml"))
        assert 1 <= spec.size <= MAX_CELLS


DUPLICATE_AT = {  # where a key is given twice: (text in VALID, the same with {other} and {value})
    "name": ("name: hostile\n", "name: hostile\n{other}name: {value}\n"),
    "train.epochs": ("  epochs: 1\n", "  epochs: 1\n{other}  epochs: {value}\n"),
    "grid.seed": ("  seed: [0, 1]\n", "  seed: [0, 1]\n{other}  seed: {value}\n"),
    "executor.slurm.partition": (
        "    partition: gpu\n",
        "    partition: gpu\n{other}    partition: {value}\n",
    ),
    "executor.slurm.additional.mail-type": (
        "{mail-type: END}",
        "{{mail-type: END, {other}mail-type: {value}}}",
    ),
    "ensemble.top_k": ("  top_k: 2\n", "  top_k: 2\n{other}  top_k: {value}\n"),
}
CONTROL_AT = {  # where a control character reaches a file, job or shell line, and what is said
    "name": ("name: hostile", "name: {}", "name: got"),
    "partition": ("partition: gpu", "partition: {}", "executor.slurm.partition: got"),
    "setup": ('setup: ["module load cuda"]', "setup: [{}]", "executor.slurm.setup[0]: got"),
    "additional": ("{mail-type: END}", "{{mail-type: {}}}", "additional.mail-type: got"),
    "key": ("{mail-type: END}", "{{{}: x}}", "executor.slurm.additional."),
}
long_numbers = st.builds(
    lambda sign, digits, tail: sign + "9" * digits + tail,
    st.sampled_from(["", "-", "+"]),
    st.integers(101, 6000),
    st.sampled_from(["", ".5", ".0e+3"]),
)


@st.composite
def hostile_features(draw: st.DrawFn) -> tuple[str, str | None]:
    """The valid spec with one hostile construct spliced in, and what the error must say
    (None: the construct may be harmless there)."""
    feature = draw(st.sampled_from(["duplicate", "alias", "bomb", "number", "control", "deep"]))
    if feature == "duplicate":
        where = draw(st.sampled_from(list(DUPLICATE_AT)))
        old, new = DUPLICATE_AT[where]
        indent = old[: len(old) - len(old.lstrip())]
        other = ""
        if draw(st.booleans()):  # another key between the two
            pair = f"{emit(draw(keys))}: {emit(draw(values))}"
            other = f"{pair}, " if old.startswith("{") else f"{indent}{pair}\n"
        value = emit(draw(values))
        return VALID.replace(old, new.format(other=other, value=value)), "duplicate key"
    if feature == "alias":
        target = draw(st.sampled_from(["name", "train", "grid", "ensemble", "executor"]))
        anchored = f"spare: &a {emit(draw(values))}\n"
        return anchored + VALID.replace(f"{target}:", f"{target}: *a\nold_{target}:", 1), None
    if feature == "bomb":
        width, depth = draw(st.integers(2, 12)), draw(st.integers(3, 12))
        lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
        lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, depth)]
        top = f"*l{depth - 1}"
        use = draw(
            st.sampled_from(
                [
                    f"name: {top}",
                    f"train: {{epochs: {top}}}",
                    f"grid: {{seed: {top}}}",
                    f"executor: {{slurm: {{setup: {top}}}}}",
                ]
            )
        )
        expanded = sum(width**i for i in range(1, depth))  # what the aliases add
        return "\n".join([*lines, use, ""]), "alias" if expanded > 10_000 else None
    if feature == "number":
        number = draw(long_numbers)
        old, new = draw(
            st.sampled_from(
                [
                    ("epochs: 1", "epochs: {}"),
                    ("seed: [0, 1]", "seed: [0, {}]"),
                    ("top_k: 2", "top_k: {}"),
                    ("{mail-type: END}", "{{mail-type: {}}}"),
                    ("name: hostile", "name: hostile\nx: {}"),
                ]
            )
        )
        return VALID.replace(old, new.format(number)), f"a number of {len(number):,} characters"
    if feature == "control":
        character = draw(st.sampled_from(CONTROL))
        bad = character.join(draw(st.lists(hostile_text, min_size=2, max_size=3)))
        old, new, said = CONTROL_AT[draw(st.sampled_from(list(CONTROL_AT)))]
        if draw(st.booleans()):  # an escape in a quoted string: the character reaches the spec
            return VALID.replace(old, new.format(quoted(bad))), said
        return VALID.replace(old, new.format(bad)), None  # raw in the file
    depth = draw(st.integers(50, 3000))
    return VALID + nested(draw(st.sampled_from(NESTING_STYLES)), depth), (
        "nested deeper than 64" if depth >= 64 else None
    )


NESTING_STYLES = ("flow list", "flow map", "block list", "block map")


def nested(style: str, depth: int) -> str:
    """A document part nested `depth` levels deep in one of YAML's styles."""
    if style == "flow list":
        return "deep: " + "[" * depth + "]" * depth + "\n"
    if style == "flow map":
        return "deep: " + "{a: " * depth + "1" + "}" * depth + "\n"
    if style == "block list":
        return "deep:\n" + "".join(" " * level + "-\n" for level in range(1, depth)) + "\n"
    return "deep:\n" + "".join(" " * level + "a:\n" for level in range(1, depth)) + "\n"


@settings(HOSTILE, max_examples=90)
@given(hostile_features())
# Found by hypothesis: LibYAML's scanner refused a flow list 1,000 deep in its own words first.
@example((VALID + nested("flow list", 1500), "nested deeper than 64"))
@example((VALID + nested("flow map", 1200), "nested deeper than 64"))
@example((VALID + nested("block list", 1100), "nested deeper than 64"))
@example((VALID + nested("block map", 65), "nested deeper than 64"))
@example((VALID + nested("flow list", 63), None))
def test_hostile_yaml_constructs_are_refused_in_one_line(capsys, case):
    text, said = case
    code, stderr, _ = launch_dry_run(text, capsys)
    if said is not None:
        assert code == 2 and said in stderr, (said, stderr)


@pytest.mark.parametrize(
    ("tag", "said"),
    [
        ("!!python/object/apply:os.system ['true']", "could not determine a constructor"),
        ("!!python/name:os.system", "could not determine a constructor"),
        ("!!binary hostile", "malformed YAML"),
        ("!!set {a, b}", "name: got"),
        ("!custom hostile", "could not determine a constructor"),
    ],
)
def test_tags_are_refused(capsys, tag, said):
    code, stderr, _ = launch_dry_run(VALID.replace("name: hostile", f"name: {tag}"), capsys)
    assert code == 2 and said in stderr


@settings(HOSTILE, max_examples=50)
@given(
    st.binary(max_size=400)
    | st.builds(
        lambda cut, junk: VALID.encode()[:cut] + junk + VALID.encode()[cut:],
        st.integers(0, len(VALID)),
        st.binary(min_size=1, max_size=8),
    )
)
def test_random_bytes_and_bytes_spliced_into_a_valid_spec(capsys, content):
    launch_dry_run(content, capsys)


# --- The worst cases, one by one -----------------------------------------------------------------


# Billion laughs, defined inside the value it bombs: nine levels, nine aliases each, 9**9 'lol's
# once expanded. Its repr() alone would be gigabytes.
BOMB = (
    "[&a [lol, lol, lol, lol, lol, lol, lol, lol, lol], "
    + ", ".join(f"&{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8))
    + "]"
)


def limited(memory_bytes: int, cpu_seconds: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))

    return apply


def cli_limited(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter with 1 GiB of address space and 10 s of CPU."""
    return subprocess.run(
        [sys.executable, "-m", "mnistsweep", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        preexec_fn=limited(2**30, 10),
        timeout=60,
    )


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def test_an_alias_bomb_is_refused_fast_with_bounded_memory(tmp_path):
    spec_path = tmp_path / "bomb.yaml"
    spec_path.write_text(f"name: hostile\ntrain: {{epochs: {BOMB}}}\n")
    started = children_cpu_seconds()
    result = cli_limited(tmp_path, "launch", str(spec_path), "--dry-run", "--executor", "local")
    elapsed = children_cpu_seconds() - started
    assert result.returncode == 2, result.stderr[-2000:]
    line = assert_one_line_error(result.stderr, str(spec_path), "alias")
    assert len(line) < 300
    assert elapsed < 10
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    "use",
    [
        "name: {}",
        "name: t\ntrain: {{epochs: {}}}",
        "name: t\ngrid: {{seed: {}}}",
        "name: t\nexecutor: {{slurm: {{setup: {}}}}}",
        "name: t\nexecutor: {{slurm: {{additional: {{mail-type: {}}}}}}}",
    ],
)
def test_an_alias_bomb_anywhere_is_refused_in_well_under_a_second(tmp_path, capsys, use):
    text = use.format(BOMB) + "\n"
    started = time.process_time()
    code, stderr, _ = launch_dry_run(text, capsys)
    assert code == 2 and "alias" in stderr
    assert time.process_time() - started < 0.5


def test_small_aliases_are_still_yaml(tmp_path):
    path = tmp_path / "alias.yaml"
    path.write_text(
        "name: a\nseeds: &s [0, 1]\n".replace("seeds: &s [0, 1]\n", "")
        + ("grid:\n  - {arch: [linear], seed: &s [0, 1]}\n  - {arch: [mlp], seed: *s}\n")
    )
    assert load_spec(path).size == 4


@pytest.mark.parametrize("digits", [101, 4301, 20_000])
def test_an_absurdly_long_number_is_one_line(tmp_path, capsys, digits):
    code, stderr, _ = launch_dry_run(VALID.replace("epochs: 1", f"epochs: {'7' * digits}"), capsys)
    assert code == 2
    assert f"a number of {digits:,} characters" in stderr
    assert len(stderr) < 300


def test_a_4300_digit_integer_in_a_fresh_interpreter(tmp_path):
    spec_path = tmp_path / "digits.yaml"
    spec_path.write_text(VALID.replace("seed: [0, 1]", f"seed: [0, {'1' * 4301}]"))
    result = cli_limited(tmp_path, "launch", str(spec_path), "--dry-run", "--executor", "local")
    assert result.returncode == 2, result.stderr[-2000:]
    assert_one_line_error(result.stderr, str(spec_path), "line 4", "4,301 characters")


def test_a_120000_value_axis_is_refused_within_two_seconds(tmp_path, capsys):
    text = "name: big\ngrid:\n  seed: [" + ", ".join(map(str, range(120_000))) + "]\n"
    code, stderr, _ = launch_dry_run(text, capsys)
    assert code == 2
    assert "above the limit of 10,000" in stderr and "--allow-large" in stderr


def test_a_huge_axis_given_in_python_is_refused_before_its_values_are_checked():
    started = time.process_time()
    with pytest.raises(SpecError, match="expands to 120,000 cells"):
        parse_spec({"name": "big", "grid": {"seed": ["not a seed"] * 120_000}}, Path("b.yaml"))
    assert time.process_time() - started < 0.5


def test_repeated_values_in_a_long_axis_are_found_in_linear_time():
    """Quadratic before: 120,000 values took minutes."""
    seeds = [*range(60_000), *range(60_000)]
    started = time.process_time()
    with pytest.raises(SpecError, match=r"grid\.seed: repeats 0, 1, "):
        parse_spec({"name": "d", "grid": {"seed": seeds}}, Path("d.yaml"), allow_large=True)
    assert time.process_time() - started < 2


def test_non_utf8_text_in_a_fresh_interpreter(tmp_path):
    spec_path = tmp_path / "latin1.yaml"
    spec_path.write_bytes("name: café\n".encode("latin-1"))
    result = cli_limited(tmp_path, "launch", str(spec_path), "--dry-run", "--executor", "local")
    assert result.returncode == 2, result.stderr[-2000:]
    assert_one_line_error(result.stderr, str(spec_path), "not UTF-8", "0xe9", "line 1")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "empty"),
        (b"# only a comment\n", "empty"),
        (b"name: a\x00b\n", "NUL"),
        (b"\x7fELF\x02\x01\x01\x00\x00", "control character"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "UTF-8"),
        (b"\xff\xfe" + "name: t\n".encode("utf-16-le"), "UTF-8"),
        (b"name: [1, 2\n", "malformed YAML at line"),
        (b"name: t\n---\nname: u\n", "single document"),
        (b"name: 2024-13-45\n", "month must be in 1..12"),
    ],
)
def test_files_that_are_not_a_spec_are_one_line(capsys, content, fragment):
    code, stderr, _ = launch_dry_run(content, capsys)
    assert code == 2 and fragment in stderr


def test_a_directory_or_a_missing_file_is_one_line(tmp_path, capsys):
    for path in (tmp_path, tmp_path / "missing.yaml"):
        assert main(["launch", str(path), "--dry-run", "--executor", "local"]) == 2
        assert_one_line_error(capsys.readouterr().err, str(path), "cannot read spec")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_is_one_line(tmp_path, capsys):
    path = tmp_path / "secret.yaml"
    path.write_text(VALID)
    path.chmod(0)
    assert main(["launch", str(path), "--dry-run", "--executor", "local"]) == 2
    assert_one_line_error(capsys.readouterr().err, str(path), "cannot read spec")


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("name: a\nname: b\n", ["name: duplicate key at line 2 (first at line 1)"]),
        ("name: a\ntrain:\n  epochs: 1\n  seed: 2\n  epochs: 3\n", ["train.epochs", "5", "3"]),
        ("name: a\ngrid: {seed: [1], arch: [mlp], seed: [2]}\n", ["grid.seed: duplicate key"]),
        ("name: a\ngrid:\n- {seed: [1]}\n- arch: [mlp]\n  arch: [linear]\n", ["grid[1].arch"]),
        (
            "name: a\nexecutor:\n  slurm:\n    partition: a\n    partition: b\n",
            ["executor.slurm.partition", "line 5", "line 4"],
        ),
        ("name: a\nexecutor: {slurm: {additional: {x: 1, x: 2}}}\n", ["additional.x"]),
    ],
)
def test_a_duplicate_key_names_the_key_and_both_lines(capsys, text, fragments):
    code, stderr, _ = launch_dry_run(text, capsys)
    assert code == 2
    assert "duplicate key" in stderr
    for fragment in fragments:
        assert fragment in stderr


def test_merge_keys_may_still_override(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text("name: m\nbase: &b {epochs: 1, seed: 2}\n".replace("base: &b", "train: &b"))
    path.write_text(
        "name: m\ngrid:\n  - &g {arch: [linear], seed: [0, 1]}\n  - {<<: *g, arch: [mlp]}\n"
    )
    assert {c.config["arch"] for c in load_spec(path).cells()} == {"linear", "mlp"}


SLURM_STRINGS = {
    "name": ("name: hostile", "name: {}", "name: got"),
    "partition": ("partition: gpu", "partition: {}", "executor.slurm.partition: got"),
    "account": ("partition: gpu", "account: {}", "executor.slurm.account: got"),
    "qos": ("partition: gpu", "qos: {}", "executor.slurm.qos: got"),
    "constraint": ("partition: gpu", "constraint: {}", "executor.slurm.constraint: got"),
    "setup": ('setup: ["module load cuda"]', "setup: [ok, {}]", "executor.slurm.setup[1]: got"),
    "additional value": ("{mail-type: END}", "{{mail-type: {}}}", "additional.mail-type: got"),
    "additional key": ("{mail-type: END}", "{{{}: x}}", "executor.slurm.additional."),
}


@pytest.mark.parametrize("character", CONTROL, ids=repr)
@pytest.mark.parametrize("where", list(SLURM_STRINGS))
def test_control_characters_are_refused_where_a_string_reaches_a_file_job_or_shell_line(
    capsys, where, character
):
    old, new, fragment = SLURM_STRINGS[where]
    value = quoted(f"gpu{character}#SBATCH --wrap=evil")  # an escape: the parser decodes it
    code, stderr, _ = launch_dry_run(VALID.replace(old, new.format(value)), capsys)
    assert code == 2
    assert fragment in stderr


@pytest.mark.parametrize(
    ("option", "fragment"),
    [
        ("output", "sets --output itself"),
        ("error", "sets --error itself"),
        ("chdir", "sets --chdir itself"),
        ("array", "sets --array itself"),
        ("wrap", "sets --wrap itself"),
        ("signal", "sets --signal itself"),
        ("job-name", "sets --job-name itself"),
        ("job_name", "sets --job-name itself"),
        ("open-mode", "sets --open-mode itself"),
        ("open_mode", "sets --open-mode itself"),
        ("parsable", "sets --parsable itself"),
        ("wait", "sets --wait itself"),
        ("partition", "use executor.slurm.partition"),
        ("account", "use executor.slurm.account"),
        ("qos", "use executor.slurm.qos"),
        ("constraint", "use executor.slurm.constraint"),
        ("time", "use executor.slurm.timeout_min"),
        ("mem", "use executor.slurm.mem_gb"),
        ("cpus-per-task", "use executor.slurm.cpus_per_task"),
        ("cpus_per_task", "use executor.slurm.cpus_per_task"),
        ("gpus-per-node", "use executor.slurm.gpus_per_node"),
        ("-x", "not an sbatch option name"),
        ("a b", "not an sbatch option name"),
        ("1st", "not an sbatch option name"),
    ],
)
def test_sbatch_options_mnistsweep_owns_are_refused_by_name(capsys, option, fragment):
    text = VALID.replace("{mail-type: END}", "{" + quoted(option) + ": x}")
    code, stderr, _ = launch_dry_run(text, capsys)
    assert code == 2
    assert "executor.slurm.additional." in stderr and fragment in stderr


def test_other_sbatch_options_pass_through(tmp_path):
    path = tmp_path / "extra.yaml"
    additional = {"export": "ALL", "mail-type": "END", "gres": "gpu:a100:1", "exclusive": 1}
    path.write_text(VALID.replace("{mail-type: END}", emit(additional)))
    assert dict(load_spec(path).executor.slurm.additional) == additional


def test_values_shown_in_errors_are_capped(capsys):
    long_text = "x" * 10_000
    for old, new in [
        ("epochs: 1", f"epochs: {long_text}"),
        ("partition: gpu", f"partition: [{', '.join([long_text] * 5)}]"),
        ("name: hostile", f"name: {quoted(long_text + chr(10))}"),
    ]:
        code, stderr, _ = launch_dry_run(VALID.replace(old, new), capsys)
        assert code == 2
        assert "x" * (MAX_SHOWN + 1) not in stderr
        assert len(stderr) < 400


def test_the_cells_of_a_spec_keep_their_ids():
    """Result folders are named by cell id: the same config must keep the same id."""
    spec = parse_spec(
        {"name": "ids", "grid": {"arch": ["mlp"], "learning_rate": [1, 0.5], "augment": [True]}},
        Path("ids.yaml"),
    )
    assert [cell.id for cell in spec.cells()] == ["d3c4b85ca6ae", "a2375f54e0c7"]
    assert spec.results_fingerprint() == "ecb723f8a3fdad3f"


# --- --only and --set values ----------------------------------------------------------------------


@pytest.fixture
def seeds_spec(tmp_path: Path) -> Path:
    path = tmp_path / "seeds.yaml"
    path.write_text(
        "name: seeds\ngrid: {seed: [0, 1], learning_rate: [0.5, 1], augment: [false, true]}\n"
    )
    return path


@pytest.mark.parametrize(
    "selection",
    ["seed=true", "seed=1.0", "seed=[", "seed='1", "seed=*a", "seed=" + "9" * 5000, "seed=1\n2"],
    ids=repr,
)
def test_only_refuses_values_the_axis_does_not_hold_by_type(seeds_spec, capsys, selection):
    with pytest.raises(MnistsweepError, match=r"--only seed=.*allowed: 0, 1$"):
        planning.parse_only(load_spec(seeds_spec), [selection])
    args = ["launch", str(seeds_spec), "--dry-run", "--executor", "local", "--only", selection]
    assert main([*args, "--results-dir", str(seeds_spec.parent / "out")]) == 2
    assert_one_line_error(capsys.readouterr().err, "--only seed=", "allowed: 0, 1")


def test_only_selects_values_as_the_axis_holds_them(seeds_spec):
    spec = load_spec(seeds_spec)
    chosen = planning.parse_only(spec, ["seed=1", "learning_rate=1,0.5", "augment=true"])
    assert chosen == {"seed": [1], "learning_rate": [1.0, 0.5], "augment": ["standard"]}
    assert type(chosen["seed"][0]) is int and type(chosen["learning_rate"][0]) is float


def test_train_cell_without_spec_is_an_error():
    with pytest.raises(MnistsweepError, match="--cell needs --spec"):
        choose_cell(None, "arch=mlp", [])


@pytest.mark.parametrize(
    ("setting", "fragment"),
    [
        ("epochs=true", "train.epochs: got True"),
        ("epochs=[", "--set epochs: malformed YAML"),
        ("epochs=" + "9" * 5000, "a number of 5,000 characters"),
        ("epochs=&a [1, *a]", "refers to itself"),
        ("epochs=1\x00", "NUL"),
        ("epoch=3", "did you mean 'epochs'"),
        ("arch", "expected KEY=VALUE"),
    ],
    ids=repr,
)
def test_set_values_are_read_with_the_safe_loader(capsys, setting, fragment):
    with pytest.raises(MnistsweepError) as raised:
        choose_cell(None, None, ["arch=linear", setting] if "arch=" not in setting else [setting])
    assert fragment in str(raised.value) and "\n" not in str(raised.value)
    assert main(["train", "--set", setting]) == 2
    assert_one_line_error(capsys.readouterr().err, fragment.split(" ")[0])


def test_set_reads_yaml_values_like_a_spec():
    cell = choose_cell(None, None, ["arch=mlp", "learning_rate=1", "augment=true", "dropout=null"])
    assert cell.config["learning_rate"] == 1.0 and cell.config["augment"] == "standard"
    assert cell.name == "arch=mlp,learning_rate=1.0,augment=standard,dropout=None"
