"""Submitting to SLURM without a cluster: stand-in SLURM commands on PATH that record what they
are given, golden sbatch scripts, checks on every value that reaches the script, the cluster's
limits, the memory warning, and a refused submission that leaves nothing behind."""

import dataclasses
import os
import shlex
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnistsweep.errors import MnistsweepError
from mnistsweep.execute import limits, slurm
from mnistsweep.execute import plan as planning
from mnistsweep.sweep import identity, records
from mnistsweep.sweep.layout import SweepLayout
from mnistsweep.sweep.spec import load_spec, parse_spec

REPO = Path(__file__).resolve().parents[1]

# What `launch --dry-run` prints for write_spec()'s sweep (paths as SWEEP and PYTHON).
GOLDEN_ARRAY = (Path(__file__).parent / "golden" / "sbatch_array.sh").read_text()
# One batch is one plain job for submitit: no --array line, %j in the log names.
GOLDEN_PLAIN = (
    GOLDEN_ARRAY.replace("#SBATCH --array=0-1%2\n", "")
    .replace("%A_%a_0_log", "%j_0_log")
    .replace("%A_%a_%t_log", "%j_%t_log")
)

SBATCH = """#!/bin/sh
# stand-in sbatch: keeps each script, answers from the list of replies (one per call)
n=$(ls "{calls}" | wc -l)
cp "$1" "{calls}/$n.sh"
reply=$(sed -n "$((n + 1))p" "{replies}")
case $reply in
  refuse*) echo "sbatch: error: Batch job submission failed: ${{reply#refuse }}" >&2; exit 1 ;;
  *) echo "Submitted batch job $reply" ;;
esac
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """sbatch, srun and an empty-answering sacct/squeue/scontrol/sacctmgr first on PATH."""
    tools, calls = tmp_path / "bin", tmp_path / "sbatch-calls"
    tools.mkdir()
    calls.mkdir()
    replies = tmp_path / "sbatch-replies"
    replies.write_text("")
    scripts = {"sbatch": SBATCH.format(calls=calls, replies=replies), "srun": "exit 1\n"}
    for tool in ("sacct", "squeue", "scontrol", "sacctmgr"):
        scripts[tool] = f'cat "{tmp_path}/{tool}-says" 2>/dev/null; exit 0\n'
    for tool, body in scripts.items():
        path = tools / tool
        path.write_text(body if body.startswith("#!") else "#!/bin/sh\n" + body)
        path.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    return types.SimpleNamespace(calls=calls, replies=replies, root=tmp_path)


def write_spec(tmp_path: Path, name: str = "golden", seeds: int = 4, **slurm_options) -> Path:
    options = {
        "partition": "debug",
        "gpus_per_node": 2,
        "cpus_per_task": 1,
        "mem_gb": 2,
        "timeout_min": 10,
        "array_parallelism": 5,
        "setup": ["module load cuda"],
        **slurm_options,
    }
    document = {
        "name": name,
        "grid": {"seed": list(range(seeds))},
        "train": {"arch": "linear", "epochs": 1, "train_subset": 1000},
        "executor": {"backend": "slurm", "cells_per_job": 2, "slurm": options},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def plan_of(tmp_path: Path, **slurm_options) -> planning.Plan:
    spec = load_spec(write_spec(tmp_path, **slurm_options))
    return planning.plan_launch(spec, tmp_path / "out", "slurm")


def as_golden(script: str, sweep_dir: Path) -> str:
    return script.replace(str(sweep_dir.absolute()), "SWEEP").replace(
        shlex.quote(sys.executable), "PYTHON"
    )


# --- the script: exactly what is submitted --------------------------------------------------------


def test_dry_run_script_of_an_array_is_the_golden_one(tmp_path, fake_slurm):
    plan = plan_of(tmp_path)
    script = slurm.render_script(plan, None, len(plan.batches))
    assert as_golden(script, plan.sweep_dir) == GOLDEN_ARRAY
    assert not (tmp_path / "out").exists()


def test_a_sweep_of_one_job_is_a_plain_job_in_the_dry_run_and_in_reality(tmp_path, fake_slurm):
    spec = load_spec(write_spec(tmp_path, seeds=2))
    plan = planning.plan_launch(spec, tmp_path / "out", "slurm")
    assert len(plan.batches) == 1
    shown = slurm.render_script(plan, None, 1)
    assert as_golden(shown, plan.sweep_dir) == GOLDEN_PLAIN

    fake_slurm.replies.write_text("41\n")
    submission = slurm.submit(plan, None, plan.batches, max_array_size=None)
    assert [job.job_id for job in submission.jobs] == ["41"]
    submitted = (fake_slurm.calls / "0.sh").read_text()
    stamp = next((plan.sweep_dir / "code").iterdir()).name
    assert submitted == shown.replace(slurm.SNAPSHOT_PLACEHOLDER, stamp)


def test_the_real_submission_is_the_dry_run_with_the_snapshot_stamp(tmp_path, fake_slurm):
    plan = plan_of(tmp_path)
    shown = slurm.render_script(plan, None, 2)
    fake_slurm.replies.write_text("7\n")
    submission = slurm.submit(plan, None, plan.batches, max_array_size=None)
    assert [job.job_id for job in submission.jobs] == ["7_0", "7_1"]
    code_dirs = list((plan.sweep_dir / "code").iterdir())
    assert len(code_dirs) == 1 and (code_dirs[0] / "mnistsweep" / "__init__.py").is_file()
    submitted = (fake_slurm.calls / "0.sh").read_text()
    assert submitted == shown.replace(slurm.SNAPSHOT_PLACEHOLDER, code_dirs[0].name)
    jobs, problems = records.read_jobs(SweepLayout(plan.sweep_dir).jobs)
    assert problems == [] and [job.job_id for job in jobs] == ["7_0", "7_1"]
    assert [job.cells for job in jobs] == [[cell.id for cell in b] for b in plan.batches]


def test_arrays_are_split_at_max_array_size(tmp_path, fake_slurm):
    plan = planning.plan_launch(
        load_spec(write_spec(tmp_path, seeds=14)), tmp_path / "out", "slurm"
    )
    fake_slurm.replies.write_text("1\n2\n3\n")
    submission = slurm.submit(plan, None, plan.batches, max_array_size=3)
    assert submission.arrays == ["1", "2", "3"]
    arrays = [
        line for p in sorted(fake_slurm.calls.iterdir()) for line in p.read_text().splitlines()
    ]
    assert [line for line in arrays if "--array" in line] == [
        "#SBATCH --array=0-2%3",
        "#SBATCH --array=0-2%3",
    ]  # and the seventh batch alone: a plain job


# --- values that reach the script ---------------------------------------------------------------


def fake_plan(**options) -> types.SimpleNamespace:
    """A plan whose SLURM options skipped the spec's validation (the second line of defence)."""
    defaults = dict(
        partition=None,
        account=None,
        qos=None,
        constraint=None,
        gpus_per_node=None,
        cpus_per_task=1,
        mem_gb=1.0,
        timeout_min=10,
        array_parallelism=4,
        setup=(),
        additional={},
    )
    slurm_options = types.SimpleNamespace(**{**defaults, **options})
    executor = types.SimpleNamespace(slurm=slurm_options, concurrent_cells=1)
    return types.SimpleNamespace(spec=types.SimpleNamespace(name="x", executor=executor))


