"""The report's figures, drawn with matplotlib's Agg canvas straight to PNG files.

Figures are built as `matplotlib.figure.Figure` objects on an Agg canvas, never through pyplot:
no display is needed, no global state is touched, and nothing stays open after a save.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

DPI = 110
WIDTH = 9.0  # inches: 990 pixels, the report's column width


def new_figure(height: float, width: float = WIDTH) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def png(figure: Figure) -> bytes:
    """The figure as PNG bytes: written through fsio by the caller, and inlined in the HTML."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def wrapped(label: str, width: int = 42, lines: int = 2) -> str:
    """A long configuration name on at most `lines` lines, so it never eats the plot."""
    return textwrap.fill(label, width, max_lines=lines, placeholder=" …")


def integer_epochs(axes: Axes, last_epoch: int) -> None:
    """Whole epochs only: a one-epoch run gets the tick 1, not 0.96, 0.98, 1.00..."""
    axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    axes.set_xlim(0.5, max(last_epoch, 1) + 0.5)


def configuration_accuracy(
    table: pd.DataFrame, labels: Sequence[str], runs_by_label: Mapping[str, Sequence[float]]
) -> Figure:
    """Test accuracy per configuration: every seed as a dot, the mean with ± one std as a bar.

    `table` is in report order (best validation mean first), drawn top to bottom.
    """
    figure = new_figure(height=1.6 + 0.42 * len(table))
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
    axes.set_yticks(positions, [wrapped(label) for label in labels], fontsize="small")
    axes.set_xlabel("test accuracy")
    axes.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=1))
    axes.set_ylabel("configuration")
    axes.grid(axis="x", alpha=0.3)
    figure.legend(loc="outside lower center", ncols=2, fontsize="small")
    axes.set_title("Test accuracy per configuration\n(best validation mean at the top)")
    return figure


def forest(effects: pd.DataFrame) -> Figure:
    """One panel per axis: each value's matched-pair effect (points) with its 95% interval, a
    zero line to read the sign against. `effects` holds effects.axis_effects rows with pairs."""
    axes_names = list(dict.fromkeys(effects["axis"]))
    heights = [len(effects[effects["axis"] == axis]) for axis in axes_names]
    figure = new_figure(height=1.0 + sum(0.45 * h + 0.6 for h in heights))
    panels = np.atleast_1d(figure.subplots(len(axes_names), 1, height_ratios=heights))
    for axes, name in zip(panels, axes_names, strict=True):
        rows = effects[effects["axis"] == name]
        positions = np.arange(len(rows))[::-1]
        low = (rows["effect_test_pts"] - rows["ci_low_pts"]).fillna(0)
        high = (rows["ci_high_pts"] - rows["effect_test_pts"]).fillna(0)
        axes.errorbar(
            rows["effect_test_pts"],
            positions,
            xerr=[low, high],
            fmt="o",
            capsize=4,
            color="tab:blue",
        )
        labels = [
            wrapped(f"{value} vs {baseline} (n={pairs})", width=50, lines=2)
            for value, baseline, pairs in zip(
                rows["value"], rows["baseline"], rows["pairs"], strict=True
            )
        ]
        axes.set_yticks(positions, labels, fontsize="small")
        axes.axvline(0, color="0.5", linewidth=1)
        axes.set_ylim(-0.6, len(rows) - 0.4)
        axes.set_title(name, fontsize="medium", loc="left")
        axes.grid(axis="x", alpha=0.3)
    panels[-1].set_xlabel("effect on test accuracy (points; value minus baseline)")
    return figure


CURVE_PANELS = {
    "loss": "Training loss",
    "val_loss": "Validation loss",
    "accuracy": "Training accuracy",
    "val_accuracy": "Validation accuracy",
}


def learning_curves(curves: Mapping[str, pd.DataFrame]) -> Figure:
    """Training and validation loss and accuracy per epoch, one line per configuration (the
    mean over seeds) with a ± std band. Each frame has columns metric, epoch, mean, std."""
    figure = new_figure(height=7.0 + 0.25 * len(curves))
    panels = figure.subplots(2, 2, sharex=True)
    last_epoch = max(int(curve["epoch"].max()) for curve in curves.values())
    for axes, (metric, title) in zip(panels.flat, CURVE_PANELS.items(), strict=True):
        for index, (label, curve) in enumerate(curves.items()):
            rows = curve[curve["metric"] == metric]
            color = f"C{index % 10}"
            axes.plot(
                rows["epoch"],
                rows["mean"],
                marker="o",
                markersize=3,
                color=color,
                label=wrapped(label, width=60, lines=1),
            )
            spread = rows["std"].fillna(0)
            axes.fill_between(
                rows["epoch"],
                rows["mean"] - spread,
                rows["mean"] + spread,
                color=color,
                alpha=0.2,
                linewidth=0,
            )
        axes.set_title(title, fontsize="medium")
        axes.grid(alpha=0.3)
        integer_epochs(axes, last_epoch)
        if "accuracy" in metric:
            axes.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=1))
        elif _spans_decades(curves, metric):  # one bad configuration would flatten the rest
            axes.set_yscale("log")
    for axes in panels[1]:
        axes.set_xlabel("epoch")
    handles, labels = panels[0, 0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=2, fontsize="small")
    figure.suptitle("Learning curves: mean ± std over seeds, per configuration")
    return figure


