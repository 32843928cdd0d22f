"""Submitting a sweep to SLURM through submitit's public API: the code snapshot the jobs import,
the sbatch parameters (checked again here: every value reaches a shell script), one job array
per chunk of batches, the jobs record; and a refused submission that leaves nothing behind.

Seeing the jobs afterwards is execute.scheduler; the cluster's limits are execute.limits.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import logging
import math
import os
import re
import shlex
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnistsweep.errors import MnistsweepError
from mnistsweep.execute.job import submit_batch
from mnistsweep.sweep import identity, records
from mnistsweep.sweep.layout import SweepLayout
from mnistsweep.sweep.spec import FIRST_CLASS_OPTIONS, OPTION_NAME, OWNED_OPTIONS, Cell

if TYPE_CHECKING:
    import submitit

    from mnistsweep.execute.plan import Plan

# The spec refuses owned options and control characters already (sweep.spec); checking again
# where values reach the script is the second line of defence.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
SNAPSHOT_PLACEHOLDER = "YYYYmmdd-HHMMSS-ffffff"  # the stamp of a launch: no quoting needed


# What sbatch says when a job would pass a submit limit (MaxSubmitJobs of the user's association
# or of the QOS): ESLURM_ACCOUNTING_POLICY. It also covers a job that breaks a size or time
# limit, which no smaller submission cures (slurm_backend.send_what_fits tells them apart).
SUBMIT_LIMIT_REASONS = ("accounting/QOS policy", "job submit limit")


class SubmissionRefused(MnistsweepError):
    """sbatch said no; `submission` holds what went out before (a later chunk refused)."""

    def __init__(self, message: str, submission: Submission | None = None) -> None:
        super().__init__(message)
        self.submission = submission

    @property
    def submitted(self) -> list[submitit.Job[Any]]:
        return self.submission.jobs if self.submission else []

    @property
    def over_a_limit(self) -> bool:
        """A refusal a smaller submission may get past: the queue holds too many jobs."""
        return any(reason in str(self) for reason in SUBMIT_LIMIT_REASONS)


# --- what reaches the sbatch script ----------------------------------------------------------


def one_line(where: str, value: object) -> str:
    """A value bound for the sbatch script: non-empty, one line, no control character."""
    text = str(value)
    if not text.strip() or CONTROL.search(text):
        raise MnistsweepError(
            f"{where}: {text!r} is not a single-line value; sbatch options and setup lines "
            "must be one line without control characters"
        )
    return text


def checked_additional(additional: Mapping[str, object]) -> dict[str, str | int | float]:
    """`executor.slurm.additional`, refusing the options mnistsweep sets itself."""
    checked: dict[str, str | int | float] = {}
    for key, value in additional.items():
        option = key.replace("_", "-")
        if not OPTION_NAME.fullmatch(key):
            raise MnistsweepError(f"executor.slurm.additional: {key!r} is not an sbatch option")
        if option in OWNED_OPTIONS:
            raise MnistsweepError(
                f"executor.slurm.additional.{key}: mnistsweep sets --{option} itself; remove it"
            )
        if option in FIRST_CLASS_OPTIONS:
            raise MnistsweepError(
                f"executor.slurm.additional.{key}: use executor.slurm.{FIRST_CLASS_OPTIONS[option]}"
            )
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise MnistsweepError(f"executor.slurm.additional.{key}: expected a string or number")
        checked[key] = value if not isinstance(value, str) else one_line(f"additional.{key}", value)
    return checked


def guarded_setup_line(line: str) -> str:
    """A setup line that stops the job, with a message in its log, when it fails (a `module load`
    of a missing module would otherwise let the job train on the wrong stack). `eval` runs it in
    the batch shell itself, so `export`, `source` and `module load` still take effect; end a line
    with `|| true` to let it fail."""
    quoted = shlex.quote(line)
    message = shlex.quote(f"mnistsweep: setup line failed: {line}")
    return f"if ! eval {quoted}; then printf '%s\\n' {message} >&2; exit 1; fi"


def snapshot_lines(code_dir: Path | str) -> list[str]:
    """The job imports the snapshot, never the checkout: it runs inside the snapshot folder,
    which comes first on PYTHONPATH, and PYTHONSAFEPATH keeps the working folder of `python -m`
    off sys.path (Python >= 3.11; older ones have the snapshot as working folder anyway)."""
    folder = shlex.quote(str(code_dir))
    message = shlex.quote(f"mnistsweep: the code snapshot {code_dir} is gone")
    return [
        f"export PYTHONPATH={folder}${{PYTHONPATH:+:$PYTHONPATH}}",
        "export PYTHONSAFEPATH=1",
        f"cd {folder} || {{ printf '%s\\n' {message} >&2; exit 1; }}",
    ]


def sbatch_parameters(plan: Plan, code_dir: Path | str) -> dict[str, Any]:
    """submitit's SLURM parameters from the spec, every string checked to be one line."""
    options = plan.spec.executor.slurm
    name = plan.spec.name
    setup = [guarded_setup_line(one_line("executor.slurm.setup", line)) for line in options.setup]
    parameters: dict[str, Any] = {
        "job_name": one_line("job name", f"mnistsweep-{name}"),
        "time": options.timeout_min,
        "cpus_per_task": options.cpus_per_task,
        # per task: every cell the task trains at once shares it (see memory_warning)
        "mem": f"{max(1, round(options.mem_gb * 1024))}MB",
        "array_parallelism": options.array_parallelism,
        # USR2 this long before the limit: time to write the epoch checkpoint and requeue.
        "signal_delay_s": max(20, min(120, options.timeout_min * 60 // 5)),
        "setup": [*setup, *snapshot_lines(one_line("code snapshot", code_dir))],
        "comment": one_line("comment", f"mnistsweep sweep {name}"),
    }
    for key in ("partition", "account", "qos", "constraint"):
        value = getattr(options, key)
        if value:
            parameters[key] = one_line(f"executor.slurm.{key}", value)
    if options.gpus_per_node:  # reaches the job as SLURM_GPUS_ON_NODE and CUDA_VISIBLE_DEVICES
        parameters["gpus_per_node"] = options.gpus_per_node
    if options.additional:
        parameters["additional_parameters"] = checked_additional(options.additional)
    return parameters


# --- memory ------------------------------------------------------------------------------------

# Resident memory of one training process when this sweep has no measurement yet (MB): Keras
# with its backend, MNIST in memory and a tutorial net, with margin; measured peaks replace it.
DEFAULT_CELL_MEMORY_MB = {"tensorflow": 2048.0, "jax": 1536.0, "torch": 2048.0}


def memory_warning(plan: Plan) -> str | None:
    """`mem_gb` is per task, shared by the cells a task trains at once: say so when the share is
    below what one cell needs (its peak in this sweep's results, or the backend's default)."""
    options = plan.spec.executor.slurm
    at_once = min(plan.spec.executor.concurrent_cells, max(map(len, plan.batches), default=1))
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    default = DEFAULT_CELL_MEMORY_MB.get(backend, max(DEFAULT_CELL_MEMORY_MB.values()))
    needs = {
        str(cell.config.get("arch")): plan.peak_rss_mb.get(str(cell.config.get("arch")), default)
        for cell in plan.todo
    }
    if not needs:
        return None
    arch, need_mb = max(needs.items(), key=lambda item: item[1])
    share_mb = options.mem_gb * 1024 / at_once
    if share_mb >= need_mb:
        return None
    source = "measured in this sweep" if arch in plan.peak_rss_mb else f"{backend} default"
    wanted = math.ceil(need_mb * at_once / 1024)
    return (
        f"executor.slurm.mem_gb {options.mem_gb:g} is per task, shared by {at_once} cells "
        f"trained at once: {share_mb / 1024:.1f} GB a cell, below the {need_mb / 1024:.1f} GB "
        f"one {arch} cell needs ({source}); ask for mem_gb: {wanted} or lower concurrent_cells"
    )


# --- the code snapshot -------------------------------------------------------------------------


def snapshot_code(layout: SweepLayout) -> Path:
    """Copy the package as it is now, so edits to the checkout cannot change queued jobs.

    A plain copy of the package folder (9 ms), not submitit's RsyncSnapshot (250 ms on the same
    machine): that one clones the whole git repository, misses files not yet added to git, needs
    rsync and changes the launcher's working folder."""
    import mnistsweep

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    target = layout.create(layout.code_snapshot(stamp))
    shutil.copytree(
        Path(mnistsweep.__file__).parent,
        layout.code_package(stamp),
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    return target


# --- submitting ----------------------------------------------------------------------------------


@contextlib.contextmanager
def quiet_submitit() -> Iterator[None]:
    """submitit logs and prints sbatch's raw complaint; the launch says it once, in one line."""
    logger = logging.getLogger("submitit")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def sbatch_reason(error: BaseException) -> str:
    """sbatch's last line, without its `sbatch: error:` prefix."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    last = lines[-1] if lines else type(error).__name__
    return re.sub(r"^sbatch: error:\s*", "", last)


def make_executor(folder: Path, parameters: Mapping[str, Any]) -> submitit.SlurmExecutor:
    import submitit

    executor = submitit.SlurmExecutor(folder=folder)
    executor.update_parameters(**parameters)
    return executor


def submit_chunk(
    executor: submitit.SlurmExecutor,
    plan: Plan,
    chunk: Sequence[list[Cell]],
    data_dir: Path | None,
) -> list[submitit.Job[Any]]:
    """One sbatch call: an array for several batches, a plain job for one (as submitit does)."""
    from submitit.core.utils import FailedJobError, FailedSubmissionError

    jobs: list[submitit.Job[Any]] = []
    try:
        with quiet_submitit(), executor.batch():
            for batch in chunk:
                jobs.append(
                    submit_batch(executor, plan.spec.executor, plan.sweep_dir, batch, data_dir)
                )
    except (FailedJobError, FailedSubmissionError, OSError) as error:
        raise SubmissionRefused(
            f"sbatch refused the sweep {plan.spec.name}: {sbatch_reason(error)}"
        ) from None
    return jobs


def chunks(batches: Sequence[list[Cell]], size: int) -> list[Sequence[list[Cell]]]:
    return [batches[start : start + size] for start in range(0, len(batches), max(1, size))]


@dataclass
class Submission:
    jobs: list[submitit.Job[Any]] = field(default_factory=list)
    batches: list[list[Cell]] = field(default_factory=list)  # what the jobs train, in order
    code_dir: Path | None = None  # the snapshot the jobs import

    @property
    def arrays(self) -> list[str]:
        return sorted({str(job.job_id).split("_")[0] for job in self.jobs}, key=int)


def submit(
    plan: Plan,
    data_dir: Path | None,
    batches: Sequence[list[Cell]],
    max_array_size: int | None,
) -> Submission:
    """Submit `batches` in as few arrays as MaxArraySize allows; record which job has which
    cells. A refusal removes what it created (the snapshot and submitit's files when nothing
    went out) and raises SubmissionRefused naming sbatch's reason.

    Each array starts after the sweep's arrays before it (see `after_live_arrays`)."""
    layout = SweepLayout(plan.sweep_dir)
    submission = Submission()
    with leaves_nothing_behind(layout, submission):
        submission.code_dir = code_dir = snapshot_code(layout)
        executor = make_executor(layout.submitit, sbatch_parameters(plan, code_dir))
        before = live_arrays(plan)
        # MaxArraySize N: indices 0..N-1, so at most N tasks per array
        for chunk in chunks(batches, max_array_size or len(batches)):
            executor.update_parameters(dependency=after_arrays(before))
            try:
                jobs = submit_chunk(executor, plan, chunk, data_dir)
            except SubmissionRefused as refused:
                raise SubmissionRefused(str(refused), submission) from None
            submission.jobs += jobs
            submission.batches += chunk
            record_jobs(layout, jobs, chunk)
            before = submission.arrays[-1:]
    return submission


def live_arrays(plan: Plan) -> list[str]:
    """The sweep's arrays that still have a cell queued or training."""
    return sorted({job_id.split("_")[0] for job_id in plan.covering.values() if job_id}, key=int)


def after_arrays(arrays: Sequence[str]) -> str | None:
    """`executor.slurm.array_parallelism` holds for the whole sweep, not per array: an array
    starts only once every array of the sweep before it has ended (`afterany`), and SLURM's
    `%N` throttles the one that runs. Chaining was chosen over dividing the cap between arrays:
    a divided cap stays divided while one array's tail runs alone and the others have ended,
    and the throttle of a live array would need `scontrol update` at every change; a chain
    needs nothing afterwards, survives any array being cancelled (afterany), and costs only
    the tail of each array (a MaxArraySize chunk is far larger than the cap)."""
    return f"afterany:{':'.join(arrays)}" if arrays else None


@contextlib.contextmanager
def leaves_nothing_behind(layout: SweepLayout, submission: Submission) -> Iterator[None]:
    """On an error, delete what this submission created that no submitted job uses: the code
    snapshot (kept once a job went out: the queued jobs import it), submitit's pickles and
    submission files, and the folders it created for them."""
    folders = (layout.submitit.parent, layout.code_snapshot(SNAPSHOT_PLACEHOLDER).parent)
    before = {folder: entries(folder) for folder in folders}
    try:
        yield
    except BaseException:
        for folder, existing in before.items():
            if not folder.is_dir() or folder.is_symlink():
                continue
            for name in (entries(folder) or frozenset()) - (existing or frozenset()):
                path = folder / name
                if path.is_symlink() or not path.is_dir():
                    path.unlink(missing_ok=True)
                elif not submission.jobs:
                    shutil.rmtree(path, ignore_errors=True)
            if existing is None and not entries(folder):
                folder.rmdir()
        raise


def entries(folder: Path) -> frozenset[str] | None:
    """The names in `folder`; None when there is no such folder."""
    try:
        return frozenset(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return None


def record_jobs(
    layout: SweepLayout, jobs: Sequence[submitit.Job[Any]], chunk: Sequence[list[Cell]]
) -> None:
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat()
    owner = identity.jobs_owner(layout.root)
    records.append_jobs(
        layout.jobs,
        [
            records.JobRecord(
                job_id=str(job.job_id),
                cells=[c.id for c in batch],
                submitted=stamp,
                sweep_dir=owner,
            )
            for job, batch in zip(jobs, chunk, strict=True)
        ],
    )


# --- the dry run -----------------------------------------------------------------------------


FAKE_SBATCH = """#!/bin/sh
# Records the script it is given instead of submitting it (mnistsweep's dry run).
cat "$1" > {record}
echo "Submitted batch job 1"
"""


def render_script(plan: Plan, data_dir: Path | None, count: int) -> str:
    """The sbatch script of the first sbatch call a launch makes, exactly as submitit writes
    it: submitit runs its public submit path against a stand-in `sbatch` that keeps the script,
    in a scratch folder whose name is then replaced by the sweep folder's."""
    layout = SweepLayout(plan.sweep_dir)
    with tempfile.TemporaryDirectory(prefix="mnistsweep-dry-run-") as scratch_name:
        scratch = Path(scratch_name)
        tools = scratch / "bin"
        tools.mkdir()
        record = scratch / "script.sh"
        stand_ins = {"sbatch": FAKE_SBATCH.format(record=shlex.quote(str(record))), "srun": ""}
        for tool, text in stand_ins.items():
            (tools / tool).write_text(text or "#!/bin/sh\nexit 1\n")
            (tools / tool).chmod(0o755)
        code_dir = layout.code_snapshot(SNAPSHOT_PLACEHOLDER).absolute()
        scratch_layout = SweepLayout(scratch / "sweep")
        with path_first(tools):
            executor = make_executor(scratch_layout.submitit, sbatch_parameters(plan, code_dir))
            executor.update_parameters(dependency=after_arrays(live_arrays(plan)))
            submit_chunk(executor, plan, plan.batches[:count], data_dir)
        script = record.read_text()
    return moved(script, str(scratch_layout.root), str(layout.root.absolute()))


def moved(script: str, scratch: str, real: str) -> str:
    """The script with the scratch folder's name replaced by the sweep folder's, each word that
    holds it quoted again as submitit quotes it (`--key=` then the value), so a path with
    spaces, quotes or `$(...)` reads as the very words a real submission writes."""

    def requoted(match: re.Match[str]) -> str:
        word = match.group(0)
        key, equals, value = word.partition("=") if word.startswith("--") else ("", "", word)
        return f"{key}{equals}{shlex.quote(value.replace(scratch, real))}"

    return re.sub(rf"\S*{re.escape(scratch)}\S*", requoted, script)


@contextlib.contextmanager
def path_first(folder: Path) -> Iterator[None]:
    original = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{folder}{os.pathsep}{original}"
    try:
        yield
    finally:
        os.environ["PATH"] = original
