"""Values that used to break late (a traceback, a literal `./~` folder) are refused early."""

from __future__ import annotations

from pathlib import Path

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
