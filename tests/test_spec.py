"""Spec loading: the grid it expands to, stable cell ids, and one clear error per bad input."""

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnistsweep.errors import MnistsweepError
from mnistsweep.sweep.spec import (
    MAX_CELLS,
    TRAIN_SETTINGS,
    GridBlock,
    SpecError,
    TrainConfig,
    load_spec,
    parse_spec,
)

REPO = Path(__file__).resolve().parents[1]


def write_spec(tmp_path: Path, document) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document))
    return path


def minimal(**overrides):
    document = {
        "name": "t",
        "grid": {"arch": ["linear", "mlp"], "seed": [0, 1, 2]},
        "train": {"epochs": 1},
    }
    document.update(overrides)
    return document


def test_grid_expands_to_cartesian_product_with_every_train_key(tmp_path):
    spec = load_spec(write_spec(tmp_path, minimal()))
    cells = spec.cells()
    assert spec.size == len(cells) == 6
    assert {(c.config["arch"], c.config["seed"]) for c in cells} == {
        (a, s) for a in ("linear", "mlp") for s in (0, 1, 2)
    }
    for cell in cells:
        assert set(cell.config) == set(TRAIN_SETTINGS)
        assert cell.config["epochs"] == 1
        assert cell.config["batch_size"] == TRAIN_SETTINGS["batch_size"].default


def test_cell_ids_are_stable_unique_and_names_readable(tmp_path):
    first = load_spec(write_spec(tmp_path, minimal())).cells()
    second = load_spec(write_spec(tmp_path, minimal())).cells()
    assert [c.id for c in first] == [c.id for c in second]
    assert len({c.id for c in first}) == len(first)
    assert first[0].name == "arch=linear,seed=0"
    assert first[0].dirname.endswith(first[0].id)


def test_cells_are_computed_once_but_handed_out_as_a_new_list(tmp_path):
    spec = load_spec(write_spec(tmp_path, minimal()))
    first = spec.cells()
    first.pop()
    assert len(spec.cells()) == 6 and spec.cells() is not spec.cells()
    # the cached ids are the ids of the configs
    fresh = load_spec(write_spec(tmp_path, minimal())).cells()
    assert [c.id for c in spec.cells()] == [c.id for c in fresh]
    assert len({c.id for c in fresh}) == 6


def test_same_config_same_id_whether_fixed_or_an_axis(tmp_path):
    as_axis = parse_spec({"name": "a", "grid": {"epochs": [2]}}, Path("a.yaml")).cells()[0]
    as_fixed = parse_spec({"name": "b", "train": {"epochs": 2}}, Path("b.yaml")).cells()[0]
    assert as_axis.id == as_fixed.id


def test_any_train_key_can_be_an_axis_and_augment_booleans_are_names(tmp_path):
    spec = parse_spec({"name": "a", "grid": {"augment": [False, True]}}, Path("a.yaml"))
    assert [c.config["augment"] for c in spec.cells()] == ["none", "standard"]


