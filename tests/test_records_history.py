"""history.json and ensemble.json through their typed records: what is written reads back the
same (non-finite losses included), and a file of the wrong shape is a DamagedRecord."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mnistsweep.sweep import records

metric_lists = st.dictionaries(
    st.sampled_from(["loss", "accuracy", "val_loss", "val_accuracy", "seconds"]),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=6),
)


def same(left: dict[str, list[float]], right: dict[str, list[float]]) -> bool:
    return left.keys() == right.keys() and all(
        len(left[key]) == len(right[key])
        and all(
            a == b or (math.isnan(a) and math.isnan(b))
            for a, b in zip(left[key], right[key], strict=True)
        )
        for key in left
    )


@given(history=metric_lists)
def test_a_history_reads_back_as_written(tmp_path_factory, history):
    path = tmp_path_factory.mktemp("run") / "history.json"
    records.write(path, records.RunHistory(history))
    found = records.read(records.RunHistory, path)
    assert found is not None and same(found.root, history)


@pytest.mark.parametrize(
    "content",
    ['["loss"]', '{"loss": 0.5}', '{"loss": [true, false]}', '{"loss": ["0.5"]}', "{"],
)
def test_a_history_of_the_wrong_shape_is_damaged(tmp_path, content):
    path = tmp_path / "history.json"
    path.write_text(content)
    with pytest.raises(records.DamagedRecord, match=r"history\.json"):
        records.read(records.RunHistory, path)


def test_the_ensemble_record_reads_back_as_written(tmp_path):
    member = {
        "run_dir": "runs/a",
        "cell_name": "arch=mlp,seed=0",
        "arch": "mlp",
        "weight": 2,
        "best_val_accuracy": 0.98,
        "test_accuracy": 0.97,
    }
    scores = {"method": "greedy", "size": 1, "val_accuracy": 0.98, "val_loss": math.inf}
    scores |= {"test_accuracy": 0.97, "test_loss": 0.1}
    content = {
        **scores,
        "members": [member],
        "helps": True,
        "selection": "rules",
        "greedy": {**scores, "members": [member]},
        "greedy_curve": [{"step": 1, "size": 1, "val_loss": math.nan}],
        "per_architecture": {
            "mlp": {**scores, "helps": False, "single_val_accuracy": 0.9},
        },
    }
    content["per_architecture"]["mlp"] |= {"single_test_accuracy": 0.9}
    content["per_architecture"]["mlp"] |= {"members": ["arch=mlp,seed=0"], "weights": [2]}
    path = records.write(tmp_path / "ensemble.json", records.EnsembleRecord.model_validate(content))
    found = records.read(records.EnsembleRecord, path)
    assert found is not None and found.greedy is not None
    assert found.greedy.members[0].weight == 2 and found.greedy_curve[0]["step"] == 1
    assert math.isnan(found.greedy_curve[0]["val_loss"]) and math.isinf(found.val_loss)
    assert json.loads(path.read_text(), parse_constant=float)["members"][0] == member
