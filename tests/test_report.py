"""Tables (n, mean, std, 95% interval, marginals) and the report on synthetic sweep folders."""

import base64
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mnistsweep.analysis import reference, runs, tables
from mnistsweep.errors import MnistsweepError
from mnistsweep.report.build import write_report
from mnistsweep.sweep import guard
from mnistsweep.sweep.layout import SweepLayout
from mnistsweep.sweep.rundir import write_json_atomic
from mnistsweep.train import data

T_975 = {2: 12.706204736174698, 3: 4.302652729749464}  # Student's t quantiles by n (df = n-1)


def write_result(root: Path, config: dict, test: float, val: float, **extra) -> None:
    write_json_atomic(
        root / "result.json",
        {
            "status": extra.get("status", "completed"),
            "cell_id": extra.get("cell_id", root.name),
            "cell_name": extra.get("cell_name", root.name),
            "config": config,
            "metrics": {
                "test_accuracy": test,
                "best_val_accuracy": val,
                "test_loss": 0.1,
                "best_val_loss": 0.1,
                "best_epoch": extra.get("best_epoch", 1),
                "epochs_run": 3,
            },
            "timing": {"total_seconds": extra.get("seconds", 10.0)},
        },
    )


@pytest.fixture
def table_runs(tmp_path) -> pd.DataFrame:
    """arch x normalization, three seeds of (mlp, raw), one of the others."""
    accuracies = {
        ("mlp", "raw", 0): (0.97, 0.975, 0),
        ("mlp", "raw", 1): (0.98, 0.977, 2),
        ("mlp", "raw", 2): (0.99, 0.979, 4),
        ("mlp", "standardize", 0): (0.95, 0.96, 1),
        ("linear", "raw", 0): (0.90, 0.91, 1),
        ("linear", "standardize", 0): (0.92, 0.93, 1),
    }
    for (arch, normalization, seed), (test, val, best_epoch) in accuracies.items():
        config = {"arch": arch, "normalization": normalization, "seed": seed}
        write_result(
            tmp_path / "runs" / f"{arch}-{normalization}-{seed}",
            config,
            test,
            val,
            best_epoch=best_epoch,
        )
    return runs.load_runs(tmp_path).frame


AXES = ["arch", "normalization", "seed"]


def test_configuration_table_has_n_mean_std_and_a_student_t_interval(table_runs):
    table = tables.configuration_table(table_runs, AXES)
    assert list(table["arch"]) == ["mlp", "mlp", "linear", "linear"]  # validation order
    mlp_raw = table.iloc[0]
    assert mlp_raw["n"] == 3
    assert mlp_raw["test_acc_mean"] == pytest.approx(0.98)
    assert mlp_raw["test_acc_std"] == pytest.approx(0.01)
    half_width = T_975[3] * 0.01 / np.sqrt(3)  # 0.02484
    assert mlp_raw["test_acc_ci95_low"] == pytest.approx(0.98 - half_width)
    assert mlp_raw["test_acc_ci95_high"] == pytest.approx(0.98 + half_width)
    assert mlp_raw["val_acc_ci95_high"] == pytest.approx(0.977 + T_975[3] * 0.002 / np.sqrt(3))
    assert mlp_raw["epochs_to_best"] == pytest.approx(3.0)  # best_epoch 0, 2, 4 are 0-based
    single = table.iloc[1]
    assert single["n"] == 1 and np.isnan(single["test_acc_ci95_low"])


def test_summarize_keeps_its_columns(table_runs):
    table = tables.summarize(table_runs, AXES)
    assert list(table.columns) == ["arch", "normalization", *tables.SUMMARY_COLUMNS]


def test_marginal_tables_average_each_axis_over_the_rest(table_runs):
    marginals = tables.marginal_tables(table_runs, AXES)
    assert set(marginals) == {"arch", "normalization"}
    by_arch = marginals["arch"].set_index("arch")
    # mlp: configuration means 0.98 (raw, 3 seeds) and 0.95 (standardize): each counts once.
    assert by_arch.loc["mlp", "test_acc_mean"] == pytest.approx((0.98 + 0.95) / 2)
    assert by_arch.loc["mlp", "configurations"] == 2 and by_arch.loc["mlp", "runs"] == 4
    assert by_arch.loc["mlp", "test_acc_min"] == pytest.approx(0.95)
    assert by_arch.loc["mlp", "test_acc_max"] == pytest.approx(0.98)
    by_normalization = marginals["normalization"].set_index("normalization")
    assert by_normalization.loc["raw", "test_acc_mean"] == pytest.approx((0.98 + 0.90) / 2)
    assert by_normalization.loc["standardize", "val_acc_mean"] == pytest.approx(0.945)
    assert list(marginals["arch"]["arch"]) == ["mlp", "linear"]  # best validation first


