"""Sweep archives: results in, models and event files out, and a hostile archive never extracted."""

import io
import json
import tarfile
from pathlib import Path

import fake_sweeps
import numpy as np
import pandas as pd
import pytest

from mnistsweep.__main__ import main
from mnistsweep.analysis import archive, ensemble, extract, runs
from mnistsweep.errors import MnistsweepError
from mnistsweep.sweep import records
from mnistsweep.sweep.layout import RunLayout, SweepLayout

VAL_SIZE, TEST_SIZE = 6000, 10000


def make_sweep(root: Path, name: str = "small", runs_count: int = 4, learning_rate: float = 1e-3):
    """A recorded sweep of `runs_count` real cells (arch alternating, seed = index), each run."""
    layout = SweepLayout(root / name)
    blocks = [{"arch": [["linear", "mlp"][i % 2]], "seed": [i]} for i in range(runs_count)]
    cells = fake_sweeps.record_sweep(layout.root, blocks, learning_rate=learning_rate)
    layout.spec_copy.write_text(f"name: {name}\n")
    generator = np.random.default_rng(0)
    for index, cell in enumerate(cells):
        run = layout.run(cell)
        result = records.RunResult(
            status="completed",
            cell_id=cell.id,
            cell_name=cell.name,
            config=dict(cell.config),
            metrics=records.RunMetrics(
                test_accuracy=0.9 + index / 100,
                best_val_accuracy=0.91 + index / 100,
                best_val_loss=0.3,
                test_loss=0.3,
                best_epoch=0,
                epochs_run=1,
            ),
        )
        records.write(run.result, result)
        run.history.write_text(json.dumps({"val_accuracy": [0.9]}))
        run.summary.write_text("python -m mnistsweep train\n")
        for path, size in ((run.val_probs, VAL_SIZE), (run.test_probs, TEST_SIZE)):
            np.save(path, generator.dirichlet(np.ones(10), size).astype(np.float32))
        run.model.write_bytes(b"model" * 1000)
        (run.tensorboard / "train").mkdir(parents=True)
        (run.tensorboard / "train" / "events.out.tfevents.1").write_bytes(b"event")
        run.checkpoint_after(1).write_bytes(b"checkpoint")
    layout.report_md.write_text("# report\n")
    layout.report_files.mkdir()
    (layout.report_files / "table.csv").write_text("a,b\n1,2\n")
    return layout


def names_in(path: Path) -> list[str]:
    with tarfile.open(path) as bundle:
        return bundle.getnames()


def test_the_archive_holds_results_and_leaves_models_and_event_files_out(tmp_path):
    layout = make_sweep(tmp_path / "results")
    path = archive.archive(layout.root)[0]
    assert path == tmp_path / "results" / "small.tar.xz"
    names = names_in(path)
    assert "small/sweep.json" in names and "small/report_files/table.csv" in names
    run_files = {Path(name).name for name in names if "/runs/" in name}
    assert run_files == {"result.json", "history.json", "summary.txt"} | set(
        RunLayout.PROBABILITY_FILES
    )
    with_everything = archive.archive(
        layout.root, tmp_path / "all.tar.xz", with_models=True, with_tensorboard=True
    )[0]
    names = names_in(with_everything)
    assert any(name.endswith("model.keras") for name in names)
    assert any("tfevents" in name for name in names)
    assert not any("checkpoint" in name for name in names)


def test_probabilities_travel_as_float16_and_come_back_as_float32(tmp_path):
    layout = make_sweep(tmp_path / "results")
    path = archive.archive(layout.root)[0]
    with tarfile.open(path) as bundle:
        member = next(name for name in bundle.getnames() if name.endswith("probs_test.npy"))
        stream = bundle.extractfile(member)
        assert stream is not None
        assert np.load(io.BytesIO(stream.read())).dtype == np.float16
    extracted = extract.extract(path, tmp_path / "elsewhere")
    original = layout.run_folders()[0]
    copy = SweepLayout(extracted.sweep_dir).run_named(original.root.name)
    back = np.load(copy.test_probs)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, np.load(original.test_probs), atol=1e-3)


def test_an_extracted_sweep_gives_the_same_tables_and_ensemble(tmp_path):
    layout = make_sweep(tmp_path / "results", runs_count=6)
    path = archive.archive(layout.root)[0]
    copy = extract.extract(path, tmp_path / "elsewhere").sweep_dir
    assert copy == tmp_path / "elsewhere" / "small"
    assert main(["aggregate", str(layout.root)]) == 0
    assert main(["aggregate", str(copy)]) == 0
    original_table = pd.read_csv(layout.summary_csv)
    pd.testing.assert_frame_equal(original_table, pd.read_csv(SweepLayout(copy).summary_csv))
    generator = np.random.default_rng(1)
    labels = ensemble.Labels(generator.integers(0, 10, 60000), generator.integers(0, 10, 10000))
    first = ensemble.find_ensembles(runs.load_runs(layout.root).frame, labels, 3)
    second = ensemble.find_ensembles(runs.load_runs(copy).frame, labels, 3)
    assert first is not None and second is not None
    assert [m.cell_name for m in first.headline.members] == [
        m.cell_name for m in second.headline.members
    ]
    assert second.headline.test_accuracy == pytest.approx(first.headline.test_accuracy, abs=1e-3)


