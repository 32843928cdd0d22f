"""The report's figures, drawn with matplotlib's Agg canvas straight to PNG files.

Figures are built as `matplotlib.figure.Figure` objects on an Agg canvas, never through pyplot:
no display is needed, no global state is touched, and nothing stays open after a save.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

DPI = 110
WIDTH = 9.0  # inches: 990 pixels, the report's column width


def new_figure(height: float, width: float = WIDTH, layout: str | None = "constrained") -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout=layout)
    FigureCanvasAgg(figure)
    return figure


def save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=DPI)
    return path


def configuration_accuracy(
    table: pd.DataFrame, labels: Sequence[str], runs_by_label: Mapping[str, Sequence[float]]
) -> Figure:
    """Test accuracy per configuration: every seed as a dot, the mean with ± one std as a bar.

    `table` is in report order (best validation mean first), drawn top to bottom.
    """
    figure = new_figure(height=1.2 + 0.32 * len(table))
    axes = figure.add_subplot()
    positions = np.arange(len(table))[::-1]
    for position, label in zip(positions, labels, strict=True):
        seeds = runs_by_label.get(label, [])
        axes.scatter(seeds, [position] * len(seeds), s=14, color="0.55", zorder=2)
    axes.errorbar(
        table["test_acc_mean"],
        positions,
        xerr=table["test_acc_std"].fillna(0),
        fmt="o",
        color="tab:blue",
        ecolor="tab:blue",
        capsize=4,
        zorder=3,
        label="mean ± std over seeds",
    )
    axes.scatter([], [], s=14, color="0.55", label="one seed")
    axes.set_yticks(positions, labels)
    axes.set_xlabel("test accuracy")
    axes.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=1))
    axes.set_ylabel("configuration")
    axes.grid(axis="x", alpha=0.3)
    axes.legend(loc="lower right", fontsize="small")
    axes.set_title("Test accuracy per configuration (best validation mean at the top)")
    return figure


def validation_curves(curves: Mapping[str, pd.DataFrame]) -> Figure:
    """Validation accuracy per epoch: each configuration's mean over seeds with a ± std band.

    Each frame has columns epoch (1-based), mean, std and runs.
    """
    figure = new_figure(height=5.0 + 0.2 * ((len(curves) + 1) // 2))
    axes = figure.add_subplot()
    colors = [f"C{index % 10}" for index in range(len(curves))]
    for (label, curve), color in zip(curves.items(), colors, strict=True):
        axes.plot(curve["epoch"], curve["mean"], marker="o", markersize=3, color=color, label=label)
        spread = curve["std"].fillna(0)
        axes.fill_between(
            curve["epoch"], curve["mean"] - spread, curve["mean"] + spread, color=color, alpha=0.2
        )
    axes.set_xlabel("epoch")
    axes.set_ylabel("validation accuracy")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=1))
    axes.grid(alpha=0.3)
    figure.legend(loc="outside lower center", ncols=2, fontsize="small")
    axes.set_title("Validation accuracy per epoch (mean ± std over seeds)")
    return figure


def ensemble_curve(curve: pd.DataFrame, chosen_k: int) -> Figure:
    """Ensemble accuracy as members are added in validation order: where adding stops helping."""
    figure = new_figure(height=4.0)
    axes = figure.add_subplot()
    axes.plot(curve["k"], curve["val_accuracy"], marker="o", label="validation")
    axes.plot(curve["k"], curve["test_accuracy"], marker="s", label="test")
    axes.axvline(chosen_k, color="0.5", linestyle="--", label=f"best k on validation ({chosen_k})")
    axes.set_xlabel("k (members, best validation accuracy first)")
    axes.set_ylabel("ensemble accuracy")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=2))
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    axes.set_title("Top-k ensemble: accuracy against k")
    return figure


def confusion_matrix(matrix: np.ndarray) -> Figure:
    """Counts of (true, predicted) pairs; a log colour scale keeps the rare mistakes visible."""
    figure = new_figure(height=6.0, width=6.8)
    axes = figure.add_subplot()
    shown = np.where(matrix > 0, matrix, np.nan)
    image = axes.imshow(shown, cmap="Blues", norm=LogNorm(vmin=1, vmax=max(matrix.max(), 2)))
    threshold = np.sqrt(max(matrix.max(), 1))  # the log scale's midpoint: white text above it
    for (true, predicted), count in np.ndenumerate(matrix):
        if count:
            color = "white" if count > threshold else "black"
            axes.text(predicted, true, str(count), ha="center", va="center", color=color)
    classes = range(matrix.shape[0])
    axes.set_xticks(classes)
    axes.set_yticks(classes)
    axes.set_xlabel("predicted label")
    axes.set_ylabel("true label")
    axes.set_title("Ensemble confusion matrix (test set)")
    figure.colorbar(image, ax=axes, label="images (log scale)", shrink=0.8)
    return figure


def misclassified_digits(
    images: np.ndarray,
    true_labels: np.ndarray,
    predicted_labels: np.ndarray,
    confidences: np.ndarray,
    columns: int = 8,
) -> Figure:
    """A grid of test digits the ensemble got wrong, each titled with its true and predicted
    label and the ensemble's probability for the prediction.

    The digits are tiled into one image on one axes: a subplot per digit costs seconds to lay out.
    """
    side, label_band, gap = images.shape[1], 13, 5
    cell_height, cell_width = side + label_band, side + gap
    rows = max(1, int(np.ceil(len(images) / columns)))
    mosaic = np.zeros((rows * cell_height, columns * cell_width), dtype=images.dtype)
    figure = new_figure(height=WIDTH * mosaic.shape[0] / mosaic.shape[1] + 0.5)
    axes = figure.add_subplot()
    for index, image in enumerate(images):
        top = (index // columns) * cell_height + label_band
        left = (index % columns) * cell_width + gap // 2
        mosaic[top : top + side, left : left + side] = image
        axes.text(
            left + side / 2,
            top - 1.5,
            f"true {true_labels[index]} → {predicted_labels[index]}\np = {confidences[index]:.2f}",
            ha="center",
            va="bottom",
            fontsize=9,
        )
    axes.imshow(mosaic, cmap="gray_r", interpolation="nearest")
    axes.set_axis_off()
    axes.set_title("Misclassified test digits (most confident mistakes first)")
    return figure
