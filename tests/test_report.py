"""Tables (n, mean, std, 95% interval) and the report on synthetic sweep folders."""

import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import fake_sweeps
import numpy as np
import pandas as pd
import pytest

from mnistsweep import fsio
from mnistsweep.analysis import reference, runs, tables
from mnistsweep.errors import MnistsweepError
from mnistsweep.report import ensemble_sections, figures, history
from mnistsweep.report.build import write_report
from mnistsweep.sweep import guard
from mnistsweep.sweep.layout import RunLayout, SweepLayout
from mnistsweep.sweep.spec import parse_spec
from mnistsweep.train import data

T_975 = {2: 12.706204736174698, 3: 4.302652729749464}  # Student's t quantiles by n (df = n-1)


def write_result(root: Path, config: dict, test: float, val: float, **extra) -> None:
    fsio.write_json(
        RunLayout(root).result,
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
            "error": extra.get("error"),
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
    grid = {"arch": ["linear", "mlp"], "normalization": ["raw", "standardize"], "seed": [0, 1, 2]}
    cells = fake_sweeps.record_sweep(tmp_path, grid, epochs=3)
    for (arch, normalization, seed), (test, val, best_epoch) in accuracies.items():
        cell = fake_sweeps.cell_with(cells, arch=arch, normalization=normalization, seed=seed)
        run = fake_sweeps.run_of(tmp_path, cell)
        write_result(
            run.root,
            dict(cell.config),
            test,
            val,
            best_epoch=best_epoch,
            cell_id=cell.id,
            cell_name=cell.name,
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


def test_reference_rows_match_the_tutorials_configuration(table_runs):
    runs = table_runs.assign(dropout="default", augment="none", l2=0.0)
    table, uncovered = reference.comparison(runs)
    linear = table.set_index("reference").loc["linear, standardized"]
    # its configuration, not its settings (20 epochs on 54,000 images): listed, never compared
    assert linear["reference_test_acc"] == 0.924 and linear["configuration_runs"] == 1
    assert linear["status"] == "settings differ" and linear["runs"] == 0
    assert np.isnan(linear["difference"])
    assert "vgg" in {row.name for row in uncovered}


# --- the report ---------------------------------------------------------------------------------

GRID = {"arch": ["linear", "mlp"], "normalization": ["raw", "standardize"], "seed": [0, 1]}


def record_sweep(sweep_dir: Path, grid: dict | None = None, ensemble_top_k: int = 3) -> list:
    """A launched sweep's record and spec copy, as `launch` writes them; returns its cells."""
    document = {
        "name": sweep_dir.name,
        "grid": grid or GRID,
        "train": {"epochs": 3, "train_subset": 2000},
        "executor": {"backend": "local"},
        "ensemble": {"top_k": ensemble_top_k},
    }
    spec = parse_spec(document, sweep_dir.parent / f"{sweep_dir.name}.yaml")
    guard.record_spec(SweepLayout(sweep_dir), spec)
    return spec.cells()


def fake_probabilities(labels: np.ndarray, right: float, generator) -> np.ndarray:
    """Probabilities that pick the true label for a share `right` of the images."""
    predicted = np.where(generator.random(len(labels)) < right, labels, (labels + 1) % 10)
    probabilities = np.full((len(labels), 10), 0.02, dtype=np.float32)
    probabilities[np.arange(len(labels)), predicted] = 0.82
    return probabilities


def write_history(run: RunLayout, quality: float, epochs: int = 3) -> None:
    steps = np.linspace(-0.02, 0.005, epochs)
    fsio.write_json(
        run.history,
        {
            "loss": [0.5 - step for step in steps],
            "accuracy": [quality + step + 0.01 for step in steps],
            "val_loss": [0.4 - step for step in steps],
            "val_accuracy": [quality + step for step in steps],
            "seconds": [5.0] + [1.0] * (epochs - 1),
        },
    )


def write_probabilities(run: RunLayout, mnist: data.Mnist, quality: float, generator) -> None:
    val_labels = mnist.y_train[-6000:].astype(int)
    for path, labels in ((run.val_probs, val_labels), (run.test_probs, mnist.y_test)):
        probabilities = fake_probabilities(labels, quality, generator)
        fsio.write_with(path, lambda target, values=probabilities: np.save(target, values))


def fill_cell(sweep_dir: Path, cell, mnist: data.Mnist | None, generator) -> None:
    run = SweepLayout(sweep_dir).run(cell)
    quality = {"linear": 0.90, "mlp": 0.96}[cell.config["arch"]]
    quality += 0.01 * (cell.config["normalization"] == "standardize") + 0.002 * cell.config["seed"]
    write_result(
        run.root, dict(cell.config), quality, quality + 0.005, cell_id=cell.id, cell_name=cell.name
    )
    write_history(run, quality)
    if mnist is not None:
        write_probabilities(run, mnist, quality, generator)


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


EXPECTED_FIGURES = {
    "test_accuracy_1.png",
    "learning_curves_1.png",
    "axis_effects.png",
    "ensemble_curves.png",
    "per_digit_accuracy.png",
    "confusion_matrix.png",
    "test_digits.png",
}


def test_report_writes_markdown_html_figures_and_the_ensemble(full_sweep, written):
    names = {path.name for path in written}
    assert {"report.md", "report.html", "ensemble.json"} <= names
    assert names >= EXPECTED_FIGURES
    assert all(path.exists() for path in written)
    markdown = (full_sweep / "report.md").read_text()
    for figure in EXPECTED_FIGURES:
        assert f"](report_files/{figure})" in markdown
    for heading in (
        "## Results per configuration",
        "## Effect of each axis, from matched pairs",
        "## Learning curves",
        "## Ensembles",
        "### Top-3 ensemble",
        "### Accuracy per digit",
        "### Test digits",
    ):
        assert heading in markdown
    assert "Partial report" not in markdown
    assert (full_sweep / "report_files" / "configurations.csv").exists()


def test_smoke_runs_are_never_set_beside_the_four_model_figure(full_sweep, written):
    markdown = (full_sweep / "report.md").read_text()
    assert "Not compared: no ensemble here is built that way (members trained on subsets" in (
        markdown
    )


def test_the_first_lines_state_the_headline_and_the_best_configuration(full_sweep, written):
    markdown = (full_sweep / "report.md").read_text()
    lead = markdown.split("\n## ", 1)[0]
    ensemble = json.loads((full_sweep / "ensemble.json").read_text())
    assert "**Headline:**" in lead
    assert f"{100 * ensemble['test_accuracy']:.2f}%" in lead
    # mlp/standardize: seeds 0 and 1 at 0.97 and 0.972 -> 97.10 ± 0.14 (n = 2)
    assert "`arch=mlp, normalization=standardize`" in lead
    assert "97.10 ± 0.14%** (mean ± std over seeds, n = 2)" in lead


def test_the_best_run_is_named_with_its_folder(full_sweep, written):
    markdown = (full_sweep / "report.md").read_text()
    best = max(
        (path for path in (full_sweep / "runs").iterdir()),
        key=lambda path: json.loads((path / "result.json").read_text())["metrics"][
            "best_val_accuracy"
        ],
    )
    assert "**Best single run on validation:**" in markdown
    assert f"`{best}`" in markdown
    assert "It has no model.keras." in markdown


def test_steady_epoch_time_leaves_out_the_first_epoch(full_sweep, written):
    markdown = (full_sweep / "report.md").read_text()
    header = next(line for line in markdown.splitlines() if "steady epoch s" in line)
    row = next(
        line
        for line in markdown.splitlines()
        if line.startswith("| arch=mlp, normalization=standardize |")
    )
    cells = dict(zip(header.split("|"), row.split("|"), strict=True))
    assert cells[" first epoch s "].strip() == "5.0"
    assert cells[" steady epoch s "].strip() == "1.0"


def test_recorded_steady_epoch_time_wins_over_the_history():
    past = {"seconds": [9.0, 2.0, 4.0, 3.0]}
    assert history.steady_epoch_seconds(None, past) == 3.0
    assert history.steady_epoch_seconds(1.5, past) == 1.5
    assert history.steady_epoch_seconds(None, {"seconds": [9.0]}) is None
    assert history.first_epoch_seconds(None, past) == 9.0


def test_html_is_self_contained(full_sweep, written):
    page = (full_sweep / "report.html").read_text()
    sources = image_sources(page)
    assert len(sources) == len(EXPECTED_FIGURES)
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http://" not in page and "https://" not in page
    assert "<link" not in page and "<script" not in page
    assert "<style>" in page


def weak_tail_probabilities(labels: np.ndarray, strong: np.ndarray, weak: bool) -> np.ndarray:
    """The strong run's predictions; a weak run repeats its mistakes and adds its own, so no
    mixture can fix one of the strong run's errors and every weak member only adds loss."""
    predicted = labels.copy()
    predicted[strong] = (labels[strong] + 1) % 10
    if weak:
        extra = np.arange(len(labels)) % 5 == 0  # 20% more mistakes
        predicted[extra] = (labels[extra] + 2) % 10
    probabilities = np.full((len(labels), 10), 0.01, dtype=np.float32)
    probabilities[np.arange(len(labels)), predicted] = 0.91
    return probabilities


def test_a_weak_tail_leaves_the_strong_run_alone_as_the_headline(tmp_path, mnist_dir):
    """One strong MLP and three weak linear models: greedy selection keeps the strong run only,
    and the report says no ensemble helps."""
    sweep_dir = tmp_path / "weak-tail"
    mnist = data.load(mnist_dir)
    cells = record_sweep(sweep_dir, {"arch": ["linear", "mlp"], "seed": [0, 1, 2]})
    kept = [cell for cell in cells if cell.config["arch"] == "linear"]
    kept.append(next(cell for cell in cells if cell.config["arch"] == "mlp"))
    val_labels, test_labels = mnist.y_train[-6000:].astype(int), mnist.y_test.astype(int)
    for cell in kept:
        weak = cell.config["arch"] == "linear"
        quality = 0.78 if weak else 0.98
        run = SweepLayout(sweep_dir).run(cell)
        write_result(
            run.root, dict(cell.config), quality, quality, cell_id=cell.id, cell_name=cell.name
        )
        write_history(run, quality)
        for path, labels in ((run.val_probs, val_labels), (run.test_probs, test_labels)):
            wrong = np.arange(len(labels)) % 50 == 1  # the strong run's 2% of mistakes
            values = weak_tail_probabilities(labels, wrong, weak)
            fsio.write_with(path, lambda target, values=values: np.save(target, values))
    write_report(sweep_dir, data_dir=mnist_dir)
    markdown = (sweep_dir / "report.md").read_text()
    ensemble = json.loads((sweep_dir / "ensemble.json").read_text())
    assert ensemble["helps"] is False and ensemble["size"] == 1
    assert ensemble["members"][0]["arch"] == "mlp"
    assert ensemble_sections.NO_HELP in (markdown)
    assert "**Headline:** single run, test accuracy" in markdown.split("\n## ", 1)[0]


def test_one_epoch_curves_get_whole_epoch_ticks():
    curve = pd.DataFrame(
        {
            "metric": list(history.CURVE_METRICS),
            "epoch": [1] * 4,
            "mean": [0.5, 0.4, 0.9, 0.91],
            "std": [np.nan] * 4,
            "runs": [1] * 4,
        }
    )
    label = "arch=mlp, normalization=standardize, dropout=0.5, learning_rate=0.001, l2=0.0001"
    figure = figures.learning_curves({label: curve})
    figure.canvas.draw()
    for axes in figure.axes:
        low, high = axes.get_xlim()
        ticks = [tick for tick in axes.get_xticks() if low <= tick <= high]
        assert ticks == [1.0]
    drawn = figure.get_tightbbox(figure.canvas.get_renderer())  # titles, labels, legend
    page = figure.bbox_inches
    assert page.x0 - 0.01 <= drawn.x0 and drawn.x1 <= page.x1 + 0.01
    assert page.y0 - 0.01 <= drawn.y0 and drawn.y1 <= page.y1 + 0.01


def test_a_partial_sweep_gives_a_report_that_says_what_is_missing(tmp_path):
    sweep_dir = tmp_path / "synthetic"
    cells = record_sweep(sweep_dir)
    generator = np.random.default_rng(0)
    for cell in cells[:5]:
        fill_cell(sweep_dir, cell, None, generator)
    interrupted = SweepLayout(sweep_dir).run(cells[5])
    interrupted.create()
    fsio.write_json(interrupted.state, {"cell_id": cells[5].id, "epochs_done": 1})
    write_report(sweep_dir, data_dir=tmp_path / "no-data")
    markdown = (sweep_dir / "report.md").read_text()
    assert "Partial report" in markdown
    assert "5 of 8 cells have a final result; 3 are missing" in markdown
    assert f"**Interrupted** (1):\n\n- `{cells[5].name}`" in markdown
    assert f"**Not started** (2):\n\n- `{cells[6].name}`\n- `{cells[7].name}`" in markdown
    assert "MNIST is not available here" in markdown  # no data: said, not failed


def test_top_k_overrides_the_spec(tmp_path, mnist_dir):
    sweep_dir = tmp_path / "synthetic"
    generator = np.random.default_rng(0)
    mnist = data.load(mnist_dir)
    for cell in record_sweep(sweep_dir, ensemble_top_k=3):
        fill_cell(sweep_dir, cell, mnist, generator)
    write_report(sweep_dir, top_k=2, data_dir=mnist_dir)
    assert "### Top-2 ensemble" in (sweep_dir / "report.md").read_text()
    assert json.loads((sweep_dir / "ensemble.json").read_text())["requested_top_k"] == 2


def test_a_sweep_without_completed_runs_still_gets_a_report(tmp_path):
    sweep_dir = tmp_path / "synthetic"
    record_sweep(sweep_dir)
    written = write_report(sweep_dir, data_dir=tmp_path / "no-data")
    assert "No completed runs yet." in written[0].read_text()


def test_stale_report_files_go_and_other_files_stay(tmp_path):
    sweep_dir = tmp_path / "synthetic"
    for cell in record_sweep(sweep_dir)[:2]:
        fill_cell(sweep_dir, cell, None, np.random.default_rng(0))
    files = SweepLayout(sweep_dir).report_files
    files.mkdir()
    (files / "old_figure.png").write_bytes(b"old")
    (files / "notes.txt").write_text("mine")
    write_report(sweep_dir, data_dir=tmp_path / "no-data")
    assert not (files / "old_figure.png").exists()
    assert (files / "notes.txt").read_text() == "mine"
    assert (files / "learning_curves_1.png").exists()


def test_user_errors_are_one_line_mnistsweep_errors(tmp_path):
    with pytest.raises(MnistsweepError, match="not a sweep folder"):
        write_report(tmp_path)
    with pytest.raises(MnistsweepError, match="no such sweep folder"):
        write_report(tmp_path / "missing")
    record_sweep(tmp_path / "sweep")
    with pytest.raises(MnistsweepError, match="--top-k"):
        write_report(tmp_path / "sweep", top_k=0)


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


def chromium(page: Path, profile: Path, *arguments: str) -> subprocess.CompletedProcess:
    browser = shutil.which("chromium")
    if browser is None:
        pytest.skip("chromium is not on PATH (Debian: apt-get install -y chromium)")
    return subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            *arguments,
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_html_renders_offline_in_headless_chromium(full_sweep, written, tmp_path):
    screenshot = tmp_path / "report.png"
    chromium(
        full_sweep / "report.html",
        tmp_path / "profile",
        f"--screenshot={screenshot}",
        "--window-size=1200,3000",
    )
    from matplotlib.image import imread

    pixels = imread(screenshot)[..., :3]
    assert pixels.shape[:2] == (3000, 1200)
    not_white = (pixels < 0.9).any(axis=2).mean()
    assert not_white > 0.03, "the page rendered (almost) blank"
    blue = (pixels[..., 2] > 0.6) & (pixels[..., 0] < 0.3)  # matplotlib's blue: a plot is drawn
    assert blue.sum() > 200
