"""How long `launch` takes to expand and submit a 1,000-cell grid to SLURM (goal: 3 s, one array).

Needs the live cluster (`bash slurm/testcluster.sh up`); it brings nothing up itself. Each repeat
writes a 1,000-cell spec (arch linear x seed 0..999, one cell per job) into a temporary results
folder and times two launches of it:

- end to end: the user's command, `python -m mnistsweep launch SPEC --executor slurm
  --results-dir TMP`, from process start to exit;
- in process: `launch` (mnistsweep.cli.main) inside a fresh interpreter, from the first import
  of the package to its return, with its stages (import, plan, the wait for the data check,
  spec record, code snapshot, sbatch, the rest of submit; and, beside them on threads, the data
  check and the cluster's limits) timed by wrapping the functions it calls.

- raw submitit: a fresh interpreter that imports submitit and `map_array`s a trivial function
  over the same count with the same sbatch options (one CPU, 1 GB, 5 minutes, held an hour),
  from process start to exit, alternating with the end-to-end launch; the ratio of the medians
  is issue 25's goal (<= 1.5x).
- submit -> result of one trivial cell (linear, 1 epoch on 1,000 images): `launch SPEC --wait`
  from process start to exit, against raw submitit submitting `abs(-1)` and waiting for its
  result, and a fresh interpreter importing Keras on its backend (what a job cannot avoid);
  the goal is the launch within 2 s of raw submitit plus that import.

Wall seconds depend on what else runs on the machine; the CPU seconds (user + system, of the
command and the sbatch/scontrol it waits for) much less, so they compare code versions on a busy
machine. The commands run in a temporary folder, so `PYTHONPATH=OTHER_CHECKOUT` times another
copy of the package with the same benchmark.

After each launch it checks that the sweep went out as ONE array of 1,000 tasks (jobs.jsonl and
`squeue`), then cancels it with `python -m mnistsweep cancel DIR`. The spec also asks SLURM to hold
the tasks for an hour (`--begin=now+3600`), so none of them trains even if the cancel came late.

    .venv/bin/python bench/bench_launch.py [--cells 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

GOAL_SECONDS = 3.0
SPEC_NAME = "bench-launch"
STAGE_PREFIX = "STAGES "
# What `launch` does, in order; the indented ones are parts of `submit`. The last two run on
# threads beside the others (the data check from before the launch's imports, the cluster's
# limits beside the plan): "waiting for the data check" is what the launch still waits for it.
STAGES = (
    "import",
    "load spec",
    "plan",
    "waiting for the data check",
    "record spec",
    "submit",
    "  code snapshot",
    "  sbatch",
    "  the rest (pickles, jobs.jsonl)",
    "beside: data check",
    "beside: cluster limits",
)
SUBMIT_PARTS = ("  code snapshot", "  sbatch")  # timed; the rest of `submit` is what is left
SUBMIT_REST = "  the rest (pickles, jobs.jsonl)"


def cluster_problem() -> str | None:
    """Why the live cluster cannot take the benchmark, or None when it can."""
    hint = "start it with: bash slurm/testcluster.sh up"
    if not shutil.which("sbatch") or not shutil.which("scontrol"):
        return f"no SLURM client on PATH (sbatch/scontrol); {hint}"
    ping = subprocess.run(
        ["scontrol", "ping"], capture_output=True, text=True, timeout=20, check=False
    )
    if ping.returncode != 0 or "is UP" not in ping.stdout:
        said = (ping.stdout + ping.stderr).strip() or f"exit {ping.returncode}"
        return f"the SLURM controller does not answer `scontrol ping` ({said}); {hint}"
    return None


def slurm_config() -> dict[str, str]:
    shown = subprocess.run(
        ["scontrol", "show", "config"], capture_output=True, text=True, check=False
    )
    pairs = (line.partition("=") for line in shown.stdout.splitlines())
    return {key.strip(): value.strip() for key, equals, value in pairs if equals}


def wait_for_room(cells: int) -> None:
    """Wait, outside the timings, until the controller can take `cells` more jobs. Each array
    task counts against MaxJobCount and an ended one is kept for MinJobAge, so back-to-back
    runs fill it, and sbatch then sleeps and retries for tens of seconds."""
    config = slurm_config()
    limit = int(config.get("MaxJobCount", "10000"))
    started = time.time()
    for attempt in itertools.count():
        listed = subprocess.run(
            ["squeue", "-h", "-r", "-t", "all", "-o", "%i"],
            capture_output=True,
            text=True,
            check=False,
        )
        held = len(listed.stdout.split())
        if held + cells < limit:
            if attempt:
                print(f"    waited {time.time() - started:.0f} s", flush=True)
            return
        if attempt == 0:
            print(
                f"    waiting: the controller holds {held} of MaxJobCount {limit} job records "
                f"(ended ones leave after MinJobAge, {config.get('MinJobAge')})",
                flush=True,
            )
        if time.time() - started > 600:
            sys.exit(f"the controller still holds {held} of MaxJobCount {limit} jobs after 600 s")
        time.sleep(15)


def write_spec(folder: Path, cells: int, held: bool = True, name: str = SPEC_NAME) -> Path:
    """The smallest real training per cell, one cell per array task, held for an hour."""
    document = {
        "name": name,
        "grid": {"seed": list(range(cells))},
        "train": {"arch": "linear", "epochs": 1, "train_subset": 1000},
        "executor": {
            "backend": "slurm",
            "cells_per_job": 1,
            "slurm": {
                "cpus_per_task": 1,
                "mem_gb": 1,
                "timeout_min": 5,
                "additional": {"begin": "now+3600"} if held else {},
            },
        },
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mnistsweep", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200"},
        timeout=300,
        check=False,
    )


def children_cpu() -> float:
    """CPU seconds of the finished child processes (and of the ones they waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def launch_end_to_end(spec: Path, results: Path) -> tuple[float, float]:
    """The user's command, timed from before the interpreter starts until it has exited:
    (wall seconds, CPU seconds)."""
    cpu, started = children_cpu(), time.perf_counter()
    launched = cli(
        spec.parent, "launch", str(spec), "--executor", "slurm", "--results-dir", str(results)
    )
    seconds = time.perf_counter() - started
    if launched.returncode != 0:
        sys.exit(f"launch failed (exit {launched.returncode}):\n{launched.stdout}{launched.stderr}")
    return seconds, children_cpu() - cpu


# The baseline: what submitit alone does for the same count, as a user's own script would.
RAW_SUBMITIT = """
import sys
import submitit
folder, cells = sys.argv[1], int(sys.argv[2])
executor = submitit.SlurmExecutor(folder=folder + "/%A")
executor.update_parameters(cpus_per_task=1, mem="1GB", time=5, array_parallelism=cells,
                           additional_parameters={"begin": "now+3600"})
jobs = executor.map_array(abs, range(cells))
print(jobs[0].job_id.split("_")[0])
"""


def raw_submitit(folder: Path, cells: int) -> tuple[float, str]:
    """submitit's map_array from process start to exit: (wall seconds, the array's id)."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", RAW_SUBMITIT, str(folder), str(cells)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"raw submitit failed:\n{done.stdout}{done.stderr}")
    return seconds, done.stdout.split()[-1]


# One trivial job through submitit alone, submitted and waited for, as a user's script would.
RAW_ROUND_TRIP = """
import sys
import submitit
executor = submitit.SlurmExecutor(folder=sys.argv[1] + "/%j")
executor.update_parameters(cpus_per_task=1, mem="1GB", time=5)
assert executor.submit(abs, -1).result() == 1
"""
FRAMEWORK_IMPORT = (
    "import time; t = time.perf_counter(); import keras; print(time.perf_counter() - t)"
)


def wall_of(command: list[str], cwd: Path, what: str) -> float:
    """Seconds from before the interpreter starts until it has exited; exit on a failure."""
    started = time.perf_counter()
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{what} failed (exit {done.returncode}):\n{done.stdout}{done.stderr}")
    return seconds


def round_trips(folder: Path, repeats: int) -> tuple[list[float], list[float], list[float]]:
    """Submit -> result of one trivial cell, alternating: (launch --wait, raw submitit, import)."""
    launched: list[float] = []
    raw: list[float] = []
    imports: list[float] = []
    for repeat in range(repeats):
        raw.append(
            wall_of(
                [sys.executable, "-c", RAW_ROUND_TRIP, str(folder / f"raw-trip-{repeat}")],
                folder,
                "raw submitit round trip",
            )
        )
        name = f"{SPEC_NAME}-trip-{repeat}"
        spec = write_spec(folder, 1, held=False, name=name)
        command = [sys.executable, "-m", "mnistsweep", "launch", str(spec), "--wait"]
        results = ["--executor", "slurm", "--results-dir", str(folder / "trips")]
        launched.append(wall_of([*command, *results], folder, "launch --wait"))
        imported = subprocess.run(
            [sys.executable, "-c", FRAMEWORK_IMPORT], capture_output=True, text=True, check=True
        )
        imports.append(float(imported.stdout.split()[-1]))
        print(
            f"  run {repeat + 1} submit -> result: launch --wait {launched[-1]:.3f} s, raw "
            f"submitit {raw[-1]:.3f} s, Keras import {imports[-1]:.3f} s"
        )
    return launched, raw, imports


def launch_in_process(spec: Path, results: Path) -> dict[str, float]:
    """`launch` in a fresh interpreter (this file with --stages), so imports are cold."""
    staged = subprocess.run(
        [sys.executable, __file__, "--stages", str(spec), str(results)],
        capture_output=True,
        text=True,
        cwd=spec.parent,
        timeout=300,
        check=False,
    )
    if staged.returncode != 0:
        sys.exit(f"in-process launch failed:\n{staged.stdout}{staged.stderr}")
    line = next(x for x in staged.stdout.splitlines() if x.startswith(STAGE_PREFIX))
    return json.loads(line.removeprefix(STAGE_PREFIX))


def timed(owner: Any, name: str, label: str, timings: dict[str, float]) -> None:
    """Replace `owner.name` by a wrapper that adds its run time to `timings[label]`."""
    original: Callable[..., Any] = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            timings[label] = timings.get(label, 0.0) + time.perf_counter() - started

    setattr(owner, name, wrapper)


def stages(spec: Path, results: Path) -> None:
    """The --stages worker: what `launch` does after argument parsing, stage by stage."""
    started, cpu = time.perf_counter(), time.process_time()
    import submitit

    from mnistsweep.cli import main
    from mnistsweep.execute import limits, slurm
    from mnistsweep.execute import plan as planning
    from mnistsweep.execute.launch import LaunchRequest
    from mnistsweep.sweep import guard
    from mnistsweep.sweep import spec as sweep_spec
    from mnistsweep.train import data

    timings = {"import": time.perf_counter() - started}
    timed(sweep_spec, "load_spec", "load spec", timings)
    timed(planning, "plan_launch", "plan", timings)
    timed(LaunchRequest, "check_data", "waiting for the data check", timings)
    timed(guard, "record_spec", "record spec", timings)
    timed(slurm, "submit", "submit", timings)
    timed(slurm, "snapshot_code", "  code snapshot", timings)
    timed(submitit.SlurmExecutor, "_submit_command", "  sbatch", timings)
    timed(data, "load", "beside: data check", timings)
    timed(limits, "read_limits", "beside: cluster limits", timings)
    code = main(["launch", str(spec), "--executor", "slurm", "--results-dir", str(results)])
    total, cpu = time.perf_counter() - started, time.process_time() - cpu
    if code != 0:
        sys.exit(f"launch returned {code}")
    timings[SUBMIT_REST] = timings["submit"] - sum(timings.get(s, 0.0) for s in SUBMIT_PARTS)
    ordered = {stage: timings.get(stage, 0.0) for stage in STAGES}
    # CPU: this process only, not the sbatch and scontrol it ran.
    print(STAGE_PREFIX + json.dumps({**ordered, "total": total, "CPU": cpu}), flush=True)


def check_one_array(sweep_dir: Path, cells: int) -> list[str]:
    """The sweep's array ids, once jobs.jsonl and squeue agree on ONE array of `cells` tasks."""
    entries = [json.loads(line) for line in (sweep_dir / "jobs.jsonl").read_text().splitlines()]
    arrays = sorted({entry["job_id"].split("_")[0] for entry in entries})
    recorded = sum(len(entry["cells"]) for entry in entries)
    queued = subprocess.run(
        ["squeue", "-h", "-r", "-o", "%i", "-j", ",".join(arrays)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    print(
        f"    {len(arrays)} array(s) {','.join(arrays)}: {len(entries)} jobs.jsonl entries with "
        f"{recorded} cells, {len(queued)} tasks in squeue"
    )
    if len(arrays) != 1 or len(entries) != cells or recorded != cells or len(queued) != cells:
        max_size = slurm_config().get("MaxArraySize")
        sys.exit(f"expected ONE array of {cells} tasks (MaxArraySize is {max_size})")
    return arrays


def cancel(sweep_dir: Path, arrays: list[str]) -> None:
    """`mnistsweep cancel`, retried while sacct has not yet recorded the fresh array; then make
    sure squeue no longer lists it (scancel by id as the last resort)."""
    deadline = time.time() + 20
    while time.time() < deadline:
        cancelled = cli(sweep_dir, "cancel", str(sweep_dir))
        said = (cancelled.stdout + cancelled.stderr).strip()
        if cancelled.returncode != 0 or not said.startswith("cancelled 0 "):
            print(f"    {said}")
            break
        time.sleep(1)
    while time.time() < deadline:
        listed = subprocess.run(
            ["squeue", "-h", "-o", "%i", "-j", ",".join(arrays)],
            capture_output=True,
            text=True,
            check=False,
        )
        if not listed.stdout.strip():
            return
        time.sleep(0.5)
    print(f"    still queued after `mnistsweep cancel`: scancel {' '.join(arrays)}")
    subprocess.run(["scancel", *arrays], check=False)


def measure(
    folder: Path, cells: int, repeats: int
) -> tuple[list[tuple[float, float]], list[dict[str, float]], list[float]]:
    """Each repeat: raw submitit, an end-to-end launch and an in-process one, each checked
    (the launches) and cancelled."""
    spec = write_spec(folder, cells)
    end_to_end: list[tuple[float, float]] = []
    in_process: list[dict[str, float]] = []
    raw: list[float] = []
    for repeat in range(repeats):
        wait_for_room(cells)
        seconds, array = raw_submitit(folder / f"raw-{repeat}", cells)
        raw.append(seconds)
        print(f"  run {repeat + 1} raw submitit map_array: {seconds:.3f} s (array {array})")
        subprocess.run(["scancel", array], capture_output=True, check=False)

        results = folder / f"end-to-end-{repeat}"
        wait_for_room(cells)
        end_to_end.append(launch_end_to_end(spec, results))
        wall, cpu = end_to_end[-1]
        print(f"  run {repeat + 1} end to end: {wall:.3f} s (CPU {cpu:.3f} s)")
        cancel(results / SPEC_NAME, check_one_array(results / SPEC_NAME, cells))

        results = folder / f"in-process-{repeat}"
        wait_for_room(cells)
        in_process.append(launch_in_process(spec, results))
        parts = ", ".join(f"{key.strip()} {v:.3f}" for key, v in in_process[-1].items())
        print(f"  run {repeat + 1} in process: {parts}")
        cancel(results / SPEC_NAME, check_one_array(results / SPEC_NAME, cells))
    return end_to_end, in_process, raw


def cancel_leftovers(folder: Path) -> None:
    """scancel every array the benchmark submitted (a no-op for cancelled ones), so a failed
    check or an interrupted run leaves nothing queued."""
    arrays = {
        json.loads(line)["job_id"].split("_")[0]
        for log in folder.glob(f"*/{SPEC_NAME}/jobs.jsonl")
        for line in log.read_text().splitlines()
        if line.strip()
    }
    if arrays:
        subprocess.run(["scancel", *sorted(arrays)], capture_output=True, check=False)


def summary(label: str, wall: list[float], cpu: list[float]) -> str:
    middle = statistics.median(wall)
    return (
        f"{label}: median {middle:.3f} s = {middle / GOAL_SECONDS:.2f} x the 3 s goal "
        f"(best {min(wall):.3f} s; runs {', '.join(f'{v:.3f}' for v in wall)}); "
        f"CPU median {statistics.median(cpu):.3f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trip-repeats", type=int, default=3, help="submit -> result rounds")
    parser.add_argument("--stages", nargs=2, type=Path, metavar=("SPEC", "RESULTS"), help="worker")
    arguments = parser.parse_args()
    if arguments.stages:
        stages(*arguments.stages)
        return

    problem = cluster_problem()
    if problem:
        sys.exit(f"bench_launch: {problem}")
    config = slurm_config()
    print(
        f"{arguments.cells} cells, one per task; MaxArraySize {config.get('MaxArraySize')}, "
        f"MaxJobCount {config.get('MaxJobCount')}; "
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    )
    with tempfile.TemporaryDirectory(prefix="bench-launch-") as temporary:
        try:
            end_to_end, in_process, raw = measure(
                Path(temporary), arguments.cells, arguments.repeats
            )
            print(f"submit -> result of one trivial cell, {arguments.trip_repeats} rounds:")
            trips = round_trips(Path(temporary), arguments.trip_repeats)
        finally:
            cancel_leftovers(Path(temporary))

    print(f"\nin-process stages (median of {arguments.repeats}):")
    for stage in STAGES:
        print(f"  {stage:<36} {statistics.median(run[stage] for run in in_process):7.3f} s")
    print(
        summary(
            "in process (import -> plan -> submit)",
            [run["total"] for run in in_process],
            [run["CPU"] for run in in_process],
        )
    )
    print(
        summary(
            "end to end (python -m mnistsweep launch)",
            [wall for wall, _ in end_to_end],
            [cpu for _, cpu in end_to_end],
        )
    )
    launch, baseline = statistics.median(wall for wall, _ in end_to_end), statistics.median(raw)
    print(
        f"raw submitit map_array of {arguments.cells} (process start included): median "
        f"{baseline:.3f} s; launch / raw submitit = {launch / baseline:.2f}x (goal <= 1.5x)"
    )
    print(f"each launch: ONE array of {arguments.cells} tasks (jobs.jsonl and squeue), cancelled")
    trip, trip_raw, keras_import = (statistics.median(values) for values in trips)
    over = trip - trip_raw - keras_import
    print(
        f"submit -> result of one trivial cell: launch --wait median {trip:.3f} s, raw submitit "
        f"{trip_raw:.3f} s, Keras import {keras_import:.3f} s; launch / raw submitit = "
        f"{trip / trip_raw:.2f}x; beyond raw submitit and the import: {over:.3f} s (goal <= 2 s)"
    )


if __name__ == "__main__":
    main()
