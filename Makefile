# Two commands do all set-up: `make demo` and `make test`. Each creates .venv when missing
# and installs the package (with dev + slurm extras) into it before running.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-faults bench-quick clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --progress-bar off -e '.[dev,slurm]'
	touch $(STAMP)

demo: $(STAMP)
	WANDB_MODE=$${WANDB_MODE:-offline} $(BIN)/jepa-wm sweep configs/sweeps/demo.yaml --out runs

test: $(STAMP)
	WANDB_MODE=disabled $(BIN)/python -m pytest -q

test-faults: $(STAMP)
	WANDB_MODE=disabled $(BIN)/python -m pytest -q -m faults

clean:
	rm -rf runs .pytest_cache
