"""Ensembles of a sweep's runs, chosen on validation only: greedy selection, top-k, best single.

Greedy forward selection with replacement (Caruana et al. 2004, "Ensemble selection from
libraries of models"): start from the best single run by validation accuracy, then repeatedly add
(with replacement) the library run whose addition gives the lowest validation cross-entropy of
the averaged probabilities. Stop after `PATIENCE` additions without improvement (or `MAX_STEPS`);
the ensemble is the prefix with the lowest validation loss, so its size is chosen on validation.

Why loss and not accuracy: on 6,000 validation images accuracy moves in steps of 1/6000, so most
candidate additions tie and the choice falls to tie-breaking; loss is smooth and separates them.
The headline is the greedy ensemble only when it beats the best single run on validation accuracy
(equal accuracy: lower loss); otherwise it is that single run, and `helps` is False.

The test set never chooses anything: test labels only score choices already made.

Memory: the library is the best `LIBRARY_SIZE` completed runs by validation accuracy plus the best
`PER_ARCHITECTURE` of each architecture (a note in `problems` says so when runs are left out).
Only their validation probabilities are held (6,000 x 10 float32 = 240 kB a run, 48 MB for 200);
test probabilities are memory-mapped and read only for the members chosen. The validation split is
the last share of the 60,000 training images for every run, so validation rows align from the end.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mnistsweep import fsio
from mnistsweep.metrics import PROBABILITY_FLOOR, accuracy, cross_entropy
from mnistsweep.sweep import records
from mnistsweep.sweep.layout import RunLayout, SweepLayout

RANKING = ["best_val_accuracy", "best_val_loss", "run_dir"]  # ties: lower loss, then the name
LIBRARY_SIZE = 200
PER_ARCHITECTURE = 10
MAX_STEPS = 40
PATIENCE = 5
CLASSES = 10
MAX_PROBLEMS_SHOWN = 5
RULES = ("single", "top-k", "greedy")  # simplest first: a tie in held-out accuracy goes to it
FOUR_MODELS = 4  # Tutorial 1's ensemble: 4 models' probabilities averaged
SELECTION = (
    "three rules, each applied to the validation set: the best single run, the top-k runs "
    "averaged, greedy forward selection with replacement on validation cross-entropy (Caruana "
    "et al. 2004). Each rule is itself validated: it selects on one half of the validation "
    "images and is scored on the other, both ways; the headline is the rule with the best such "
    "held-out accuracy (ties: the simpler rule), applied to the whole validation set. The test "
    "set chooses nothing."
)


@dataclass(frozen=True)
class Labels:
    """MNIST's training labels (the validation split is their last share) and test labels."""

    train: np.ndarray
    test: np.ndarray

    def validation(self, size: int) -> np.ndarray:
        return self.train[len(self.train) - size :]


@dataclass(frozen=True)
class Member:
    run_dir: str
    cell_name: str
    arch: str
    weight: int  # times chosen (greedy, with replacement); 1 for top-k and single
    best_val_accuracy: float
    test_accuracy: float


@dataclass
class EnsembleChoice:
    method: str  # "greedy" | "top-k" | "single"
    members: list[Member]
    val_accuracy: float
    val_loss: float
    test_accuracy: float
    test_loss: float
    test_probabilities: np.ndarray  # (10000, 10), the weighted mean of the members'
    val_probabilities: np.ndarray

    @property
    def size(self) -> int:
        """Distinct members."""
        return len(self.members)

    def scores(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "size": self.size,
            "val_accuracy": self.val_accuracy,
            "val_loss": self.val_loss,
            "test_accuracy": self.test_accuracy,
            "test_loss": self.test_loss,
        }


@dataclass
class EnsembleFindings:
    headline: EnsembleChoice  # never worse on validation than `best_single`
    best_single: EnsembleChoice
    greedy: EnsembleChoice | None
    greedy_curve: pd.DataFrame  # step, size, val_accuracy, val_loss, test_accuracy, test_loss
    top_k: EnsembleChoice | None
    top_k_curve: pd.DataFrame  # k, val_accuracy, val_loss, test_accuracy, test_loss
    per_architecture: dict[str, dict[str, Any]]
    helps: bool  # the headline is an ensemble (a rule other than the best single run won)
    held_out: dict[str, float] = field(default_factory=dict)  # rule: accuracy selection never saw
    four_models: EnsembleChoice | None = None  # the 4 best on validation, averaged (Tutorial 1)
    problems: list[str] = field(default_factory=list)
    requested_top_k: int = 0
    library_size: int = 0


# --- the library -----------------------------------------------------------------------------


