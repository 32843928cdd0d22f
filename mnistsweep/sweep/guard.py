"""A sweep folder's identity: the spec it was launched from, and the guard that keeps specs apart.

Results of different specs are never mixed: a sweep folder remembers the fingerprint of the grid
and train settings that filled it, and a launch with a different one is refused. The guard fails
closed: when the record is damaged, only the spec kept beside the runs (spec.yaml) may launch
there; when it is missing, only a spec of which every run folder there is a cell.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

import mnistsweep
from mnistsweep import fsio
from mnistsweep.errors import MnistsweepError
from mnistsweep.sweep import identity, records
from mnistsweep.sweep.layout import SweepLayout
from mnistsweep.sweep.spec import Cell, Spec, load_spec


def check_same_spec(layout: SweepLayout, spec: Spec) -> None:
    """Refuse to launch `spec` into a folder that holds another spec's runs, or that lies
    inside the package a launch copies for its jobs (the copy would copy itself)."""
    nearest = next(folder for folder in (layout.root, *layout.root.parents) if folder.exists())
    if not nearest.is_dir():
        raise MnistsweepError(f"{nearest}: is a file; a folder is expected there (--results-dir)")
    package = Path(mnistsweep.__file__).resolve().parent  # a launch's code snapshot, in a job
    where = Path(os.path.normpath(nearest.resolve() / layout.root.relative_to(nearest)))
    if where.is_relative_to(package):
        raise MnistsweepError(
            f"{layout.root}: inside the package {package}, which each launch copies for its "
            "jobs (results there would be copied into every copy); choose a --results-dir "
            "outside it"
        )
    try:
        record = records.read(records.SweepRecord, layout.record)
    except records.DamagedRecord as damaged:
        # Unreadable: the folder's identity is unknown, so only the spec kept beside it may go on.
        if layout.run_folders() and kept_fingerprint(layout) != spec.results_fingerprint():
            raise MnistsweepError(
                f"{damaged}, and the run folders there cannot be shown to come from "
                f"{spec.path}: restore sweep.json or give the spec a new name (results of "
                "different specs are never mixed)"
            ) from None
        return
    if record is None:
        # Not recorded yet (a launch stopped before recording, or another one starting):
        # every run folder must be a cell of this very spec.
        foreign = foreign_runs(layout, spec)
        if foreign:
            raise MnistsweepError(
                f"{spec.path}: {layout.root} holds {len(foreign)} run folder(s) that are not "
                f"cells of this spec (e.g. {foreign[0]}) and no sweep.json; give the spec a "
                "new name: results of different specs are never mixed"
            )
        return
    if record.fingerprint != spec.results_fingerprint():
        raise MnistsweepError(
            f"{spec.path}: grid/train differ from the spec that filled {layout.root} "
            f"(launched from {record.spec_path}); give the changed spec a new name: "
            "results of different specs are never mixed"
        )


def foreign_runs(layout: SweepLayout, spec: Spec) -> list[str]:
    """Run folders whose id (after the last `--`) is not a cell of `spec`."""
    ids = {cell.id for cell in spec.cells()}
    names = [run.root.name for run in layout.run_folders()]
    return [name for name in names if name.rsplit("--", 1)[-1] not in ids]


def kept_fingerprint(layout: SweepLayout) -> str | None:
    """The fingerprint of the spec copy kept beside the runs, if it is intact."""
    try:
        return load_spec(layout.spec_copy, allow_large=True).results_fingerprint()
    except MnistsweepError:
        return None


def record_spec(layout: SweepLayout, spec: Spec) -> None:
    """Keep the spec beside its results: aggregate, report and status read it from here."""
    layout.create()
    cells = spec.cells()
    records.write(
        layout.record,
        records.SweepRecord(
            name=spec.name,
            fingerprint=spec.results_fingerprint(),
            spec_path=str(spec.path),
            axes=list(spec.axes),
            grid=[
                {axis: list(values) for axis, values in grid.items()}
                for grid in spec.explicit_grids()  # sampled axes: each draw a block of its own
            ],
            train=dict(spec.train),
            ensemble_top_k=spec.ensemble_top_k,
            cells=len(cells),
        ),
    )
    fsio.write_text(layout.spec_copy, yaml.safe_dump(dict(spec.document), sort_keys=False))
    from mnistsweep.train import tblog  # TensorBoard: only when a launch records a sweep

    tblog.write_hparams_config(layout.root, spec.axis_values)


def read_record(sweep_dir: Path) -> records.SweepRecord:
    """The launch record, or one line telling the user this is not (or no longer) a sweep folder."""
    layout = SweepLayout(sweep_dir)
    if not sweep_dir.is_dir():
        raise MnistsweepError(f"{sweep_dir}: no such sweep folder (expected <results-dir>/<name>)")
    try:
        record = records.read(records.SweepRecord, layout.record)
    except records.DamagedRecord as damaged:
        raise MnistsweepError(f"{damaged}; this sweep folder's record is damaged") from None
    if record is None:
        raise MnistsweepError(
            f"{sweep_dir}: not a sweep folder ({layout.record.name} missing); launch a spec first"
        )
    return record


def recorded_cells(sweep_dir: Path) -> list[Cell]:
    """The cells of the spec that filled this folder, as sweep.json records it (spec.yaml is a
    copy for people to read: editing it changes nothing)."""
    record = read_record(sweep_dir)
    return list(identity.SweepIdentity.of(record, SweepLayout(sweep_dir).record).cells.values())