def test_shipped_sweeps_are_valid():
    for path in sorted((REPO / "sweeps").glob("*.yaml")):
        spec = load_spec(path)
        assert spec.size >= 1, path


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (minimal(grid={"arch": ["resnet"]}), ["grid.arch[0]", "'resnet'", "fancy_cnn", "linear"]),
        (minimal(train={"epochs": "ten"}), ["train.epochs", "'ten'", "integer in [1, 10000]"]),
        (minimal(train={"epochs": True}), ["train.epochs", "True"]),
        (minimal(train={"epoch": 3}), ["train.epoch", "did you mean 'epochs'"]),
        (minimal(grid={"dropout": []}), ["grid.dropout", "empty"]),
        (minimal(grid={"dropout": 0.5}), ["grid.dropout", "must be a list"]),
        (minimal(grid={"seed": [0, 0]}), ["grid.seed", "repeats 0"]),
        (minimal(grid={"normalization": ["zscore"]}), ["grid.normalization[0]", "standardize"]),
        (minimal(train={"learning_rate": -1}), ["train.learning_rate", "(0.0, 10.0]"]),
        (minimal(train={"dropout": 1.5}), ["train.dropout", "[0.0, 0.9]"]),
        (
            minimal(train={"seed": 1}, grid={"seed": [1, 2]}),
            ["grid.seed", "also fixed in train.seed"],
        ),
        (minimal(name="../escape"), ["name", "folder name"]),
        (minimal(name=None), ["name"]),
        (minimal(executor={"backend": "kubernetes"}), ["executor.backend", "auto, local, slurm"]),
        (minimal(executor={"slurm": {"gpus": 1}}), ["executor.slurm.gpus", "gpus_per_node"]),
        (minimal(executor={"slurm": {"timeout_min": 0}}), ["executor.slurm.timeout_min"]),
        (minimal(ensemble={"top_k": 0}), ["ensemble.top_k"]),
        (minimal(extra=1), ["extra", "allowed: name, grid, train, executor, ensemble"]),
        ([1, 2], ["(top level)", "mapping"]),
    ],
)
def test_bad_specs_name_file_key_and_allowed_values(tmp_path, document, expected):
    path = write_spec(tmp_path, document)
    with pytest.raises(SpecError) as raised:
        load_spec(path)
    message = str(raised.value)
    assert message.startswith(str(path))
    assert "\n" not in message
    for fragment in expected:
        assert fragment in message


def test_malformed_yaml_names_line(tmp_path):
    path = write_spec(tmp_path, "name: t\ngrid: {arch: [linear\n")
    with pytest.raises(SpecError, match=r"malformed YAML at line \d+"):
        load_spec(path)


def test_missing_file_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match="cannot read spec"):
        load_spec(tmp_path / "nope.yaml")


def test_huge_grid_refused_unless_allowed(tmp_path):
    document = minimal(grid={"seed": list(range(MAX_CELLS + 1))})
    path = write_spec(tmp_path, document)
    with pytest.raises(SpecError, match="above the limit"):
        load_spec(path)
    assert load_spec(path, allow_large=True).size == MAX_CELLS + 1


