"""`archive --with-resume-points`: an unfinished cell travels with its last committed epoch, so a
relaunch from the extracted folder goes on from there; a damaged resume point in an archive is
refused like any damaged record, and no other checkpoint name gets in."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from test_archive_extract import members_of, refused, write_tar
from test_train import interrupt_after_committing

from mnistsweep.__main__ import main
from mnistsweep.analysis import archive, extract
from mnistsweep.errors import MnistsweepError
from mnistsweep.sweep import guard, records
from mnistsweep.sweep.layout import RunLayout, SweepLayout
from mnistsweep.sweep.spec import parse_spec
from mnistsweep.train import trainer


@pytest.fixture(scope="module")
def half_trained(tmp_path_factory, mnist_dir):
    """A recorded one-cell sweep (3 epochs) killed right after committing its first epoch."""
    root = tmp_path_factory.mktemp("half")
    document = {
        "name": "half",
        "grid": {"seed": [0]},
        "train": {"arch": "linear", "epochs": 3, "train_subset": 300},
    }
    spec = parse_spec(document, root / "half.yaml")
    (root / "half.yaml").write_text(yaml.safe_dump(document))
    layout = SweepLayout(root / "results" / "half")
    guard.record_spec(layout, spec)
    cell = spec.cells()[0]
    with pytest.MonkeyPatch.context() as patch:
        interrupt_after_committing(patch, epochs=1)
        with pytest.raises(KeyboardInterrupt):
            trainer.run_cell(cell, layout.run(cell).root, mnist_dir)
    return layout, cell


def run_members(path: Path) -> set[str]:
    with tarfile.open(path) as bundle:
        return {name.split("/", 3)[3] for name in bundle.getnames() if name.count("/") == 3}


@pytest.mark.slow
def test_an_unfinished_cell_resumes_from_its_archived_epoch(tmp_path, half_trained, mnist_dir):
    layout, cell = half_trained
    state = records.read(records.RunState, layout.run(cell).state)
    assert state is not None and state.epochs_done == 1 and state.checkpoint
    plain, _ = archive.archive(layout.root, tmp_path / "plain.tar.xz")
    assert run_members(plain) <= set(RunLayout.RESULT_FILES)
    resumable, _ = archive.archive(layout.root, tmp_path / "r.tar.xz", with_resume_points=True)
    assert {"state.json", state.checkpoint} <= run_members(resumable)

    elsewhere = tmp_path / "elsewhere"
    assert main(["archive", "--extract", str(resumable), "--results-dir", str(elsewhere)]) == 0
    moved = SweepLayout(elsewhere / "half").run(cell)
    result = trainer.run_cell(cell, moved.root, mnist_dir)
    assert result["resumed_at_epochs"] == [1]
    assert result["metrics"]["epochs_run"] == 3


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["not json", "wrong type", "truncated"])
def test_an_archive_with_a_damaged_resume_point_is_refused_whole(
    tmp_path, half_trained, capsys, damage
):
    layout, _ = half_trained
    path, _ = archive.archive(layout.root, tmp_path / "r.tar.xz", with_resume_points=True)
    members = members_of(path)
    index = next(i for i, (name, _) in enumerate(members) if name.endswith("/state.json"))
    name, content = members[index]
    members[index] = (
        name,
        {
            "not json": b"{epochs_done",
            "wrong type": content.replace(b'"epochs_done": 1', b'"epochs_done": "one"'),
            "truncated": content[: len(content) // 2],
        }[damage],
    )
    forged = write_tar(tmp_path / "forged.tar", members)
    assert "state.json" in refused(capsys, tmp_path / "results", forged, before={})


ASCII_NAME = st.text(st.characters(codec="ascii", exclude_characters="/\\"), min_size=1)
NEAR_MISSES = st.from_regex(
    r"(checkpoint|best)-[0-9a-z]{3,5}\.(npz|keras|h5)|state\.json.?", fullmatch=True
)


@given(name=st.one_of(ASCII_NAME, NEAR_MISSES, st.sampled_from(RunLayout.RESULT_FILES)))
def test_only_the_run_files_a_sweep_folder_holds_are_let_in(name):
    """Checkpoint names other than a resume point's (checkpoint-NNNN.npz) are refused."""
    allowed = (
        name in RunLayout.RESULT_FILES + RunLayout.MODEL_FILES
        or name == "state.json"
        or (
            len(name) == len("checkpoint-0000.npz")
            and name.startswith("checkpoint-")
            and name.endswith(".npz")
            and name[11:15].isdigit()
            and name[11:15].isascii()
        )
    )
    try:
        extract._allowed(Path("a.tar.xz"), f"runs/cell/{name}")
    except MnistsweepError:
        assert not allowed
    else:
        assert allowed
