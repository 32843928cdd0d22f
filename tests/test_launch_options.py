"""launch's options reach the spec through the spec's own schema: one bound per option, and a
value outside it is one `error:` line with exit code 2, never a usage dump or a traceback."""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mnistsweep.__main__ import main

SPEC = Path(__file__).resolve().parent.parent / "sweeps" / "quick.yaml"
IN_RANGE = re.compile(r"\s*[+-]?0*([1-9][0-9]{0,2}|10[01][0-9]|102[0-4])\s*")

out_of_range = st.one_of(
    st.integers(max_value=0),
    st.integers(min_value=1025),
).map(str)
not_an_integer = st.text(min_size=1, max_size=20).filter(lambda text: not IN_RANGE.fullmatch(text))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=st.one_of(out_of_range, not_an_integer))
@example(value="9" * 5000)  # above Python's limit for int("...")
def test_concurrent_cells_outside_the_schema_is_one_error_line(capsys, tmp_path, value):
    args = ["launch", str(SPEC), "--dry-run", "--executor", "local"]
    results = ["--results-dir", str(tmp_path / "results")]
    assert main([*args, *results, f"--concurrent-cells={value}"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --concurrent-cells: got "), lines
    assert "an integer in [1, 1024]" in lines[0]
    assert not (tmp_path / "results").exists()


@settings(max_examples=10, deadline=None)
@given(value=st.integers(1, 1024), padding=st.sampled_from(["", " ", "+", "0"]))
def test_concurrent_cells_within_the_schema_reaches_the_spec(value, padding):
    from mnistsweep.cli import build_parser
    from mnistsweep.cli.launch import make_request

    argv = ["launch", str(SPEC), "--executor", "local", f"--concurrent-cells={padding}{value}"]
    request = make_request(build_parser().parse_args(argv))
    assert request.spec.executor.concurrent_cells == value
    assert request.spec.executor.backend == "local"
