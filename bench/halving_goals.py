"""Issue 26's goals for successive halving, measured on sweeps/search.yaml (27 samples, reduction
3, rungs after epochs 1 and 3 of 9), each cell on the first --subset training images:

- at most 40% of the cells train past the first rung;
- the best configuration (best validation accuracy when every cell trains its 9 epochs) is not
  one that early stopping stopped;
- the epochs trained are at most half the full budget;
- a second run makes the same decisions (the rung records are equal).

    python bench/halving_goals.py [--subset 2000] [--out DIR]

It launches the spec three times on the local executor (early stopping twice, then without it)
and prints one line per goal; exit 1 when one is missed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def launch(document: dict, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    spec = folder / f"{document['name']}.yaml"
    spec.write_text(yaml.safe_dump(document))
    command = ["launch", str(spec), "--results-dir", str(folder), "--executor", "local"]
    subprocess.run([sys.executable, "-m", "mnistsweep", *command], check=True, cwd=REPO)
    return folder / document["name"]


def epochs_of(sweep: Path) -> dict[str, int]:
    """Epochs trained per cell id: the result's count, else the committed state's."""
    found = {}
    for run in sorted((sweep / "runs").iterdir()):
        cell_id = run.name.rsplit("--", 1)[1]
        if (run / "result.json").exists():
            found[cell_id] = json.loads((run / "result.json").read_text())["metrics"]["epochs_run"]
        else:
            found[cell_id] = json.loads((run / "state.json").read_text())["epochs_done"]
    return found


def best_cell(sweep: Path) -> str:
    results = [json.loads(path.read_text()) for path in (sweep / "runs").glob("*/result.json")]
    best = max(results, key=lambda result: result["metrics"]["best_val_accuracy"])
    return best["cell_id"]


def decisions(sweep: Path) -> dict:
    return {path.name: json.loads(path.read_text()) for path in (sweep / "rungs").glob("*.json")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subset", type=int, default=2000, help="training images per cell")
    parser.add_argument("--out", type=Path, default=None, help="keep the sweeps here")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="halving-goals-"))
    out.mkdir(parents=True, exist_ok=True)
    document = yaml.safe_load((REPO / "sweeps" / "search.yaml").read_text())
    document["train"]["train_subset"] = args.subset
    first = launch(document, out / "first")
    again = launch(document, out / "again")
    full = launch({**document, "search": {"seed": document["search"]["seed"]}}, out / "full")

    trained = epochs_of(first)
    budget = len(trained) * document["train"]["epochs"]
    past_first = sum(1 for epochs in trained.values() if epochs > 1)
    best = best_cell(full)
    goals = {
        f"cells past the first rung: {past_first}/{len(trained)} "
        f"({past_first / len(trained):.0%}) <= 40%": past_first <= 0.4 * len(trained),
        f"best configuration (full training) {best}: trained "
        f"{trained[best]} of {document['train']['epochs']} epochs, not stopped": trained[best]
        == document["train"]["epochs"],
        f"epochs trained: {sum(trained.values())}/{budget} "
        f"({sum(trained.values()) / budget:.0%}) <= 50%": sum(trained.values()) <= budget / 2,
        "same decisions when run again": decisions(first) == decisions(again),
    }
    for goal, met in goals.items():
        print(f"{'met   ' if met else 'MISSED'}  {goal}")
    print(f"sweeps kept in {out}")
    return 0 if all(goals.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