@pytest.mark.parametrize(
    "options, named",
    [
        ({"partition": "gpu\n#SBATCH --uid=0"}, "executor.slurm.partition"),
        ({"account": "a\rb"}, "executor.slurm.account"),
        ({"qos": " "}, "executor.slurm.qos"),
        ({"constraint": "a\u2028b"}, "executor.slurm.constraint"),
        ({"setup": ("module load x\nrm -rf ~",)}, "executor.slurm.setup"),
        ({"additional": {"begin": "now\x00"}}, "additional.begin"),
        ({"additional": {"mail-user\n": "me"}}, "is not an sbatch option"),
    ],
)
def test_a_value_with_a_control_character_never_reaches_the_script(options, named):
    with pytest.raises(MnistsweepError, match=named) as refused:
        slurm.sbatch_parameters(fake_plan(**options), "/code")
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("option", sorted(slurm.OWNED_OPTIONS))
def test_options_mnistsweep_owns_cannot_be_set_through_additional(option):
    for key in (option, option.replace("-", "_")):
        with pytest.raises(MnistsweepError, match=f"sets --{option} itself"):
            slurm.sbatch_parameters(fake_plan(additional={key: "x"}), "/code")


def test_a_path_with_a_newline_never_reaches_the_script():
    with pytest.raises(MnistsweepError, match="code snapshot"):
        slurm.sbatch_parameters(fake_plan(), "/results/a\nb/code/1")