values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 100),
    st.floats(allow_nan=True),
    st.text(max_size=8),
    st.lists(st.integers(0, 3), max_size=3),
)
documents = st.one_of(
    values,
    st.dictionaries(
        st.sampled_from(["name", "grid", "train", "executor", "ensemble", "bogus"]),
        st.one_of(
            values,
            st.dictionaries(
                st.sampled_from([*TRAIN_SETTINGS, "backend", "slurm", "top_k", "x"]),
                st.one_of(values, st.lists(values, max_size=3)),
                max_size=4,
            ),
        ),
        max_size=5,
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_random_specs_are_accepted_or_rejected_with_our_error(document):
    try:
        spec = parse_spec(document, Path("random.yaml"))
    except MnistsweepError as error:
        assert str(error).startswith("random.yaml: ")
    else:
        cells = spec.cells()
        assert len({cell.id for cell in cells}) == len(cells) >= 1
        for cell in cells[:5]:  # every cell is itself a valid spec, with the same id
            again = parse_spec({"name": "again", "train": dict(cell.config)}, Path("again.yaml"))
            assert again.cells()[0].id == cell.id


def test_a_list_of_grids_is_the_union_of_their_products(tmp_path):
    document = {
        "name": "u",
        "grid": [
            {"arch": ["linear", "mlp"], "normalization": ["raw", "standardize"]},
            {"arch": ["fancy_cnn"], "augment": ["none", "standard"], "epochs": [30]},
            {"arch": ["linear"], "normalization": ["raw"]},  # repeats a cell of the first grid
        ],
    }
    spec = parse_spec(document, tmp_path / "u.yaml")
    cells = spec.cells()
    assert spec.size == len(cells) == 6
    assert spec.axes == ("arch", "normalization", "augment", "epochs")
    fancy = [c for c in cells if c.config["arch"] == "fancy_cnn"]
    assert {c.config["augment"] for c in fancy} == {"none", "standard"}
    assert all(
        c.config["epochs"] == 30 and c.config["normalization"] == "standardize" for c in fancy
    )
    assert spec.axis_values["epochs"] == [20, 30]


def test_errors_in_a_grid_of_the_list_name_its_index(tmp_path):
    document = {"name": "u", "grid": [{"arch": ["linear"]}, {"arch": ["resnet"]}]}
    with pytest.raises(SpecError, match=r"grid\[1\]\.arch\[0\]: got 'resnet'"):
        parse_spec(document, tmp_path / "u.yaml")


def test_grid_axes_and_train_settings_come_from_one_schema():
    """A train key added to TrainConfig must also be a grid axis (GridBlock), with its type;
    a block's only other key is its `label`."""
    axes = [key for key in GridBlock.model_fields if key != "label"]
    assert axes == list(TrainConfig.model_fields) == list(TRAIN_SETTINGS)
    assert TRAIN_SETTINGS["seed"].check(3) == 3
    with pytest.raises(ValueError):
        TRAIN_SETTINGS["seed"].check(True)


def test_values_are_canonical_as_before(tmp_path):
    """Cell ids hash the config: an int given for a number stays a float, `true` a name."""
    spec = parse_spec(
        {"name": "c", "train": {"learning_rate": 1, "dropout": 0, "augment": True}},
        Path("c.yaml"),
    )
    assert spec.train == {"learning_rate": 1.0, "dropout": 0.0, "augment": "standard"}
    assert [type(value) for value in spec.train.values()] == [float, float, str]


def test_null_sections_mean_defaults():
    document = {"name": "n", "grid": None, "train": None, "executor": {"slurm": None}}
    spec = parse_spec({**document, "ensemble": None}, Path("n.yaml"))
    assert spec.size == 1 and spec.ensemble_top_k == 4
    assert spec.executor.slurm.additional == {}


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"nmae": "x"}, "n.yaml: nmae: unknown key (did you mean 'name'?); allowed: name, grid"),
        (
            {"name": "x", "executor": {"slurm": {"partiton": "a", "qos": 1}}},
            "executor.slurm.partiton: unknown key (did you mean 'partition'?)",
        ),
        ({"name": "x", "grid": [{"seed": [0]}, {"sed": [1]}]}, "grid[1].sed: unknown key"),
        ({"name": "x", "ensemble": {1: 2}}, "n.yaml: ensemble.1: unknown key; allowed: top_k"),
        ({"name": "x", "executor": {"slurm": []}}, "executor.slurm: must be a mapping, got list"),
        ({"name": "x", "grid": [[1]]}, "n.yaml: grid[0]: must be a mapping, got list"),
        ({"name": "x" * 65}, "name: got 'xxxxx"),
        ({}, "n.yaml: name: missing; expected 1-64 letters"),
    ],
)
def test_first_problem_is_one_line_in_the_schema_words(document, expected):
    with pytest.raises(SpecError) as raised:
        parse_spec(document, Path("n.yaml"))
    assert expected in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_block_label_names_a_study_and_changes_no_cell_id_or_fingerprint():
    grid = [{"arch": ["linear", "mlp"], "seed": [0, 1]}, {"arch": ["mlp"], "seed": [2]}]
    plain = parse_spec({"name": "l", "grid": grid}, Path("l.yaml"))
    labelled = parse_spec(
        {"name": "l", "grid": [{"label": "arch study", **grid[0]}, grid[1]]}, Path("l.yaml")
    )
    assert labelled.labels == ("arch study", None)
    assert [cell.id for cell in labelled.cells()] == [cell.id for cell in plain.cells()]
    assert [cell.name for cell in labelled.cells()] == [cell.name for cell in plain.cells()]
    assert labelled.results_fingerprint() == plain.results_fingerprint()
    assert [cell.block for cell in labelled.cells()] == [0, 0, 0, 0, 1]


@pytest.mark.parametrize("label", [3, "", "two\nlines", "x" * 81, ["a"]])
def test_a_bad_block_label_is_one_line_naming_it(label):
    with pytest.raises(SpecError) as error:
        parse_spec({"name": "l", "grid": [{"label": label, "arch": ["mlp"]}]}, Path("l.yaml"))
    message = str(error.value)
    assert "\n" not in message and "grid[0].label:" in message
    assert "single-line string" in message
