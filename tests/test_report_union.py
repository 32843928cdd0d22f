"""The report on a union grid (full.yaml's shape): an axis's effect only from matched pairs, a
report organised by block whose names and tables fit a 1280-px window in headless Chromium.

Results are written through `records` and the layout, as a launch would leave them; no training.
"""

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_report import chromium, write_history

from mnistsweep import fsio
from mnistsweep.analysis import effects
from mnistsweep.report.build import write_report
from mnistsweep.sweep import guard, records
from mnistsweep.sweep.layout import SweepLayout
from mnistsweep.sweep.spec import load_spec, parse_spec
from mnistsweep.train import data

FULL_SPEC = Path(__file__).resolve().parent.parent / "sweeps" / "full.yaml"
ARCH_SKILL = {"linear": 0.92, "mlp": 0.97, "baseline_mlp": 0.98, "simple_cnn": 0.989}
DROPOUT_GAIN = 0.003  # the vanilla CNN's within-block dropout effect: +0.3 points


def quality(config: dict) -> float:
    """Accuracy driven by the net: batch 200 and dropout 0.25 live in blocks of better nets."""
    base = ARCH_SKILL.get(config["arch"], 0.99)
    if config["arch"] == "linear" and config["normalization"] == "raw":
        base -= 0.05
    gain = DROPOUT_GAIN if config["dropout"] == 0.25 else 0.0
    return min(base + gain + 0.0004 * config["seed"], 0.999)


def write_cell(sweep_dir: Path, cell, mnist: data.Mnist | None, generator) -> None:
    run = SweepLayout(sweep_dir).run(cell)
    accuracy = quality(dict(cell.config))
    records.write(
        run.result,
        records.RunResult(
            status="completed",
            cell_id=cell.id,
            cell_name=cell.name,
            axes=list(cell.axes),
            config=dict(cell.config),
            metrics=records.RunMetrics(
                test_accuracy=accuracy,
                best_val_accuracy=accuracy,
                best_val_loss=0.1,
                test_loss=0.1,
                best_epoch=0,
                epochs_run=1,
            ),
            timing=records.RunTiming(total_seconds=10.0),
        ),
    )
    write_history(run, accuracy, epochs=min(int(cell.config["epochs"]), 4))
    if mnist is None:
        return
    for path, labels in ((run.val_probs, mnist.y_train[-6000:]), (run.test_probs, mnist.y_test)):
        right = generator.random(len(labels)) < accuracy
        predicted = np.where(right, labels, (labels + 1) % 10)
        values = np.full((len(labels), 10), 0.01, dtype=np.float32)
        values[np.arange(len(labels)), predicted] = 0.91
        fsio.write_with(path, lambda target, values=values: np.save(target, values))


def union_sweep(sweep_dir: Path, mnist: data.Mnist | None, labels: bool = False) -> Path:
    document = load_spec(FULL_SPEC).document
    grid = [
        {"label": f"study {i + 1}: {'-'.join(map(str, block['arch']))}", **block}
        if labels
        else block
        for i, block in enumerate(document["grid"])
    ]
    spec = parse_spec({**document, "name": sweep_dir.name, "grid": grid}, FULL_SPEC)
    guard.record_spec(SweepLayout(sweep_dir), spec)
    generator = np.random.default_rng(0)
    for cell in spec.cells():
        write_cell(sweep_dir, cell, mnist, generator)
    return sweep_dir


@pytest.fixture(scope="module")
def reported(tmp_path_factory, mnist_dir) -> Path:
    sweep_dir = union_sweep(
        tmp_path_factory.mktemp("union") / "union", data.load(mnist_dir), labels=True
    )
    write_report(sweep_dir, data_dir=mnist_dir)
    return sweep_dir


def test_a_confounded_axis_is_reported_only_from_matched_pairs(reported):
    found = pd.read_csv(reported / "axis_effects.csv")
    assert list(found.columns) == list(effects.COLUMNS)
    by_axis = found.set_index("axis")
    # batch 200 occurs only in the block of better nets: averaged, it would "gain" points
    assert by_axis.loc["batch_size", "pairs"] == 0
    assert np.isnan(by_axis.loc["batch_size", "effect_test_pts"])
    dropout = by_axis.loc["dropout"]
    assert (dropout["value"], dropout["baseline"], dropout["pairs"]) == ("0.25", "default", 5)
    assert dropout["effect_test_pts"] == pytest.approx(100 * DROPOUT_GAIN)
    assert dropout["ci_low_pts"] == pytest.approx(100 * DROPOUT_GAIN)  # no spread over seeds
    markdown = (reported / "report.md").read_text()
    assert "No matched pair for:" in markdown and "batch\\_size" in markdown
    assert "averaged over the rest" not in markdown


