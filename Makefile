# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the test suite).
# Both create .venv on first use. Torch: if the venv has none, TORCH_SPEC is installed (the CPU
# wheel on this project's machines). With a CUDA torch already installed system-wide, use
# `make VENV_FLAGS=--system-site-packages demo`, or pick a build: `make TORCH_SPEC="torch --index-url
# https://download.pytorch.org/whl/cu128" demo`.
PYTHON ?= python3
VENV ?= .venv
VENV_FLAGS ?=
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: demo test test-all bench lint clean

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/tempoflow demo $(ARGS)

test: $(VENV)/.installed
	$(PY) -m pytest -m "not slow"

test-all: $(VENV)/.installed
	$(PY) -m pytest

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_flow.py

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check tempoflow tests benchmarks

clean:
	rm -rf out runs .pytest_cache