def test_the_command_line_archives_and_extracts(tmp_path, capsys):
    layout = make_sweep(tmp_path / "results")
    out = tmp_path / "bundle.tar.xz"
    assert main(["archive", str(layout.root), "-o", str(out)]) == 0
    assert out.is_file()
    target = tmp_path / "other"
    assert main(["archive", "--extract", str(out), "--results-dir", str(target)]) == 0
    assert "extracted" in capsys.readouterr().out
    assert (target / "small" / "sweep.json").is_file()
    assert main(["archive"]) == 2
    assert "give a sweep folder" in capsys.readouterr().err
    assert main(["archive", str(tmp_path / "nothing")]) == 2


def test_extracting_over_another_specs_sweep_is_refused(tmp_path, capsys):
    path = archive.archive(make_sweep(tmp_path / "a", learning_rate=0.001).root)[0]
    other = make_sweep(tmp_path / "b", learning_rate=0.01)
    before = other.record.read_text()
    assert main(["archive", "--extract", str(path), "--results-dir", str(tmp_path / "b")]) == 2
    assert "another spec" in capsys.readouterr().err
    assert other.record.read_text() == before


def test_extracting_over_the_same_spec_keeps_every_file_there(tmp_path):
    layout = make_sweep(tmp_path / "a")
    path = archive.archive(layout.root)[0]
    target = make_sweep(tmp_path / "b")
    result = target.run_folders()[0].result
    result.write_text(result.read_text().replace("0.9", "0.8"))
    changed = result.read_text()
    extracted = extract.extract(path, tmp_path / "b")
    assert extracted.added == 0 and extracted.kept == 4
    assert result.read_text() == changed


def hostile(path: Path, *members: tuple[tarfile.TarInfo, bytes]) -> Path:
    with tarfile.open(path, "w:xz") as bundle:
        sweep_json = json.dumps({"name": "x", "axes": []}).encode()
        info = tarfile.TarInfo("x/sweep.json")
        info.size = len(sweep_json)
        bundle.addfile(info, io.BytesIO(sweep_json))
        for info, content in members:
            bundle.addfile(info, io.BytesIO(content) if info.isfile() else None)
    return path


def file_member(name: str, content: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(content)
    return info, content


def link_member(name: str, target: str, kind: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, b""


@pytest.mark.parametrize(
    "member, why",
    [
        (file_member("x/../../escaped.txt"), "unsafe member path"),
        (file_member("/tmp/absolute.txt"), "unsafe member path"),
        (file_member("x/runs/cell/../../../up.json"), "unsafe member path"),
        (link_member("x/runs/cell/result.json", "/etc/passwd", tarfile.SYMTYPE), "a link"),
        (link_member("x/runs/cell/history.json", "x/sweep.json", tarfile.LNKTYPE), "a link"),
        (link_member("x/dev", "", tarfile.CHRTYPE), "a link or a device"),
        (file_member("x/runs/cell/evil.sh"), "no file of a sweep folder"),
        (file_member("y/sweep.json"), "one sweep folder"),
    ],
)
def test_a_hostile_archive_is_refused_and_writes_nothing(tmp_path, member, why):
    path = hostile(tmp_path / "hostile.tar.xz", member)
    target = tmp_path / "target"
    with pytest.raises(MnistsweepError, match=why):
        extract.extract(path, target)
    assert not target.exists()
    assert not (tmp_path / "escaped.txt").exists() and not Path("/tmp/absolute.txt").exists()


def test_an_archive_over_the_size_cap_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(extract, "MAX_TOTAL_BYTES", 1000)
    path = hostile(tmp_path / "big.tar.xz", file_member("x/report.md", b"0" * 5000))
    with pytest.raises(MnistsweepError, match="cap"):
        extract.extract(path, tmp_path / "target")
    assert not (tmp_path / "target").exists()


def test_a_file_that_is_no_archive_is_one_line(tmp_path, capsys):
    bogus = tmp_path / "bogus.tar.xz"
    bogus.write_bytes(b"not an archive")
    assert main(["archive", "--extract", str(bogus), "--results-dir", str(tmp_path)]) == 2
    assert "not a readable sweep archive" in capsys.readouterr().err


@pytest.mark.slow
def test_report_regenerates_from_an_extracted_sweep(tmp_path, mnist_dir):
    layout = make_sweep(tmp_path / "results")
    copy = extract.extract(archive.archive(layout.root)[0], tmp_path / "elsewhere").sweep_dir
    assert main(["report", str(copy), "--data-dir", str(mnist_dir)]) == 0
    assert SweepLayout(copy).report_html.is_file()


def test_an_empty_folder_of_the_sweeps_name_is_extracted_into(tmp_path):
    path = archive.archive(make_sweep(tmp_path / "a").root)[0]
    (tmp_path / "b" / "small").mkdir(parents=True)
    extracted = extract.extract(path, tmp_path / "b")
    assert extracted.added == 4 and (tmp_path / "b" / "small" / "sweep.json").is_file()


def test_a_results_dir_that_is_a_link_to_a_larger_disk_is_extracted_into(tmp_path):
    path = archive.archive(make_sweep(tmp_path / "a").root)[0]
    (tmp_path / "disk").mkdir()
    (tmp_path / "results").symlink_to(tmp_path / "disk")
    extracted = extract.extract(path, tmp_path / "results")
    assert extracted.added == 4 and (tmp_path / "disk" / "small" / "sweep.json").is_file()
