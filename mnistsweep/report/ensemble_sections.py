"""The ensemble's sections: the headline first, the greedy and top-k views, then per digit and
the test digits themselves. All of them need MNIST's labels; without the data they say so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mnistsweep import fsio
from mnistsweep.analysis.ensemble import EnsembleChoice, EnsembleFindings, Member
from mnistsweep.report import figures, formatting
from mnistsweep.report.context import Attachments, Findings, Inputs
from mnistsweep.report.document import Block, Section, paragraph, strong
from mnistsweep.sweep.layout import RunLayout
from mnistsweep.train.data import Mnist

DIGITS_SHOWN = 18  # of each kind: correctly classified, misclassified
NO_HELP = "No ensemble rule beats the best single run on held-out validation; the headline is it."
METHOD_NAMES = {"greedy": "greedy ensemble", "top-k": "top-k ensemble", "single": "single run"}


def ensembles(inputs: Inputs, findings: Findings, files: Attachments) -> list[Section]:
    section = Section("Ensembles")
    if inputs.mnist is None:
        return [
            section.add(
                paragraph(
                    f"MNIST is not available here ({inputs.data_problem}), so the ensembles, the "
                    "accuracy per digit and the test digits are left out: they need the labels "
                    "and images. Prepare the data and run the report again."
                )
            )
        ]
    found = findings.ensembles
    if found is None:
        return [
            section.add(
                paragraph("No completed run has probability files (probs_val/test.npy) yet.")
            )
        ]
    section.add(*headline(found), *curves(found, files))
    return [
        section,
        *top_k(found, inputs.top_k),
        *per_architecture(found),
        *per_digit(inputs.mnist, findings, found, files),
        *digits(inputs.mnist, found.headline, files),
    ]


def headline(found: EnsembleFindings) -> list[Block]:
    chosen = found.headline
    blocks: list[Block] = [
        paragraph(
            strong("Headline: "),
            f"{METHOD_NAMES.get(chosen.method, chosen.method)}"
            f"{'' if chosen.method == 'single' else f' of {chosen.size} runs'}: test accuracy ",
            strong(f"{formatting.percent(chosen.test_accuracy)}%"),
            f", test loss {formatting.loss(chosen.test_loss)}; validation accuracy "
            f"{formatting.percent(chosen.val_accuracy)}% (seen by the selection), ",
            strong(f"{formatting.percent(found.held_out.get(chosen.method))}%"),
            " on validation images the selection did not see. Each rule was itself validated: "
            "it chose on one half of the validation images and was scored on the other, both "
            "ways; the headline is the rule that won that test. The test set scores the choice "
            "and chooses nothing.",
        ),
        formatting.table(
            pd.DataFrame(
                {
                    "rule": [METHOD_NAMES[rule] for rule in found.held_out],
                    "held-out validation acc %": [
                        formatting.percent(value) for value in found.held_out.values()
                    ],
                    "chosen": ["yes" if rule == chosen.method else "" for rule in found.held_out],
                }
            )
        ),
    ]
    if not found.helps:
        blocks.append(paragraph(NO_HELP))
    blocks.append(formatting.table(members_table(chosen.members)))
    return blocks


def members_table(members: list[Member]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "run": [member.cell_name for member in members],
            "arch": [member.arch for member in members],
            "weight": [str(member.weight) for member in members],
            "validation acc %": [
                formatting.percent(member.best_val_accuracy) for member in members
            ],
            "test acc %": [formatting.percent(member.test_accuracy) for member in members],
        }
    )


def curves(found: EnsembleFindings, files: Attachments) -> list[Block]:
    greedy_at = _chosen_step(found)
    figure = figures.ensemble_curves(found.greedy_curve, greedy_at, found.top_k_curve)
    scores = [
        (name, choice)
        for name, choice in (
            ("best single run", found.best_single),
            ("greedy", found.greedy),
            ("top-k", found.top_k),
        )
        if choice is not None
    ]
    return [
        formatting.table(
            pd.DataFrame(
                {
                    "ensemble": [name for name, _ in scores],
                    "runs": [str(choice.size) for _, choice in scores],
                    "validation acc %": [formatting.percent(c.val_accuracy) for _, c in scores],
                    "validation loss": [formatting.loss(c.val_loss) for _, c in scores],
                    "test acc %": [formatting.percent(c.test_accuracy) for _, c in scores],
                    "test loss": [formatting.loss(c.test_loss) for _, c in scores],
                }
            )
        ),
        files.figure("ensemble_curves.png", figure, "Ensemble accuracy: greedy steps and top-k"),
    ]


def _chosen_step(found: EnsembleFindings) -> int | None:
    """The greedy step the chosen ensemble stops at: its total weight (one run per step)."""
    if found.greedy is None:
        return None
    return sum(member.weight for member in found.greedy.members)


def top_k(found: EnsembleFindings, requested: int) -> list[Section]:
    if found.top_k_curve.empty:
        return []
    curve = found.top_k_curve
    shown = pd.DataFrame(
        {
            "k": curve["k"].astype(int).astype(str),
            "validation acc %": curve["val_accuracy"].map(formatting.percent),
            "test acc %": curve["test_accuracy"].map(formatting.percent),
            "test loss": curve["test_loss"].map(formatting.loss),
        }
    )
    return [
        Section(f"Top-{requested} ensemble", level=3).add(
            paragraph(
                f"The {len(curve)} completed runs with the best validation accuracy, their class "
                "probabilities averaged, as k grows."
            ),
            formatting.table(shown),
        )
    ]


def per_architecture(found: EnsembleFindings) -> list[Section]:
    if not found.per_architecture:
        return []
    rows = [
        {
            "arch": arch,
            "method": str(best.get("method", "")),
            "runs": str(best.get("size", "")),
            "validation acc %": formatting.percent(best.get("val_accuracy")),
            "test acc %": formatting.percent(best.get("test_accuracy")),
            "best single test acc %": formatting.percent(best.get("single_test_accuracy")),
        }
        for arch, best in found.per_architecture.items()
    ]
    return [
        Section("Best ensemble within each architecture", level=3).add(
            paragraph("Each architecture's own runs, chosen on validation the same way."),
            formatting.table(pd.DataFrame(rows)),
        )
    ]


# --- per digit ------------------------------------------------------------------------------------


def class_accuracy(probabilities: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Share of each digit's test images predicted right."""
    right = probabilities.argmax(axis=1) == truth
    return np.bincount(truth, weights=right, minlength=10) / np.bincount(truth, minlength=10)