@dataclass
class _Library:
    """Candidate runs in rank order, their validation probabilities stacked, test ones mapped."""

    rows: list[pd.Series]
    val: np.ndarray  # (runs, n_val, 10) float32, the common validation tail
    test: list[np.ndarray]  # memory-mapped (10000, 10) each
    labels: Labels

    def __post_init__(self) -> None:
        val_labels = self.labels.validation(self.val.shape[1])
        self.picked = self.val[:, np.arange(len(val_labels)), val_labels]  # p(true class)

    def __len__(self) -> int:
        return len(self.rows)

    def choice(self, method: str, sequence: list[int]) -> EnsembleChoice:
        """The ensemble that averages the runs of `sequence` (an index may repeat)."""
        running = _Running(self)
        for index in sequence:
            running.add(index)
        return running.choice(method)


class _Running:
    """Running sums of the chosen runs' probabilities: one addition costs one run's arrays."""

    def __init__(self, library: _Library):
        self.library = library
        self.weights: Counter[int] = Counter()
        self.val = np.zeros(library.val.shape[1:], dtype=np.float64)
        self.test = np.zeros((len(library.labels.test), CLASSES), dtype=np.float64)
        self.val_labels = library.labels.validation(library.val.shape[1])

    def add(self, index: int) -> None:
        self.weights[index] += 1
        self.val += self.library.val[index]
        self.test += self.library.test[index]

    def scores(self) -> dict[str, float]:
        steps = self.weights.total()
        val, test = self.val / steps, self.test / steps
        return {
            "val_accuracy": accuracy(val, self.val_labels),
            "val_loss": cross_entropy(val, self.val_labels),
            "test_accuracy": accuracy(test, self.library.labels.test),
            "test_loss": cross_entropy(test, self.library.labels.test),
        }

    def choice(self, method: str) -> EnsembleChoice:
        steps = self.weights.total()
        rows = self.library.rows
        return EnsembleChoice(
            method=method,
            members=[_member(rows[index], count) for index, count in self.weights.items()],
            **self.scores(),
            test_probabilities=(self.test / steps).astype(np.float32),
            val_probabilities=(self.val / steps).astype(np.float32),
        )


def rank_by_validation(runs: pd.DataFrame) -> pd.DataFrame:
    """Completed runs, best validation accuracy first. Test accuracy plays no part."""
    if runs.empty or "status" not in runs.columns:
        return runs.iloc[0:0]
    done = runs[runs["status"] == "completed"]
    present = [column for column in RANKING if column in done.columns]
    return done.sort_values(present, ascending=[False, True, True][: len(present)])


def _library(runs: pd.DataFrame, labels: Labels, problems: list[str]) -> _Library | None:
    ranked = rank_by_validation(runs)
    if ranked.empty:
        return None
    arch = ranked["arch"] if "arch" in ranked.columns else pd.Series("", index=ranked.index)
    arch_rank = ranked.groupby(arch.astype(str), sort=False).cumcount()
    overall_rank = pd.Series(range(len(ranked)), index=ranked.index)
    chosen = ranked[(overall_rank < LIBRARY_SIZE) | (arch_rank < PER_ARCHITECTURE)]
    if len(chosen) < len(ranked):
        problems.append(
            f"the ensemble library holds the best {len(chosen)} of {len(ranked)} completed runs "
            f"by validation accuracy (the best {LIBRARY_SIZE}, and the best {PER_ARCHITECTURE} "
            "of each architecture), to bound memory"
        )
    rows, vals, tests, skipped = [], [], [], []
    for _, row in chosen.iterrows():
        loaded = _probabilities(RunLayout(Path(str(row["run_dir"]))), labels)
        if isinstance(loaded, str):
            skipped.append(f"{Path(str(row['run_dir'])).name}: {loaded} (skipped)")
            continue
        rows.append(row)
        vals.append(loaded[0])
        tests.append(loaded[1])
    problems.extend(skipped[:MAX_PROBLEMS_SHOWN])
    if len(skipped) > MAX_PROBLEMS_SHOWN:
        problems.append(f"... and {len(skipped) - MAX_PROBLEMS_SHOWN} more runs skipped")
    if not rows:
        return None
    common = min(len(val) for val in vals)
    if any(len(val) != common for val in vals):
        problems.append(
            f"validation sets differ in size; ensembles are scored on the last {common} "
            "validation images, the ones every run held out"
        )
    stacked = np.stack([np.asarray(val[len(val) - common :], dtype=np.float32) for val in vals])
    return _Library(rows, stacked, tests, labels)


