# The two quickstart commands: `make demo` trains on the built-in synthetic data, `make test` runs the
# tests. Each creates (or reuses) the virtual environment $(VENV) and installs the package into it.
PYTHON ?= python3
VENV ?= .venv
DEMO_WORKDIR ?= workdirs/demo
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e ".[test]"
	# References for the tests, without torchvision, which their packages import but the tests do
	# not need: open_clip's tokenizer and model code, OpenAI's clip/model.py.
	$(VENV)/bin/python -m pip install --quiet --no-deps open_clip_torch==3.3.0 clip-anytorch==2.6.0
	touch $@

install: $(STAMP)

demo: $(STAMP)
	rm -rf $(DEMO_WORKDIR)
	$(VENV)/bin/python -m clip_jax.train --config=configs/synthetic_demo.py --workdir=$(DEMO_WORKDIR)

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -n 2 --dist loadfile tests

clean:
	rm -rf $(VENV) workdirs