def per_digit(
    mnist: Mnist, findings: Findings, found: EnsembleFindings, files: Attachments
) -> list[Section]:
    truth = mnist.y_test.astype(int)
    accuracies = {
        f"headline ({found.headline.method})": class_accuracy(
            found.headline.test_probabilities, truth
        )
    }
    best = findings.best_label
    if best is not None:
        runs = findings.runs_by_label.get(best, pd.DataFrame(columns=["run_dir"]))
        per_run = [
            class_accuracy(probabilities, truth)
            for probabilities in (_test_probabilities(Path(str(d))) for d in runs["run_dir"])
            if probabilities is not None and probabilities.shape == (len(truth), 10)
        ]
        if per_run:
            accuracies[f"best configuration (mean of {len(per_run)}): {best}"] = np.mean(
                per_run, axis=0
            )
    table = pd.DataFrame({"digit": [str(digit) for digit in range(10)]})
    for label, values in accuracies.items():
        table[formatting.shorten(label, 60) + " %"] = [formatting.percent(v) for v in values]
    matrix = np.bincount(
        truth * 10 + found.headline.test_probabilities.argmax(axis=1), minlength=100
    ).reshape(10, 10)
    return [
        Section("Accuracy per digit", level=3).add(
            paragraph(
                "Test accuracy of each digit class: the headline and the best configuration "
                "(each of its runs scored alone, then averaged)."
            ),
            formatting.table(table),
            files.figure(
                "per_digit_accuracy.png",
                figures.per_class_accuracy(accuracies),
                "Test accuracy per digit",
            ),
            files.figure(
                "confusion_matrix.png",
                figures.confusion_matrix(matrix),
                "Confusion matrix of the headline on the test set",
            ),
        )
    ]


def _test_probabilities(run_dir: Path) -> np.ndarray | None:
    try:
        return fsio.map_npy(RunLayout(run_dir).test_probs)
    except (fsio.UnreadableFile, OSError, ValueError):
        return None


# --- the digits themselves ------------------------------------------------------------------------


def digits(mnist: Mnist, chosen: EnsembleChoice, files: Attachments) -> list[Section]:
    truth = mnist.y_test.astype(int)
    probabilities = chosen.test_probabilities
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities[np.arange(len(truth)), predicted]
    right = np.flatnonzero(predicted == truth)[:DIGITS_SHOWN]
    wrong = np.flatnonzero(predicted != truth)
    worst = wrong[np.argsort(-confidence[wrong], kind="stable")][:DIGITS_SHOWN]

    def captions(indices: np.ndarray) -> list[str]:
        return [f"true {truth[i]} → {predicted[i]}\np = {confidence[i]:.2f}" for i in indices]

    panels = {"Correctly classified (first test digits)": (mnist.x_test[right], captions(right))}
    if len(worst):
        panels["Misclassified (most confident first)"] = (mnist.x_test[worst], captions(worst))
    section = Section("Test digits", level=3).add(
        paragraph(
            f"{len(wrong):,} of {len(truth):,} test digits are misclassified by the headline. "
            "Left: the first test digits it gets right; right: the mistakes it was surest of, "
            "with the probability of its prediction."
            if len(worst)
            else "The headline classifies every test digit correctly."
        ),
        files.figure(
            "test_digits.png", figures.digit_panels(panels), "Correctly and wrongly classified"
        ),
    )
    return [section]
