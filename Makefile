# One command sets up and runs the demo, one sets up and runs the tests:
#   make demo      make test
# and `make lint` checks formatting and lint (ruff), as CI does; `make format` applies the formatter.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch. This machine serves it as a local wheel; elsewhere add a CPU index:
#   make test PIP_TORCH_FLAGS="--index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple"
TORCH_SPEC ?= torch==2.13.0
PIP_TORCH_FLAGS ?=
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-all lint format docs bench bench-grid check-interop clean

$(STAMP): pyproject.toml requirements.lock Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check $(PIP_TORCH_FLAGS) "$(TORCH_SPEC)" -r requirements.lock
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -e .
	$(BIN)/python -c "import torch, superposition; print('torch', torch.__version__, '| CUDA build' if torch.version.cuda else '| CPU build')"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/superposition demo --out runs/demo

# One pytest-xdist worker per core, each taking whole test files (module fixtures are built once)
# and an equal share of the cores for torch (tests/conftest.py); then, on their own, the tests
# marked `alone` (several training processes at once, or a signal timed against a run), which
# would otherwise compete with a worker for the cores. Each part prints its slowest tests.
# TEST_FLAGS= runs the first part in one process.
TEST_FLAGS ?= -n auto --dist loadfile

test: setup
	$(BIN)/python -m pytest -q $(TEST_FLAGS) --durations=10 -m "not slow and not alone"
	$(BIN)/python -m pytest -q --durations=5 -m "not slow and alone"

test-all: setup
	$(BIN)/python -m pytest -q $(TEST_FLAGS) -m "not alone"
	$(BIN)/python -m pytest -q -m alone

lint: setup
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# the reference pages under docs/ from the command, experiment and config registries
docs: setup
	$(BIN)/python -m superposition.commands.docs docs

bench: setup
	$(BIN)/python benchmarks/bench_toy_trainer.py
	$(BIN)/python benchmarks/bench_sae_topk.py
	$(BIN)/python benchmarks/bench_threads.py

bench-grid: setup
	$(BIN)/python benchmarks/bench_sae_grid.py --repeats 3 --budget 1e10 --json bench-grid.json

check-interop: setup
	$(BIN)/python benchmarks/check_formats.py
	$(BIN)/python benchmarks/check_saelens_snippets.py
	$(BIN)/python benchmarks/check_lm_metrics.py
	$(BIN)/python benchmarks/check_circuit_tracer.py $(if $(DICTLEARN_SRC),--dictlearn-src $(DICTLEARN_SRC),)
	$(BIN)/python benchmarks/check_saebench.py

clean:
	rm -rf $(VENV) runs .pytest_cache