single_line = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="\x85"),
    min_size=1,
    max_size=20,
).filter(lambda text: text.strip())
option_names = st.from_regex(r"[a-z][a-z0-9]{0,8}(-[a-z0-9]{1,6})?", fullmatch=True).filter(
    lambda key: (
        key not in slurm.OWNED_OPTIONS
        and key not in slurm.FIRST_CLASS_OPTIONS
        and key not in {"mem", "time", "nodes", "gres", "wckey", "signal"}
    )
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    partition=st.none() | single_line,
    account=st.none() | single_line,
    setup=st.lists(single_line, max_size=3),
    additional=st.dictionaries(option_names, single_line | st.integers(0, 10**6), max_size=3),
)
def test_every_generated_option_is_one_sbatch_line_with_its_value(
    tmp_path, fake_slurm, partition, account, setup, additional
):
    spec = parse_spec(
        {
            "name": "prop",
            "grid": {"seed": [0, 1]},
            "executor": {
                "backend": "slurm",
                "slurm": {
                    "partition": partition,
                    "account": account,
                    "setup": setup,
                    "additional": additional,
                },
            },
        },
        tmp_path / "prop.yaml",
    )
    plan = planning.plan_launch(spec, tmp_path / "out", "slurm")
    script = slurm.render_script(plan, None, 2)
    flags = {}
    for line in script.splitlines():
        if line.startswith("#SBATCH"):
            key, _, value = line.removeprefix("#SBATCH --").partition("=")
            assert key not in flags, f"{key} twice"
            flags[key] = shlex.split(value)[0] if value else ""
            assert len(shlex.split(value)) <= 1
    expected = {key.replace("_", "-"): str(value) for key, value in additional.items()}
    expected |= {"partition": partition, "account": account}
    for key, value in expected.items():
        if value is not None:
            assert flags[key] == value
    owned = {"array", "comment", "cpus-per-task", "error", "job-name", "mem", "nodes"}
    owned |= {"open-mode", "output", "signal", "time", "wckey"}
    given_keys = {key for key, value in expected.items() if value is not None}
    assert set(flags) == owned | given_keys
    section = script.split("# setup\n")[1].split("\n\n")[0].splitlines()
    assert len(section) == len(setup) + 3  # each line guarded, then the snapshot's three


def test_a_failing_setup_line_stops_the_job_with_its_name(tmp_path):
    lines = [slurm.guarded_setup_line(line) for line in ("export KEPT=1", "false  # comment")]
    script = "\n".join([*lines, "echo reached"])
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=False)
    assert done.returncode == 1 and "reached" not in done.stdout
    assert done.stderr.strip() == "mnistsweep: setup line failed: false  # comment"
    allowed = "\n".join([*lines[:1], slurm.guarded_setup_line("false || true"), 'echo "$KEPT"'])
    done = subprocess.run(["bash", "-c", allowed], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "1"  # eval ran in the batch shell


# --- a refused submission -----------------------------------------------------------------------


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mnistsweep", *args, "--results-dir", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "200"},
        timeout=120,
        check=False,
    )


def test_a_refused_sweep_is_one_line_and_leaves_nothing_behind(
    tmp_path, fake_slurm, mnist_dir, monkeypatch
):
    fake_slurm.replies.write_text("refuse Invalid partition name specified\n")
    monkeypatch.setenv("MNISTSWEEP_DATA", str(mnist_dir))
    refused = cli(tmp_path, "launch", str(write_spec(tmp_path)))
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr == (
        "error: sbatch refused the sweep golden: Batch job submission failed: "
        "Invalid partition name specified\n"
    )
    assert "sbatch: error" not in refused.stdout
    assert not (tmp_path / "out").exists()


def test_a_refusal_after_a_first_array_keeps_what_went_out(tmp_path, fake_slurm):
    spec = load_spec(write_spec(tmp_path, seeds=8))
    plan = planning.plan_launch(spec, tmp_path / "out", "slurm")
    fake_slurm.replies.write_text("5\nrefuse Job violates accounting/QOS policy\n")
    with pytest.raises(slurm.SubmissionRefused, match="accounting/QOS policy") as refused:
        slurm.submit(plan, None, plan.batches, max_array_size=2)
    assert [job.job_id for job in refused.value.submitted] == ["5_0", "5_1"]
    layout = SweepLayout(plan.sweep_dir)
    jobs, _ = records.read_jobs(layout.jobs)
    assert [job.job_id for job in jobs] == ["5_0", "5_1"]
    assert len(list((plan.sweep_dir / "code").iterdir())) == 1  # the queued jobs import it
    leftovers = [p.name for p in (plan.sweep_dir / "submitit").iterdir() if p.is_file()]
    assert leftovers == []  # the refused array's pickles are gone


# --- relaunch with live jobs --------------------------------------------------------------------


