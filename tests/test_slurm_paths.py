"""Results paths on the SLURM backend: the dry run prints the script with every path as one
shell word, whatever the path holds (spaces, quotes, `$(...)`); a path with `%` (SLURM's
file-name pattern) is refused in one error line, dry run included, before anything is made."""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnistsweep.__main__ import main

PIECES = st.sampled_from([" ", "'", '"', "$(touch x)", "`id`", "%", "%A", "a", "é", ";", "\\"])
folder_names = (
    st.lists(PIECES, min_size=1, max_size=5)
    .map("".join)
    .filter(lambda name: name.strip(" ") not in ("", ".", ".."))
)


def spec_file(folder: Path) -> Path:
    document = {
        "name": "paths",
        "grid": {"seed": [0, 1]},
        "train": {"arch": "linear", "epochs": 1},
        "executor": {"backend": "slurm", "slurm": {"setup": ["module load cuda"]}},
    }
    path = folder / "paths.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def sbatch_on_path(folder: Path, monkeypatch) -> None:
    tools = folder / "bin"
    tools.mkdir(exist_ok=True)
    (tools / "sbatch").write_text("#!/bin/sh\nexit 1\n")
    (tools / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}:/usr/bin:/bin")


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=folder_names)
def test_every_path_is_one_word_and_percent_is_refused(tmp_path_factory, monkeypatch, capsys, name):
    base = tmp_path_factory.mktemp("base")
    sbatch_on_path(base, monkeypatch)
    results = base / name
    argv = ["launch", str(spec_file(base)), "--dry-run", "--results-dir", str(results)]
    code = main(argv)
    out, err = capsys.readouterr()
    if "%" in name:
        assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
        assert "'%'" in err and "--results-dir" in err
        assert not results.exists()
        return
    assert code == 0, err
    sweep = str((results / "paths").absolute())
    script = out.split("sbatch script of the first submission", 1)[1].split("\n", 2)[2]
    lines = {line.split()[0]: line for line in script.splitlines() if line.strip()}
    assert shlex.split(lines["cd"])[1] == f"{sweep}/code/YYYYmmdd-HHMMSS-ffffff"
    srun = shlex.split(lines["srun"])
    assert srun[srun.index("--output") + 1] == f"{sweep}/submitit/%A/%A_%a_%t_log.out"
    assert srun[-1] == f"{sweep}/submitit/%A"
    assert not (base / "x").exists()  # nothing of the path ran


FAKE_SBATCH = """#!/bin/sh
cp "$1" {calls}/script.sh
echo "Submitted batch job 7"
"""


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=folder_names.filter(lambda name: "%" not in name))
def test_the_dry_run_is_what_sbatch_gets_whatever_the_path(tmp_path_factory, monkeypatch, name):
    from mnistsweep.execute import plan as planning
    from mnistsweep.execute import slurm
    from mnistsweep.sweep.spec import load_spec

    base = tmp_path_factory.mktemp("base")
    sbatch_on_path(base, monkeypatch)
    (base / "bin" / "sbatch").write_text(FAKE_SBATCH.format(calls=shlex.quote(str(base))))
    plan = planning.plan_launch(load_spec(spec_file(base)), base / name, "slurm")
    shown = slurm.render_script(plan, None, len(plan.batches))
    slurm.submit(plan, None, plan.batches, max_array_size=None)
    stamp = next((plan.sweep_dir / "code").iterdir()).name
    submitted = (base / "script.sh").read_text()
    assert submitted == shown.replace(slurm.SNAPSHOT_PLACEHOLDER, stamp)