def _probabilities(run: RunLayout, labels: Labels) -> tuple[np.ndarray, np.ndarray] | str:
    """A run's (validation, test) probabilities, mapped not read, or why they cannot be used."""
    try:
        val = fsio.map_npy(run.val_probs)
        test = fsio.map_npy(run.test_probs)
    except fsio.UnreadableFile as error:
        return f"no probabilities ({error})"
    except (OSError, ValueError) as error:
        return f"no probabilities ({type(error).__name__}: {error})"
    expected_test = (len(labels.test), CLASSES)
    val_ok = val.ndim == 2 and val.shape[1] == CLASSES and 0 < len(val) <= len(labels.train)
    if not val_ok or test.shape != expected_test:
        return f"probabilities of shape {val.shape} / {test.shape}, not (n, 10) / {expected_test}"
    if not (np.isfinite(val).all() and np.isfinite(test).all()):
        return "non-finite probabilities (NaN or inf): left out of every ensemble"
    return val, test


def _member(row: pd.Series, weight: int) -> Member:
    return Member(
        run_dir=str(row["run_dir"]),
        cell_name=str(row.get("cell_name") or Path(str(row["run_dir"])).name),
        arch=str(row.get("arch", "")),
        weight=weight,
        best_val_accuracy=float(row["best_val_accuracy"]),
        test_accuracy=float(row["test_accuracy"]),
    )


# --- selection -------------------------------------------------------------------------------


def greedy_sequence(picked: np.ndarray, candidates: list[int]) -> tuple[list[int], int]:
    """Caruana's forward selection with replacement on validation cross-entropy.

    `picked[i, j]` is run i's probability of validation image j's true class (the loss needs no
    other). Returns the whole sequence tried and the length of its best prefix (the chosen size).
    """
    pool = np.ascontiguousarray(picked[candidates], dtype=np.float32)
    sequence = [candidates[0]]
    total = pool[0].copy()
    best_loss, best_length = float(_loss(total[None, :].copy())[0]), 1
    trial = np.empty_like(pool)
    while len(sequence) < MAX_STEPS and len(sequence) - best_length < PATIENCE:
        np.add(pool, total, out=trial)
        trial /= len(sequence) + 1
        losses = _loss(trial)
        position = int(np.argmin(losses))
        sequence.append(candidates[position])
        total += pool[position]
        if losses[position] < best_loss - 1e-9:
            best_loss, best_length = float(losses[position]), len(sequence)
    return sequence, best_length


def _loss(picked_means: np.ndarray) -> np.ndarray:
    """metrics.cross_entropy for many candidate ensembles at once, from p(true class) alone.
    Works in place on `picked_means` (float32: these losses only rank candidates)."""
    np.maximum(picked_means, PROBABILITY_FLOOR, out=picked_means)
    np.log(picked_means, out=picked_means)
    return -picked_means.mean(axis=1, dtype=np.float64)


def _beats(challenger: EnsembleChoice, incumbent: EnsembleChoice) -> bool:
    return (challenger.val_accuracy, -challenger.val_loss) > (
        incumbent.val_accuracy,
        -incumbent.val_loss,
    )


def _greedy(
    library: _Library, candidates: list[int], *, with_curve: bool = True
) -> tuple[EnsembleChoice, pd.DataFrame]:
    """The greedy ensemble over `candidates` (rank order) and its curve, one point per step."""
    sequence, best_length = greedy_sequence(library.picked, candidates)
    if not with_curve:
        return library.choice("greedy", sequence[:best_length]), pd.DataFrame()
    running, points, chosen = _Running(library), [], None
    for step, index in enumerate(sequence, start=1):
        running.add(index)
        points.append({"step": step, "size": len(running.weights), **running.scores()})
        if step == best_length:
            chosen = running.choice("greedy")
    assert chosen is not None  # 1 <= best_length <= len(sequence)
    return chosen, pd.DataFrame(points)


def _top_k(library: _Library, top_k: int) -> tuple[EnsembleChoice, pd.DataFrame]:
    """The k best runs by validation accuracy, averaged; the curve for k = 1..top_k."""
    running, points = _Running(library), []
    for index in range(min(top_k, len(library))):
        running.add(index)
        points.append({"k": index + 1, **running.scores()})
    return running.choice("top-k"), pd.DataFrame(points)


def _headline(
    library: _Library, candidates: list[int], *, with_curve: bool = True
) -> tuple[EnsembleChoice, EnsembleChoice, EnsembleChoice, pd.DataFrame]:
    """(best of single and greedy on validation, best single, greedy, greedy curve) over
    `candidates` (rank order): the per-architecture view."""
    single = library.choice("single", candidates[:1])
    greedy, curve = _greedy(library, candidates, with_curve=with_curve)
    headline = greedy if greedy.size > 1 and _beats(greedy, single) else single
    return headline, single, greedy, curve


def halves(size: int) -> tuple[np.ndarray, np.ndarray]:
    """The validation images split in two, alternately (both halves span the whole split)."""
    positions = np.arange(size)
    return positions[0::2], positions[1::2]