def test_one_configuration_axis_has_no_marginal_tables(table_runs):
    assert tables.marginal_tables(table_runs, ["arch", "seed"]) == {}


def test_reference_rows_match_the_tutorials_configuration(table_runs):
    runs = table_runs.assign(dropout="default", augment="none", l2=0.0)
    table, uncovered = reference.comparison(runs)
    linear = table.set_index("reference").loc["linear, standardized"]
    assert linear["reference_test_acc"] == 0.924 and linear["runs"] == 1
    assert linear["difference"] == pytest.approx(0.92 - 0.924)
    assert "vgg" in {row.name for row in uncovered}


# --- the report ---------------------------------------------------------------------------------

GRID = {"arch": ["linear", "mlp"], "normalization": ["raw", "standardize"], "seed": [0, 1]}


def record_sweep(sweep_dir: Path, ensemble_top_k: int = 3) -> list:
    write_json_atomic(
        sweep_dir / "sweep.json",
        {
            "name": "synthetic",
            "fingerprint": "x",
            "spec_path": "sweeps/synthetic.yaml",
            "axes": list(GRID),
            "grid": GRID,
            "train": {"epochs": 3, "train_subset": 2000},
            "ensemble_top_k": ensemble_top_k,
            "cells": 8,
        },
    )
    return guard.recorded_cells(sweep_dir)


def fake_probabilities(labels: np.ndarray, right: float, generator) -> np.ndarray:
    """Probabilities that pick the true label for a share `right` of the images."""
    predicted = np.where(generator.random(len(labels)) < right, labels, (labels + 1) % 10)
    probabilities = np.full((len(labels), 10), 0.02, dtype=np.float32)
    probabilities[np.arange(len(labels)), predicted] = 0.82
    return probabilities


def fill_cell(sweep_dir: Path, cell, mnist: data.Mnist | None, generator) -> None:
    root = SweepLayout(sweep_dir).run(cell).root
    quality = {"linear": 0.90, "mlp": 0.96}[cell.config["arch"]]
    quality += 0.01 * (cell.config["normalization"] == "standardize") + 0.002 * cell.config["seed"]
    write_result(
        root,
        dict(cell.config),
        quality,
        quality + 0.005,
        cell_id=cell.id,
        cell_name=cell.name,
    )
    write_json_atomic(
        root / "history.json",
        {"val_accuracy": [quality - 0.02, quality - 0.005, quality + 0.005], "loss": [1, 1, 1]},
    )
    if mnist is not None:
        val_labels = mnist.y_train[-6000:].astype(int)
        np.save(root / "probs_val.npy", fake_probabilities(val_labels, quality, generator))
        np.save(root / "probs_test.npy", fake_probabilities(mnist.y_test, quality, generator))


@pytest.fixture(scope="module")
def full_sweep(tmp_path_factory, mnist_dir) -> Path:
    """A finished synthetic sweep with probabilities, reported once for the tests that read it."""
    sweep_dir = tmp_path_factory.mktemp("report") / "synthetic"
    generator = np.random.default_rng(0)
    mnist = data.load(mnist_dir)
    for cell in record_sweep(sweep_dir):
        fill_cell(sweep_dir, cell, mnist, generator)
    return sweep_dir


@pytest.fixture(scope="module")
def written(full_sweep, mnist_dir) -> list[Path]:
    return write_report(full_sweep, data_dir=mnist_dir)


def image_sources(page: str) -> list[str]:
    return re.findall(r'<img[^>]*\ssrc="([^"]*)"', page)


