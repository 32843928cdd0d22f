"""The archive's run-folder files come from one list (RunLayout): every file a run folder holds is
archived, archived on request, or deliberately left out, so a new file is never silently lost."""

from __future__ import annotations

import fnmatch
import tarfile
from pathlib import PurePosixPath

import pytest
import yaml

from mnistsweep.__main__ import main
from mnistsweep.analysis import archive
from mnistsweep.sweep import guard
from mnistsweep.sweep.layout import RunLayout, SweepLayout
from mnistsweep.sweep.spec import parse_spec

TINY = {"arch": "linear", "epochs": 1, "train_subset": 100}


def classified(relative: str) -> str | None:
    """Where a run folder's file (path inside the folder) stands, None when nowhere."""
    first = PurePosixPath(relative).parts[0]
    if relative in RunLayout.RESULT_FILES:
        return "archived"
    if relative in RunLayout.MODEL_FILES:
        return "with models"
    if first == RunLayout.TENSORBOARD:
        return "with tensorboard"
    if RunLayout.is_resume_file(first):
        return "with resume points"
    if any(fnmatch.fnmatchcase(first, pattern) for pattern in RunLayout.NOT_ARCHIVED):
        return "not archived"
    return None


def test_every_file_the_run_layout_names_is_classified(tmp_path):
    run = RunLayout(tmp_path / "run")
    named = [
        getattr(run, name)
        for name, member in vars(RunLayout).items()
        if isinstance(member, property)
    ]
    named += [run.checkpoint_after(3), run.best_weights_of(2), run.training_state_after(1)]
    named.append(run.failed_attempt(run.result, "20260101-000000"))
    unclassified = [path.name for path in named if classified(path.name) is None]
    assert not unclassified, f"add these to a RunLayout list: {unclassified}"
    assert set(RunLayout.PROBABILITY_FILES) <= set(RunLayout.RESULT_FILES)


@pytest.mark.slow
def test_every_file_of_a_trained_run_folder_is_archived_or_deliberately_left_out(
    tmp_path, mnist_dir
):
    document = {"name": "one", "grid": {"seed": [0]}, "train": TINY}
    spec_path = tmp_path / "one.yaml"
    spec_path.write_text(yaml.safe_dump(document))
    spec = parse_spec(document, spec_path)
    layout = SweepLayout(tmp_path / "results" / "one")
    guard.record_spec(layout, spec)
    run = layout.run(spec.cells()[0])
    cell = ["--spec", str(spec_path), "--cell", spec.cells()[0].id]
    assert main(["train", *cell, "--out", str(run.root), "--data-dir", str(mnist_dir)]) == 0
    held = sorted(
        path.relative_to(run.root).as_posix() for path in run.root.rglob("*") if path.is_file()
    )
    kinds = {relative: classified(relative) for relative in held}
    assert None not in kinds.values(), f"unclassified run-folder files: {kinds}"
    path, foreign = archive.archive(
        layout.root,
        tmp_path / "all.tar.xz",
        with_models=True,
        with_tensorboard=True,
        with_resume_points=True,
    )
    assert foreign is None
    with tarfile.open(path) as bundle:
        prefix = f"one/runs/{run.root.name}/"
        archived = sorted(n.removeprefix(prefix) for n in bundle.getnames() if n.startswith(prefix))
    # A finished cell needs no resume point: it is never archived, even when asked for.
    left_out = ("not archived", "with resume points")
    assert archived == sorted(r for r, kind in kinds.items() if kind not in left_out)
    assert {"result.json", "probs_val.npy", "model.keras"} <= set(archived)
