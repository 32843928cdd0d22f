"""Sampled axes: deterministic draws inside the bounds, shaped as asked, exactly recorded, and
every malformed distribution refused in one line through the real command line."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy import stats
from test_hostile_specs import HOSTILE, emit, launch_dry_run

from mnistsweep.__main__ import main
from mnistsweep.sweep import guard, identity
from mnistsweep.sweep.layout import SweepLayout
from mnistsweep.sweep.sampling import FORMS
from mnistsweep.sweep.spec import TRAIN_SETTINGS, SpecError, load_spec, parse_spec

SEARCH = """\
name: search
grid:
  - arch: [mlp]
    learning_rate: {loguniform: [1.0e-4, 1.0e-1]}
    dropout: {uniform: [0.0, 0.5]}
    samples: 8
  - arch: [linear]
    batch_size: {int: [16, 64]}
    normalization: {choice: [raw, minmax]}
    seed: [0, 1, 2]
    samples: 3
search:
  seed: 0
train: {epochs: 1}
"""


def spec_of(text_or_document: str | dict[str, Any]):
    document = (
        yaml.safe_load(text_or_document) if isinstance(text_or_document, str) else text_or_document
    )
    return parse_spec(document, Path("search.yaml"))


def one_block(samples: int, sweep_seed: int = 0, **axes: Any) -> dict[str, Any]:
    return {"name": "s", "grid": {**axes, "samples": samples}, "search": {"seed": sweep_seed}}


# --- What the draws are -------------------------------------------------------------------------


def test_samples_times_grid_axes_and_every_sample_with_every_seed():
    cells = spec_of(SEARCH).cells()
    mlp = [cell.config for cell in cells if cell.config["arch"] == "mlp"]
    linear = [cell.config for cell in cells if cell.config["arch"] == "linear"]
    assert len(mlp) == 8 and len(linear) == 3 * 3
    assert len({(c["learning_rate"], c["dropout"]) for c in mlp}) == 8
    drawn = Counter((c["batch_size"], c["normalization"]) for c in linear)
    assert len(drawn) == 3 and set(drawn.values()) == {3}  # each sample with seeds 0, 1, 2
    for sample in drawn:
        seeds = {c["seed"] for c in linear if (c["batch_size"], c["normalization"]) == sample}
        assert seeds == {0, 1, 2}


def test_the_same_spec_gives_the_same_cells_in_another_process(tmp_path):
    """Same spec, same cells: ids computed in a fresh interpreter match (hash seeds differ)."""
    path = tmp_path / "search.yaml"
    path.write_text(SEARCH)
    script = (
        "import sys; from mnistsweep.sweep.spec import load_spec; "
        "print(' '.join(c.id for c in load_spec(sys.argv[1]).cells()))"
    )
    ids = [
        subprocess.run(
            [sys.executable, "-c", script, str(path)],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": str(hash_seed), "PATH": ""},
        ).stdout.split()
        for hash_seed in (1, 2)
    ]
    assert ids[0] == ids[1] == [cell.id for cell in spec_of(SEARCH).cells()]


def test_another_sweep_seed_draws_other_values_and_a_label_changes_nothing():
    base = spec_of(one_block(4, learning_rate={"loguniform": [1e-4, 1e-1]}))
    other = spec_of(one_block(4, sweep_seed=1, learning_rate={"loguniform": [1e-4, 1e-1]}))
    document = one_block(4, learning_rate={"loguniform": [1e-4, 1e-1]})
    document["grid"]["label"] = "a study"
    labelled = spec_of(document)
    assert {c.id for c in base.cells()} != {c.id for c in other.cells()}
    assert [c.id for c in base.cells()] == [c.id for c in labelled.cells()]
    assert base.results_fingerprint() != other.results_fingerprint()


def test_adding_a_block_leaves_the_draws_of_the_others_alone():
    first = {"arch": ["mlp"], "dropout": {"uniform": [0.0, 0.5]}, "samples": 5}
    alone = spec_of({"name": "s", "grid": [first]})
    second = {"arch": ["linear"], "l2": {"loguniform": [1e-6, 1e-2]}, "samples": 2}
    both = spec_of({"name": "s", "grid": [second, first]})
    assert {c.id for c in alone.cells()} <= {c.id for c in both.cells()}


def test_drawn_values_are_recorded_exactly_and_named():
    for cell in spec_of(SEARCH).cells():
        config = dict(cell.config)
        assert json.loads(json.dumps(config)) == config  # what is recorded is what trains
        for axis in ("learning_rate", "dropout", "batch_size"):
            if cell.config["arch"] == ("mlp" if axis != "batch_size" else "linear"):
                assert f"{axis}={cell.config[axis]}," in cell.name + ","


def test_the_dry_run_lists_the_drawn_values(tmp_path, capsys):
    path = tmp_path / "search.yaml"
    path.write_text(SEARCH)
    results = ["--results-dir", str(tmp_path / "results"), "--executor", "local"]
    assert main(["launch", str(path), "--dry-run", *results]) == 0
    listed = capsys.readouterr().out
    for cell in spec_of(SEARCH).cells():
        assert f"{cell.id}  {cell.name}" in listed
    assert "learning_rate=0.0" in listed and "17 cells" in listed


bounds = st.floats(1e-6, 0.9, allow_nan=False).flatmap(
    lambda low: st.tuples(st.just(low), st.floats(low, 0.9))
)


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(["uniform", "loguniform"]),
    interval=bounds,
    samples=st.integers(1, 30),
    seed=st.integers(0, 2**31 - 1),
)
@example(kind="uniform", interval=(0.5, 0.5), samples=1, seed=0)
def test_draws_stay_in_their_bounds_and_are_distinct(kind, interval, samples, seed):
    low, high = interval
    document = one_block(samples, seed, dropout={kind: [low, high]}, seed=[0, 1])
    try:
        spec = spec_of(document)
    except SpecError as error:  # a tiny interval cannot hold `samples` distinct 6-digit numbers
        assert "distinct configurations" in str(error)
        return
    values = [cell.config["dropout"] for cell in spec.cells()]
    assert len(values) == 2 * samples and len(set(values)) == samples
    assert all(low <= value <= high and isinstance(value, float) for value in values)
    assert [c.id for c in spec_of(document).cells()] == [c.id for c in spec.cells()]


@settings(max_examples=40, deadline=None)
@given(low=st.integers(0, 1000), width=st.integers(0, 40), data=st.data())
def test_int_draws_are_integers_inside_the_inclusive_bounds(low, width, data):
    samples = data.draw(st.integers(1, width + 1))
    spec = spec_of(one_block(samples, seed={"int": [low, low + width]}))
    values = [cell.config["seed"] for cell in spec.cells()]
    assert len(set(values)) == samples
    assert all(isinstance(v, int) and low <= v <= low + width for v in values)


def test_the_distributions_have_their_shape():
    """2,000 draws each: uniform, log-uniform (uniform in log), int (each value as often)."""
    n = 2000
    uniform = spec_of(one_block(n, dropout={"uniform": [0.1, 0.7]})).cells()
    values = [cell.config["dropout"] for cell in uniform]
    assert stats.kstest(values, stats.uniform(0.1, 0.6).cdf).pvalue > 1e-3
    logs = spec_of(one_block(n, learning_rate={"loguniform": [1e-4, 1e-1]})).cells()
    exponents = [math.log10(cell.config["learning_rate"]) for cell in logs]
    assert stats.kstest(exponents, stats.uniform(-4, 3).cdf).pvalue > 1e-3
    ints = spec_of(one_block(10, seed={"int": [0, 9]})).cells()
    assert sorted(cell.config["seed"] for cell in ints) == list(range(10))
    grid = {"seed": {"int": [0, 4]}, "dropout": {"uniform": [0.0, 0.5]}}
    pairs = spec_of(one_block(n, **grid)).cells()
    counts = Counter(cell.config["seed"] for cell in pairs)
    assert stats.chisquare(list(counts.values())).pvalue > 1e-3 and len(counts) == 5


def test_a_choice_gives_canonical_values_of_its_options():
    spec = spec_of(one_block(2, augment={"choice": [True, "light"]}, seed=[0]))
    assert {cell.config["augment"] for cell in spec.cells()} == {"standard", "light"}


# --- Malformed distributions, through the command line ----------------------------------------

finite = st.floats(-1e3, 1e3, allow_nan=False) | st.integers(-1000, 1000)
malformed = st.one_of(
    # lo > hi
    st.tuples(st.sampled_from(["uniform", "loguniform", "int"]), st.integers(1, 100)).map(
        lambda kh: ("l2", {kh[0]: [kh[1] + 1, kh[1]]}, "lo > hi")
    ),
    # loguniform with lo <= 0
    st.tuples(st.floats(-10, 0), st.floats(0.001, 1)).map(
        lambda lh: ("l2", {"loguniform": [lh[0], lh[1]]}, "0 < lo")
    ),
    # int with a non-integer
    st.floats(0.01, 5)
    .filter(lambda x: not x.is_integer())
    .map(lambda x: ("seed", {"int": [0, x + 5]}, "integers")),
    # NaN or infinite bounds
    st.sampled_from([math.nan, math.inf, -math.inf]).map(
        lambda bad: ("l2", {"uniform": [0.0, bad]}, "finite")
    ),
    # an unknown distribution name
    st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12)
    .filter(lambda name: name not in ("uniform", "loguniform", "int", "choice"))
    .map(lambda name: ("dropout", {name: [0, 1]}, "loguniform: [lo, hi]")),
    # a distribution on a key that is no train setting
    st.sampled_from(["label", "optimizer", "epoch", "lr", "samples"]).map(
        lambda key: (key, {"uniform": [0.0, 1.0]}, "no train setting")
    ),
    # bounds a train setting does not take
    st.floats(0.91, 5).map(lambda hi: ("dropout", {"uniform": [0.0, hi]}, "dropout takes")),
    # not [lo, hi]
    st.lists(finite, max_size=5)
    .filter(lambda bounds: len(bounds) != 2)
    .map(lambda bounds: ("l2", {"uniform": bounds}, "[lo, hi]")),
)
bad_samples = st.one_of(st.integers(-5, 0), st.floats(0.5, 9.5), st.booleans()).map(
    lambda n: ("samples", n, "samples: got")
)
absurd_samples = st.integers(10_001, 10**9).map(lambda n: ("samples", n, "above the limit"))


@settings(HOSTILE, max_examples=80)
@given(case=malformed | bad_samples | absurd_samples, block=st.integers(0, 1))
def test_malformed_distributions_are_one_line_naming_file_key_and_forms(capsys, case, block):
    key, value, said = case
    grid: list[dict[str, Any]] = [{"arch": ["mlp"], "seed": [0]}]
    grid.append({"arch": ["linear"], "dropout": {"uniform": [0.0, 0.5]}, "samples": 2})
    if key == "samples":
        grid[block] = {"arch": ["mlp"], "dropout": {"uniform": [0.0, 0.5]}, "samples": value}
    else:
        grid[block] = {**grid[block], key: value, "samples": 3}
    code, err, _ = launch_dry_run(emit({"name": "bad", "grid": grid}), capsys)
    assert code == 2
    where = "grid: expands to" if said == "above the limit" else f"grid[{block}].{key}"
    assert where in err and said in err, err


def test_an_unknown_distribution_lists_the_allowed_forms(capsys):
    code, err, _ = launch_dry_run("name: x\ngrid:\n  l2: {normal: [0, 1]}\n  samples: 2\n", capsys)
    assert code == 2 and "grid.l2: got a mapping of 'normal'" in err and FORMS in err


@pytest.mark.parametrize(
    ("grid", "said"),
    [
        ("{seed: {int: [0, 3]}, samples: 5}", "grid.samples: 5 distinct configurations"),
        ("{l2: {choice: [0.1, 0.1]}, samples: 1}", "grid.l2.choice: repeats a value"),
        ("{l2: [0.1], samples: 2}", "grid.samples: no axis of this block is a distribution"),
        ("{l2: {uniform: [0, 1]}}", "grid.samples: missing"),
        ("{seed: {int: [0, 10]}, samples: 3, arch: [mlp]}\ntrain: {seed: 1}", "also fixed"),
        ("{seed: {int: [0, 99999]}, samples: 10000, arch: [mlp, linear]}", "above the limit"),
        ("{seed: {int: [0, 9]}, samples: 2}\nsearch: {seed: -1}", "search.seed: got -1"),
        ("{seed: {int: [0, 9]}, samples: 2}\nsearch: {early_stopping: {reduction: 1}}", "in [2,"),
    ],
)
def test_samples_the_space_cannot_hold_and_other_conflicts(capsys, grid, said):
    code, err, _ = launch_dry_run(f"name: x\ngrid: {grid}\n", capsys)
    assert code == 2 and said in err, err


def test_a_distribution_on_each_train_setting_is_checked_against_it():
    """Every train key may be sampled; a value outside what it takes is refused by name."""
    for key, setting in TRAIN_SETTINGS.items():
        with pytest.raises(SpecError, match=rf"grid\.{key}\.choice: can give"):
            spec_of(one_block(1, **{key: {"choice": ["not-a-value-of-any-key"]}}))
        assert setting.doc


def test_a_sampled_sweep_folder_is_read_back_from_its_record_alone(tmp_path, capsys):
    """sweep.json records each draw as a block of its own: status, aggregate and report rebuild
    exactly the spec's cells and fingerprint from it."""
    path = tmp_path / "search.yaml"
    path.write_text(SEARCH)
    spec = load_spec(path)
    layout = SweepLayout(tmp_path / "results" / "search")
    guard.record_spec(layout, spec)
    record = guard.read_record(layout.root)
    recorded = identity.SweepIdentity.of(record).cells
    assert set(recorded) == {cell.dirname for cell in spec.cells()}
    assert record.fingerprint == spec.results_fingerprint()
    capsys.readouterr()
    assert main(["status", str(layout.root)]) in (0, 1)
    out, err = capsys.readouterr()
    assert "17 cells" in out and "error" not in err, err


def test_the_shipped_search_spec_samples_27_cells_and_stops_early():
    spec = load_spec(Path(__file__).resolve().parents[1] / "sweeps" / "search.yaml")
    cells = spec.cells()
    assert len(cells) == 27 and spec.early_stopping is not None
    assert spec.early_stopping.reduction == 3 and {c.config["epochs"] for c in cells} == {9}
    rates = [cell.config["learning_rate"] for cell in cells]
    assert min(rates) >= 1e-4 and max(rates) <= 1e-1 and len(set(rates)) == 27