def test_report_writes_markdown_html_figures_and_the_ensemble(full_sweep, written):
    names = {path.name for path in written}
    assert {"report.md", "report.html", "ensemble.json"} <= names
    expected_figures = {
        "test_accuracy.png",
        "validation_curves.png",
        "ensemble_curve.png",
        "confusion_matrix.png",
        "misclassified.png",
    }
    assert expected_figures <= names
    assert all(path.exists() for path in written)
    markdown = (full_sweep / "report.md").read_text()
    for figure in expected_figures:
        assert f"](report_files/{figure})" in markdown
    for heading in ("## Results per configuration", "### normalization", "## Top-3 ensemble"):
        assert heading in markdown
    assert "Partial report" not in markdown
    assert "linear, standardized" in markdown  # compared with the tutorial's 92.4%
    assert (full_sweep / "report_files" / "configurations.csv").exists()


def test_html_is_self_contained(full_sweep, written):
    page = (full_sweep / "report.html").read_text()
    sources = image_sources(page)
    assert len(sources) == 5
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http://" not in page and "https://" not in page
    assert "<link" not in page and "<script" not in page
    assert "<style>" in page


def test_a_partial_sweep_gives_a_report_that_says_what_is_missing(tmp_path):
    sweep_dir = tmp_path / "synthetic"
    cells = record_sweep(sweep_dir)
    generator = np.random.default_rng(0)
    for cell in cells[:5]:
        fill_cell(sweep_dir, cell, None, generator)
    SweepLayout(sweep_dir).run(cells[5]).root.mkdir(parents=True)  # started, no result.json yet
    write_report(sweep_dir, data_dir=tmp_path / "no-data")
    markdown = (sweep_dir / "report.md").read_text()
    assert "Partial report" in markdown
    assert "5 of 8 cells have a final result; 3 are missing" in markdown
    assert f"**Running or interrupted** (1):\n\n- `{cells[5].name}`" in markdown
    assert f"**Not started** (2):\n\n- `{cells[6].name}`\n- `{cells[7].name}`" in markdown
    assert "MNIST is not available here" in markdown  # no data: said, not failed


def test_top_k_overrides_the_spec(tmp_path):
    sweep_dir = tmp_path / "synthetic"
    record_sweep(sweep_dir, ensemble_top_k=3)
    write_report(sweep_dir, top_k=2, data_dir=tmp_path / "no-data")
    assert "## Top-2 ensemble" in (sweep_dir / "report.md").read_text()


def test_a_sweep_without_completed_runs_still_gets_a_report(tmp_path):
    sweep_dir = tmp_path / "synthetic"
    record_sweep(sweep_dir)
    written = write_report(sweep_dir, data_dir=tmp_path / "no-data")
    assert "No completed runs yet." in written[0].read_text()


def test_user_errors_are_one_line_mnistsweep_errors(tmp_path):
    with pytest.raises(MnistsweepError, match="not a sweep folder"):
        write_report(tmp_path)
    with pytest.raises(MnistsweepError, match="no such sweep folder"):
        write_report(tmp_path / "missing")
    record_sweep(tmp_path)
    with pytest.raises(MnistsweepError, match="--top-k"):
        write_report(tmp_path, top_k=0)


def test_the_report_does_not_import_tensorflow(tmp_path):
    sweep_dir = tmp_path / "synthetic"
    for cell in record_sweep(sweep_dir)[:2]:
        fill_cell(sweep_dir, cell, None, np.random.default_rng(0))
    code = (
        "import sys; from pathlib import Path; from mnistsweep.report.build import write_report; "
        f"write_report(Path({str(sweep_dir)!r}), data_dir=Path({str(tmp_path / 'none')!r})); "
        "heavy = {'tensorflow', 'keras', 'jax'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_the_html_renders_offline_in_headless_chromium(full_sweep, written, tmp_path):
    browser = shutil.which("chromium")
    if browser is None:
        pytest.skip("chromium is not on PATH (Debian: apt-get install -y chromium)")
    screenshot = tmp_path / "report.png"
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={screenshot}",
            "--window-size=1200,3000",
            (full_sweep / "report.html").as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    from matplotlib.image import imread

    pixels = imread(screenshot)[..., :3]
    assert pixels.shape[:2] == (3000, 1200)
    not_white = (pixels < 0.9).any(axis=2).mean()
    assert not_white > 0.03, "the page rendered (almost) blank"
    blue = (pixels[..., 2] > 0.6) & (pixels[..., 0] < 0.3)  # matplotlib's blue: a plot is drawn
    assert blue.sum() > 200
