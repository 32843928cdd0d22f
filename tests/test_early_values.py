"""Values that used to break late (a traceback, a literal `./~` folder) are refused early."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnistsweep.__main__ import main
from mnistsweep.cli.common import default_results_dir

SPEC = Path(__file__).resolve().parent.parent / "sweeps" / "quick.yaml"


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=st.integers(1025, 10**9))
def test_concurrent_cells_above_the_schemas_bound_is_one_error_line(capsys, value):
    args = ["launch", str(SPEC), "--dry-run", "--executor", "local"]
    assert main([*args, "--concurrent-cells", str(value)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --concurrent-cells: "), lines
    assert "[1, 1024]" in lines[0]


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=12))
def test_results_env_expands_home_and_empty_counts_as_unset(monkeypatch, name):
    monkeypatch.setenv("MNISTSWEEP_RESULTS", f"~/{name}")
    assert default_results_dir() == Path.home() / name
    for empty in ("", "  "):
        monkeypatch.setenv("MNISTSWEEP_RESULTS", empty)
        assert default_results_dir() == Path("results")


@settings(max_examples=10, deadline=None)
@given(user=st.text("abcdefghijklmnopqrstuvwxyz", min_size=8, max_size=16))
def test_a_home_of_no_user_is_one_error_line(user):
    import pwd

    from mnistsweep.__main__ import main as run_main

    try:
        pwd.getpwnam(f"zz{user}")
        return  # a real user after all: nothing to refuse
    except KeyError:
        pass
    path = f"~zz{user}/x"
    for args, env in (
        (["data", "prepare", "--data-dir", path], {}),
        (["data", "check"], {"MNISTSWEEP_DATA": path}),
        (["launch", str(SPEC), "--dry-run", "--executor", "local"], {"MNISTSWEEP_RESULTS": path}),
    ):
        with pytest.MonkeyPatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value)
            assert run_main(args) == 2
