"""Every backend by the name the spec and --executor give it; `auto` takes the first that can
run here. Adding a backend is one line below (and its name in sweep.spec.EXECUTOR_BACKENDS)."""

from __future__ import annotations

from mnistsweep.errors import MnistsweepError
from mnistsweep.execute.backend import Backend
from mnistsweep.execute.local import LocalBackend
from mnistsweep.execute.slurm_backend import SlurmBackend

AUTO = "auto"
# In the order `auto` tries them: a cluster when there is one, else this machine.
BACKENDS: dict[str, type[Backend]] = {kind.name: kind for kind in (SlurmBackend, LocalBackend)}


def resolve(requested: str) -> Backend:
    """The backend `requested` names (`auto`: the first available); one line when it cannot
    run here."""
    if requested == AUTO:
        return next(kind for kind in BACKENDS.values() if kind.unavailable() is None)()
    kind = BACKENDS.get(requested)
    if kind is None:
        raise MnistsweepError(
            f"executor {requested}: no such backend; allowed: {', '.join(BACKENDS)}"
        )
    reason = kind.unavailable()
    if reason:
        raise MnistsweepError(f"executor {requested}: {reason}; use --executor local")
    return kind()