def _select(library: _Library, rule: str, images: np.ndarray, top_k: int) -> Counter[int]:
    """The members `rule` picks when it sees only the validation images `images`."""
    labels = library.labels.validation(library.val.shape[1])[images]
    correct = (library.val[:, images].argmax(axis=2) == labels).mean(axis=1)
    loss = _loss(library.picked[:, images].astype(np.float32))
    order = sorted(range(len(library)), key=lambda i: (-correct[i], loss[i], i))
    if rule == "single":
        return Counter(order[:1])
    if rule == "top-k":
        return Counter(order[:top_k])
    sequence, length = greedy_sequence(library.picked[:, images], order)
    return Counter(sequence[:length])


def held_out_accuracy(library: _Library, top_k: int) -> dict[str, float]:
    """Each rule selects on one half of the validation images and is scored on the other, both
    ways: the share of validation images it gets right without having chosen on them."""
    first, second = halves(library.val.shape[1])
    labels = library.labels.validation(library.val.shape[1])
    found = {}
    for rule in RULES:
        right = 0
        for seen, unseen in ((first, second), (second, first)):
            weights = _select(library, rule, seen, top_k)
            mean = sum(library.val[i][unseen] * float(w) for i, w in weights.items())
            right += int((np.asarray(mean).argmax(axis=1) == labels[unseen]).sum())
        found[rule] = right / len(labels)
    return found


def find_ensembles(runs: pd.DataFrame, labels: Labels, top_k: int) -> EnsembleFindings | None:
    """Every ensemble view of the completed runs; None when no run has usable probabilities."""
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    problems: list[str] = []
    library = _library(runs, labels, problems)
    if library is None:
        return None
    everything = list(range(len(library)))
    single = library.choice("single", everything[:1])
    greedy, greedy_curve = _greedy(library, everything)
    top, top_curve = _top_k(library, top_k)
    held_out = held_out_accuracy(library, top_k)
    winner = max(RULES, key=lambda rule: (held_out[rule], -RULES.index(rule)))
    headline = {"single": single, "top-k": top, "greedy": greedy}[winner]
    four = (
        library.choice(f"{FOUR_MODELS}-model average", everything[:FOUR_MODELS])
        if len(library) >= FOUR_MODELS
        else None
    )
    return EnsembleFindings(
        headline=headline,
        best_single=single,
        greedy=greedy,
        greedy_curve=greedy_curve,
        top_k=top,
        top_k_curve=top_curve,
        per_architecture=_per_architecture(library),
        helps=headline.size > 1,
        held_out=held_out,
        four_models=four,
        problems=problems,
        requested_top_k=top_k,
        library_size=len(library),
    )


def _per_architecture(library: _Library) -> dict[str, dict[str, Any]]:
    """Each architecture's own headline (greedy within its runs, or its best single run)."""
    by_arch: dict[str, list[int]] = {}
    for index, row in enumerate(library.rows):
        by_arch.setdefault(str(row.get("arch", "")), []).append(index)
    found = {}
    for arch, candidates in sorted(by_arch.items()):
        headline, single, _, _ = _headline(library, candidates, with_curve=False)
        found[arch] = {
            **headline.scores(),
            "helps": headline.method != "single",
            "single_val_accuracy": single.val_accuracy,
            "single_test_accuracy": single.test_accuracy,
            "members": [member.cell_name for member in headline.members],
            "weights": [member.weight for member in headline.members],
        }
    return found


# --- ensemble.json ---------------------------------------------------------------------------


def _described(choice: EnsembleChoice | None) -> dict[str, Any] | None:
    if choice is None:
        return None
    return {**choice.scores(), "members": [asdict(member) for member in choice.members]}


def summary(findings: EnsembleFindings) -> dict[str, Any]:
    """What ensemble.json holds; the top-level scores are the headline's."""
    headline = findings.headline
    return {
        **headline.scores(),
        "helps": findings.helps,
        "selection": SELECTION,
        "held_out_accuracy": findings.held_out,
        "four_models": _described(findings.four_models),
        "library_size": findings.library_size,
        "members": [asdict(member) for member in headline.members],
        "best_single": _described(findings.best_single),
        "greedy": _described(findings.greedy),
        "greedy_curve": findings.greedy_curve.to_dict(orient="records"),
        "requested_top_k": findings.requested_top_k,
        "top_k": _described(findings.top_k),
        "top_k_curve": findings.top_k_curve.to_dict(orient="records"),
        "per_architecture": findings.per_architecture,
        "problems": findings.problems,
    }


def write(sweep_dir: Path, findings: EnsembleFindings) -> Path:
    record = records.EnsembleRecord.model_validate(summary(findings))
    return records.write(SweepLayout(sweep_dir).ensemble, record)
