# Two commands do all set-up: `make demo` and `make test`. Each creates .venv when missing
# and installs the package (with dev + slurm extras) into it before running.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The suite runs in 2 worker processes (pytest-xdist), a test module per worker so that
# a module's shared fixtures are built once: on 2 cores much of a test is one core
# (interpreter start-up, VizDoom, file checks), and 2 workers took the suite from 1,013 s
# to 614 s (benchmarks/results/speed.md). TEST_WORKERS=0 runs it in this process.
TEST_WORKERS ?= 2

.PHONY: demo test test-faults clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --progress-bar off -e '.[dev,slurm]'
	touch $(STAMP)

demo: $(STAMP)
	WANDB_MODE=$${WANDB_MODE:-offline} $(BIN)/jepa-wm sweep configs/sweeps/demo.yaml --out runs

test: $(STAMP)
	WANDB_MODE=disabled $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadscope

test-faults: $(STAMP)
	WANDB_MODE=disabled $(BIN)/python -m pytest -q -m faults

clean:
	rm -rf runs .pytest_cache