def test_the_four_model_line_is_compared_only_with_four_models_averaged(reported):
    markdown = (reported / "report.md").read_text()
    four = json.loads((reported / "ensemble.json").read_text())["four_models"]
    assert [member["weight"] for member in four["members"]] == [1, 1, 1, 1]
    assert f"averaged): **{100 * four['test_accuracy']:.2f}%**" in markdown


def test_configurations_are_grouped_by_block_and_named_by_what_varies_there(reported):
    markdown = (reported / "report.md").read_text()
    assert "### study 4: vanilla\\_cnn" in markdown
    table = pd.read_csv(reported / "report_files" / "configurations.csv")
    blocks = len(load_spec(FULL_SPEC).grids)
    assert set(table["block"]) == set(range(blocks))
    curves = sorted(path.name for path in (reported / "report_files").glob("learning_curves_*"))
    assert len(curves) == blocks  # every configuration has curves, one figure per block
    names = "\n".join(line for line in markdown.splitlines() if line.startswith("| "))
    assert "lr_schedule=cosine" not in names  # fixed within its block: not in a name


def test_the_report_fits_a_1280_pixel_window_in_chromium(reported, tmp_path):
    page = (reported / "report.html").read_text()
    probe = (
        "<script>window.addEventListener('load', () => {"
        "const wide = [...document.querySelectorAll('.table-wrap')]"
        ".filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.innerText.slice(0, 60));"
        "const images = [...document.querySelectorAll('img')]"
        ".filter(e => e.getBoundingClientRect().right > window.innerWidth).length;"
        "document.body.setAttribute('data-fit', JSON.stringify({page: "
        "document.documentElement.scrollWidth, window: window.innerWidth, wide, images}));"
        "});</script>"
    )
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", probe + "</body>"))
    dom = chromium(probed, tmp_path / "profile", "--window-size=1280,900", "--dump-dom").stdout
    start = dom.index('data-fit="') + len('data-fit="')
    fit = json.loads(dom[start : dom.index('"', start)].replace("&quot;", '"'))
    assert fit["window"] == 1280
    assert fit["page"] <= 1280, fit
    assert fit["wide"] == [], fit
    assert fit["images"] == 0


# --- effects on generated grids equal a brute-force pairing -----------------------------------

AXIS_VALUES = {"arch": ["linear", "mlp", "vgg"], "batch_size": [64, 128, 200], "l2": [0.0, 1e-5]}


@st.composite
def union_runs(draw) -> tuple[pd.DataFrame, list[dict]]:
    grids = []
    for _ in range(draw(st.integers(1, 3))):
        axes = draw(st.lists(st.sampled_from(sorted(AXIS_VALUES)), min_size=1, unique=True))
        grid = {
            axis: draw(st.lists(st.sampled_from(AXIS_VALUES[axis]), min_size=1, unique=True))
            for axis in axes
        }
        grids.append({**grid, "seed": draw(st.lists(st.integers(0, 3), min_size=1, unique=True))})
    rows = []
    for block, grid in enumerate(grids):
        for values in itertools.product(*grid.values()):
            config = {
                "arch": "mlp",
                "batch_size": 128,
                "l2": 0.0,
                **dict(zip(grid, values, strict=True)),
            }
            if draw(st.booleans()):  # some runs are missing: unfinished, failed
                accuracy = draw(st.floats(0.5, 1.0, allow_nan=False))
                rows.append({**config, "block": block, "test_accuracy": accuracy})
    frame = pd.DataFrame(
        rows, columns=["arch", "batch_size", "l2", "seed", "block", "test_accuracy"]
    )
    return frame, grids


def brute_force(frame: pd.DataFrame, grids: list[dict], axis: str) -> dict[tuple, list[float]]:
    pairs: dict[tuple, list[float]] = {}
    others = [key for key in ("arch", "batch_size", "l2", "seed") if key != axis]
    for (_, left), (_, right) in itertools.permutations(frame.iterrows(), 2):
        values = grids[left["block"]].get(axis, [])
        same = left["block"] == right["block"] and all(left[k] == right[k] for k in others)
        if same and len(values) > 1 and right[axis] == values[0] != left[axis]:
            key = (left[axis], values[0])
            pairs.setdefault(key, []).append(100 * (left["test_accuracy"] - right["test_accuracy"]))
    return pairs


@settings(max_examples=40, deadline=None)
@given(union_runs())
def test_effects_on_generated_grids_equal_a_brute_force_pairing(generated):
    frame, grids = generated
    found = effects.axis_effects(frame, grids, ["arch", "batch_size", "l2"])
    for axis in ("arch", "batch_size", "l2"):
        expected = brute_force(frame, grids, axis)
        rows = found[found["axis"] == axis]
        if not expected:
            assert list(rows["pairs"]) == [0] and rows["effect_test_pts"].isna().all()
            continue
        got = {(row.value, row.baseline): row for row in rows.itertuples()}
        assert set(got) == set(expected)
        for key, differences in expected.items():
            assert got[key].pairs == len(differences)
            assert got[key].effect_test_pts == pytest.approx(np.mean(differences))
