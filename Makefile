# Two commands for a fresh clone (see README):  make pipeline   |   make test
# Each creates .venv on first use and reuses it afterwards.
VENV    ?= .venv
PYTHON  ?= python3
STAMP   := $(VENV)/.installed
SHELL   := /bin/bash

.PHONY: pipeline test test-fast bench venv clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -r requirements.txt
	$(VENV)/bin/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

# Runs the whole pipeline. Stages call `python`, so the venv goes first on PATH.
pipeline: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" dvc repro
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" dvc metrics show

test: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" python -m pytest -q

test-fast: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" python -m pytest -q -m "not slow"

# Benchmarks on the real data (minutes, not a test). repro_speed needs `make pipeline` first.
bench: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" python bench/data_speed.py
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" python bench/data_scale.py
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" python bench/train_speed.py
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" python bench/generate_speed.py
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" python bench/repro_speed.py

clean:
	rm -rf $(VENV)