def test_cells_of_a_live_job_are_left_to_it(tmp_path, fake_slurm):
    spec = load_spec(write_spec(tmp_path))
    cells = spec.cells()
    layout = SweepLayout(tmp_path / "out" / spec.name)
    for job_id, batch in (("9_0", cells[:2]), ("9_1", cells[2:])):
        records.append_job(
            layout.jobs,
            records.JobRecord(
                job_id=job_id,
                cells=[c.id for c in batch],
                submitted="now",
                sweep_dir=identity.jobs_owner(layout.root),
            ),
        )
    (fake_slurm.root / "sacct-says").write_text("9_0|RUNNING|None\n9_1|CANCELLED by 0|None\n")
    plan = planning.plan_launch(spec, tmp_path / "out", "slurm")
    assert plan.covering == {cells[0].id: "9_0", cells[1].id: "9_0"}
    assert [cell.id for cell in plan.todo] == [cell.id for cell in cells[2:]]
    assert plan.covering_jobs() == {"9_0": 2}


# --- the cluster's limits -----------------------------------------------------------------------


def test_limits_are_read_from_scontrol_and_sacctmgr(fake_slurm):
    (fake_slurm.root / "scontrol-says").write_text(
        "MaxArraySize            = 1001\nMaxJobCount             = 10000\n"
        "AccountingStorageEnforce = associations,limits,qos\n"
    )
    (fake_slurm.root / "sacctmgr-says").write_text("limited|5\n")
    cluster = limits.read_limits("limited")
    assert (cluster.max_array_size, cluster.max_job_count) == (1001, 10000)
    assert cluster.max_submit_jobs_in_qos == 5 and cluster.enforced
    assert cluster.room(limits.QueueCounts(own=40, own_in_qos=3, everyone=100)) == 2
    assert cluster.room(limits.QueueCounts(own=9, own_in_qos=9, everyone=100)) == 0
    assert "QOS limited MaxSubmitJobsPerUser=5" in cluster.describe()


def test_an_unenforced_submit_limit_does_not_count():
    cluster = limits.ClusterLimits(max_job_count=100, max_submit_jobs=2, enforced=False)
    assert cluster.room(limits.QueueCounts(own=50, own_in_qos=50, everyone=60)) == 40
    assert limits.ClusterLimits().room(limits.QueueCounts(10, 10, 10)) is None


def test_queued_jobs_counts_this_users_tasks_in_the_qos(monkeypatch):
    monkeypatch.setenv("USER", "ada")
    listing = "ada|normal\nbob|limited\nada|limited\n\n"
    assert limits.queued_jobs("limited", listing) == limits.QueueCounts(2, 1, 3)


def test_qos_limit_takes_the_qos_the_jobs_use():
    listing = "normal|\nlong|4\nshort|20\n"
    assert limits.qos_limit(listing, ["long"]) == 4
    assert limits.qos_limit(listing, ["normal"]) is None


def test_a_full_queue_submits_what_fits_and_says_a_relaunch_sends_the_rest(
    tmp_path, fake_slurm, mnist_dir, monkeypatch
):
    monkeypatch.setenv("MNISTSWEEP_DATA", str(mnist_dir))
    monkeypatch.setenv("USER", "ada")
    (fake_slurm.root / "scontrol-says").write_text("AccountingStorageEnforce = limits,qos\n")
    (fake_slurm.root / "sacctmgr-says").write_text("limited|2\n")
    (fake_slurm.root / "squeue-says").write_text("ada|normal\n")  # another QOS: not counted
    fake_slurm.replies.write_text("3\n")
    spec = write_spec(tmp_path, seeds=8, qos="limited")
    launched = cli(tmp_path, "launch", str(spec))
    assert launched.returncode == 0, launched.stderr
    assert "submitted 4 cells in 2 job(s) as 1 array(s): 3" in launched.stdout
    assert "2 job(s) not submitted: the queue is full for you" in launched.stdout
    assert "QOS limited MaxSubmitJobsPerUser=2" in launched.stdout
    assert "launch again" in launched.stdout


# --- memory -------------------------------------------------------------------------------------


def test_memory_warning_when_a_cells_share_is_below_its_need(tmp_path, fake_slurm):
    spec = load_spec(write_spec(tmp_path, mem_gb=2))
    plan = planning.plan_launch(spec, tmp_path / "out", "slurm")
    executor = type(spec.executor)(
        backend="slurm", cells_per_job=2, concurrent_cells=2, slurm=spec.executor.slurm
    )
    packed = dataclasses.replace(plan, spec=dataclasses.replace(spec, executor=executor))
    warning = slurm.memory_warning(packed)
    assert warning is not None and "shared by 2 cells" in warning and "mem_gb: 4" in warning
    assert slurm.memory_warning(plan) is None  # one cell at a time: 2 GB is enough
    measured = dataclasses.replace(plan, peak_rss_mb={"linear": 3000.0})
    assert "measured in this sweep" in (slurm.memory_warning(measured) or "")
