# The two quickstart commands: `make demo` trains on the built-in synthetic data, `make test` runs
# the tests. Each creates (or reuses) the virtual environment $(VENV) and installs into it what it
# needs: `make demo` (and `make install`) the package and its runtime dependencies, `make test` in
# addition the test extra (PyTorch, transformers and the other references). pip runs with --quiet:
# its warnings and errors still show, its progress does not.
PYTHON ?= python3
VENV ?= .venv
DEMO_WORKDIR ?= workdirs/demo
DEMO_FLAGS ?=  # e.g. --config.total_steps=100, as on the command line of clip_jax.train
PIP := $(VENV)/bin/python -m pip --quiet
RUNTIME_STAMP := $(VENV)/.installed-runtime
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test lint install install-test clean

# The oldest Python the dependencies accept, as setup.cfg's python_requires says (e.g. 3.11).
MIN_PYTHON := $(shell sed -n 's/^python_requires *= *>= *//p' setup.cfg)

$(RUNTIME_STAMP): setup.cfg pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < tuple(map(int, "$(MIN_PYTHON)".split("."))))' \
	    || { echo "clip_jax needs Python $(MIN_PYTHON) or later; $(PYTHON) is $$($(PYTHON) -V 2>&1). Run make PYTHON=python$(MIN_PYTHON) (docs/accelerators.md: how to get one)."; exit 1; }
	@echo "Installing clip_jax and its runtime dependencies into $(VENV) (minutes the first time)"
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@$(PIP) install --upgrade pip
	@$(PIP) install -e .
	@touch $@

# References for the tests, the last four without torchvision, which their packages import but
# the tests do not need: open_clip's tokenizer and model code, OpenAI's clip/model.py, timm
# (open_clip's SigLIP image towers) and CLIP_benchmark (the benchmark's metrics and lists).
$(TEST_STAMP): $(RUNTIME_STAMP)
	@echo "Installing the test extra (PyTorch, transformers, pytest) into $(VENV) (minutes)"
	@$(PIP) install -e ".[test]"
	@$(PIP) install --no-deps open_clip_torch==3.3.0 clip-anytorch==2.6.0 timm==1.0.31 \
	    clip-benchmark==1.6.2
	@touch $@

install: $(RUNTIME_STAMP)

install-test: $(TEST_STAMP)

demo: $(RUNTIME_STAMP)
	rm -rf $(DEMO_WORKDIR)
	$(VENV)/bin/python -m clip_jax.train --config=configs/synthetic_demo.py \
	    --workdir=$(DEMO_WORKDIR) $(DEMO_FLAGS)

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check --no-cache .

test: lint
	$(VENV)/bin/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=25 tests

clean:
	rm -rf $(VENV) workdirs
