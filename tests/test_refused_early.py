"""Values that would break late (in the job, or as a traceback in a reader) are refused early: one
`error:` line and exit 2, at the spec's load or dry run, or where the sweep folder is first read."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mnistsweep
from mnistsweep.__main__ import main
from mnistsweep.sweep import records
from mnistsweep.sweep.layout import SweepLayout
from mnistsweep.sweep.spec import TRAIN_SETTINGS, parse_spec
from mnistsweep.vocabulary import ARCHITECTURE_NAMES

MNIST_TRAIN_IMAGES = 60_000
FIXTURES = [HealthCheck.function_scoped_fixture]


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def write_spec(path: Path, grid: dict, train: dict) -> Path:
    document = {"name": "early", "grid": grid, "train": train, "executor": {"backend": "local"}}
    path.write_text(yaml.safe_dump(document))
    return path


# --- a validation share that rounds to no image ------------------------------------------------

shares = st.one_of(
    st.floats(min_value=1e-300, max_value=1 / (2 * MNIST_TRAIN_IMAGES)),
    st.floats(min_value=1 / (2 * MNIST_TRAIN_IMAGES), max_value=0.5, exclude_min=True),
)


@settings(max_examples=12, deadline=None, suppress_health_check=FIXTURES)
@given(share=shares, in_grid=st.booleans())
def test_a_split_that_leaves_no_validation_image_is_refused_at_the_dry_run(
    tmp_path, capsys, share, in_grid
):
    """Refused exactly when the job would find no validation image (it rounds to images)."""
    grid = {"validation_split": [share]} if in_grid else {"seed": [0]}
    train = {"epochs": 1} if in_grid else {"epochs": 1, "validation_split": share}
    spec = write_spec(tmp_path / "early.yaml", grid, train)
    results = tmp_path / "results"
    command = ["launch", str(spec), "--dry-run", "--results-dir", str(results)]
    if round(MNIST_TRAIN_IMAGES * share) >= 1:
        assert main(command) == 0
        capsys.readouterr()
        return
    assert main(command) == 2
    line = one_error_line(capsys)
    key = "grid.validation_split[0]" if in_grid else "train.validation_split"
    assert f"{spec}: {key}: " in line and "no validation image" in line, line
    assert not results.exists()


# --- a sweep.json naming an unknown axis or value ----------------------------------------------


def recorded_sweep(root: Path) -> SweepLayout:
    """A sweep folder as a launch records it (sweep.json and spec.yaml), no runs yet."""
    document = {"name": "known", "grid": {"arch": ["linear", "mlp"], "seed": [0]}}
    spec = parse_spec(document, Path("known.yaml"))
    layout = SweepLayout(root / "known")
    records.write(
        layout.record,
        records.SweepRecord(
            name=spec.name,
            axes=list(spec.axes),
            fingerprint=spec.results_fingerprint(),
            spec_path="known.yaml",
            grid=[{axis: list(values) for axis, values in grid.items()} for grid in spec.grids],
            train=dict(spec.train),
            cells=spec.size,
        ),
    )
    layout.spec_copy.write_text(yaml.safe_dump(document))
    return layout


def edit_record(layout: SweepLayout, edit) -> None:
    content = json.loads(layout.record.read_text())
    edit(content)
    layout.record.write_text(json.dumps(content))


def every_reader_says_one_line(layout: SweepLayout, capsys, tmp_path: Path, *words: str) -> None:
    for command in (
        ["aggregate", str(layout.root)],
        ["report", str(layout.root)],
        ["status", str(layout.root)],
        ["archive", str(layout.root), "-o", str(tmp_path / "out.tar.xz")],
    ):
        assert main(command) == 2, command
        line = one_error_line(capsys)
        assert "sweep.json" in line and all(word in line for word in words), (command, line)
    assert not (tmp_path / "out.tar.xz").exists()


unknown_axis = st.text(st.characters(codec="utf-8"), min_size=1, max_size=20).filter(
    lambda name: name not in TRAIN_SETTINGS
)


@settings(max_examples=5, deadline=None, suppress_health_check=FIXTURES)
@given(axis=unknown_axis)
def test_a_record_naming_an_unknown_axis_is_one_line_in_every_reader(tmp_path, capsys, axis):
    layout = recorded_sweep(tmp_path / f"results-{abs(hash(axis))}")
    edit_record(layout, lambda content: content["axes"].append(axis))
    every_reader_says_one_line(layout, capsys, layout.root.parent, "axes", "no train key")


@settings(max_examples=5, deadline=None, suppress_health_check=FIXTURES)
@given(value=st.text(min_size=1, max_size=20).filter(lambda v: v not in ARCHITECTURE_NAMES))
def test_a_record_naming_an_unknown_value_is_one_line_in_every_reader(tmp_path, capsys, value):
    layout = recorded_sweep(tmp_path / f"results-{abs(hash(value))}")
    edit_record(layout, lambda content: content["grid"][0]["arch"].append(value))
    every_reader_says_one_line(layout, capsys, layout.root.parent, "arch")


@settings(max_examples=3, deadline=None, suppress_health_check=FIXTURES)
@given(axis=unknown_axis)
def test_a_launch_into_a_folder_whose_record_names_an_unknown_axis_is_one_line(
    tmp_path, capsys, axis
):
    """Only the spec kept beside the runs may launch into a folder with a damaged record."""
    layout = recorded_sweep(tmp_path / f"results-{abs(hash(axis))}")
    edit_record(layout, lambda content: content["axes"].append(axis))
    (layout.runs / "arch=linear,seed=0--000000000000").mkdir(parents=True)
    other = write_spec(tmp_path / "known.yaml", {"arch": ["vgg"]}, {"epochs": 1})
    other.write_text(other.read_text().replace("name: early", "name: known"))
    results = ["--results-dir", str(layout.root.parent)]
    assert main(["launch", str(other), "--dry-run", *results]) == 2
    line = one_error_line(capsys)
    assert "no train key" in line and "never mixed" in line, line


# --- a results folder inside the package a launch copies ---------------------------------------

PACKAGE = Path(mnistsweep.__file__).resolve().parent
QUICK = Path(__file__).resolve().parent.parent / "sweeps" / "quick.yaml"
component = st.text("abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=8).map(
    lambda name: f"zz_{name}"  # never an existing folder of the package
)


@settings(max_examples=6, deadline=None, suppress_health_check=FIXTURES)
@given(
    parts=st.lists(component, min_size=1, max_size=3),
    through=st.sampled_from(["flag", "environment", "link", "dotdot"]),
)
def test_a_results_folder_inside_the_package_is_refused_at_the_dry_run(
    tmp_path, capsys, monkeypatch, parts, through
):
    """Each SLURM launch copies the package for its jobs: results inside it would copy
    themselves into every copy (recursively)."""
    inside = PACKAGE.joinpath(*parts)
    results = {
        "flag": inside,
        "environment": inside,
        "link": tmp_path / f"link-{'-'.join(parts)}" / Path(*parts),
        "dotdot": PACKAGE / "sweep" / ".." / Path(*parts),
    }[through]
    link = tmp_path / f"link-{'-'.join(parts)}"  # a folder outside that is the package
    if through == "link" and not link.is_symlink():
        link.symlink_to(PACKAGE)
    command = ["launch", str(QUICK), "--dry-run", "--executor", "slurm"]
    if through == "environment":
        monkeypatch.setenv("MNISTSWEEP_RESULTS", str(results))
    else:
        command += ["--results-dir", str(results)]
    assert main(command) == 2
    line = one_error_line(capsys)
    assert "inside the package" in line and "--results-dir outside it" in line, line
    assert not (PACKAGE / parts[0]).exists()
