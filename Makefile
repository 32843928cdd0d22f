# Set-up and checks, one command each. Everything lands in .venv; nothing is installed by hand.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: venv data run test test-fast lint cluster-up cluster-down bench

venv: $(STAMP)
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

# Real MNIST into the data dir ($$MNISTSWEEP_DATA or ~/.cache/mnistsweep), verified; no-op when there.
data: venv
	$(PY) -m mnistsweep data prepare

# The main job on its default: the quick sweep on this machine, then its table.
run: data
	$(PY) -m mnistsweep launch sweeps/quick.yaml --executor local

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# A live single-machine SLURM (needs root and Debian's packages); tests marked slurm use it.
cluster-up:
	bash slurm/testcluster.sh up

cluster-down:
	bash slurm/testcluster.sh down

# Line coverage of the package by the suite (code run in subprocesses is not counted): the fast
# part alone measured 84% (pytest -m "not slurm and not slow" --cov=mnistsweep, 2026-12-02).
COVERAGE_FLOOR = 82

test: data lint
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
		|| echo "no chromium here: the headless rendering test of the report will be skipped" >&2
	@bash slurm/testcluster.sh up || { if [ -n "$$CI" ]; then echo "CI: the SLURM test cluster must come up" >&2; exit 1; fi; \
		echo "no SLURM test cluster here: tests marked slurm will be skipped" >&2; }
	HYPOTHESIS_PROFILE=ci $(PY) -m pytest --cov=mnistsweep --cov-report=term --cov-fail-under=$(COVERAGE_FLOOR)

# Without the SLURM tests and the slow trainings: seconds, for the edit-test loop. Property tests
# explore fresh examples here (hypothesis's dev profile); `make test` replays CI's fixed ones.
test-fast: venv
	$(PY) -m pytest -m "not slurm and not slow"

# The CPU benchmarks of bench/README.md (the launch one on the live test cluster); the GPU one
# runs on a GPU machine: KERAS_BACKEND=jax python bench/gpu_throughput.py
bench: data
	$(PY) bench/bench_aggregate.py
	$(PY) bench/cpu_trainer.py --arch mlp --epochs 20 --repeats 1
	bash slurm/testcluster.sh up
	$(PY) bench/bench_launch.py