def _spans_decades(curves: Mapping[str, pd.DataFrame], metric: str) -> bool:
    means = pd.concat([curve.loc[curve["metric"] == metric, "mean"] for curve in curves.values()])
    positive = means[means > 0]
    return len(positive) > 1 and positive.max() / positive.min() > 20


def ensemble_curves(greedy: pd.DataFrame, greedy_steps: int | None, top_k: pd.DataFrame) -> Figure:
    """Left: greedy selection step by step, the step it stops at (chosen on validation) marked;
    right: the top-k ensemble against k. Test only scores what validation chose."""
    figure = new_figure(height=4.2)
    left, right = figure.subplots(1, 2, sharey=True)
    for axes, curve, x, chosen, title, xlabel in (
        (left, greedy, "step", greedy_steps, "Greedy selection", "step (one run added)"),
        (right, top_k, "k", None, "Top-k by validation", "k (best validation first)"),
    ):
        axes.set_title(title, fontsize="medium")
        axes.grid(alpha=0.3)
        if curve.empty:
            axes.text(0.5, 0.5, "not computed", ha="center", va="center", transform=axes.transAxes)
            continue
        axes.plot(curve[x], curve["val_accuracy"], marker="o", markersize=4, label="validation")
        axes.plot(curve[x], curve["test_accuracy"], marker="s", markersize=4, label="test")
        if chosen is not None:
            axes.axvline(chosen, color="0.5", linestyle="--", label="chosen on validation")
        axes.set_xlabel(xlabel)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=2))
    left.set_ylabel("ensemble accuracy")
    handles, labels = (left if not greedy.empty else right).get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=3, fontsize="small")
    return figure


def per_class_accuracy(accuracies: Mapping[str, np.ndarray]) -> Figure:
    """Test accuracy of each digit class, one bar group per class, one bar per model."""
    figure = new_figure(height=4.2)
    axes = figure.add_subplot()
    classes = np.arange(10)
    width = 0.8 / max(len(accuracies), 1)
    lowest = 1.0
    for index, (label, values) in enumerate(accuracies.items()):
        offset = (index - (len(accuracies) - 1) / 2) * width
        axes.bar(classes + offset, values, width, label=wrapped(label, width=70, lines=1))
        lowest = min(lowest, float(np.min(values)))
    axes.set_xticks(classes)
    axes.set_xlabel("digit")
    axes.set_ylabel("test accuracy")
    axes.set_ylim(max(0.0, lowest - 0.02), 1.0)
    axes.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=1))
    axes.grid(axis="y", alpha=0.3)
    axes.set_title("Test accuracy per digit", fontsize="medium")
    figure.legend(loc="outside lower center", ncols=1, fontsize="small")
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
            axes.text(
                predicted, true, str(count), ha="center", va="center", color=color, in_layout=False
            )
    classes = range(matrix.shape[0])
    axes.set_xticks(classes)
    axes.set_yticks(classes)
    axes.set_xlabel("predicted label")
    axes.set_ylabel("true label")
    axes.set_title("Confusion matrix of the headline (test set)")
    figure.colorbar(image, ax=axes, label="images (log scale)", shrink=0.8)
    return figure


def digit_panels(
    panels: Mapping[str, tuple[np.ndarray, Sequence[str]]], columns: int = 6
) -> Figure:
    """Panels of test digits side by side (correct ones, mistakes), each digit captioned.

    Each panel is one mosaic image on one axes: a subplot per digit costs seconds to lay out.
    """
    figure = new_figure(height=0.5, width=WIDTH)
    rows = max(1, max(int(np.ceil(len(images) / columns)) for images, _ in panels.values()))
    side, band, gap = 28, 16, 6
    cell_height, cell_width = side + band, side + gap
    figure.set_figheight(WIDTH / len(panels) * rows * cell_height / (columns * cell_width) + 0.8)
    for axes, (title, (images, captions)) in zip(
        np.atleast_1d(figure.subplots(1, len(panels))), panels.items(), strict=True
    ):
        mosaic = np.zeros((rows * cell_height, columns * cell_width), dtype=np.uint8)
        for index, image in enumerate(images):
            top = (index // columns) * cell_height + band
            left = (index % columns) * cell_width + gap // 2
            mosaic[top : top + side, left : left + side] = image
            axes.text(
                left + side / 2,
                top - 1.5,
                captions[index],
                ha="center",
                va="bottom",
                fontsize=7.5,
                linespacing=1.0,
                in_layout=False,  # inside the axes: the layout need not measure each caption
            )
        axes.imshow(mosaic, cmap="gray_r", interpolation="nearest")
        axes.set_axis_off()
        axes.set_title(title, fontsize="medium")
    return figure
