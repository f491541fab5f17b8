# Two commands for a fresh clone (see README):  make pipeline   |   make test
# Each creates .venv on first use and reuses it afterwards.
VENV    ?= .venv
PYTHON  ?= python3
STAMP   := $(VENV)/.installed
SERVE_STAMP := $(VENV)/.installed-serve
TEST_STAMP  := $(VENV)/.installed-test
REMOTE_STAMP := $(VENV)/.installed-remote
PLOTS_STAMP := $(VENV)/.installed-plots
NOTEBOOK_STAMP := $(VENV)/.installed-notebook
REV     ?= HEAD
MODEL   ?= data/model.pt
SHELL   := /bin/bash

.PHONY: pipeline test test-fast bench venv clean serve remote restore plots
.PHONY: compare exps notebook

$(STAMP): requirements.txt pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -r requirements.txt
	$(VENV)/bin/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

# The optional extras: the web page's server, and what the tests need (browser driver,
# notebook runner). The pipeline's own install stays without them.
$(SERVE_STAMP): $(STAMP) requirements-serve.txt
	$(VENV)/bin/python -m pip install --quiet -r requirements-serve.txt
	touch $(SERVE_STAMP)

$(TEST_STAMP): $(STAMP) requirements-serve.txt requirements-remote.txt requirements-plots.txt \
		requirements-test.txt
	$(VENV)/bin/python -m pip install --quiet -r requirements-test.txt
	touch $(TEST_STAMP)

# DVC's SSH and S3 remotes (docs/remote.md): the `remote` extra.
$(REMOTE_STAMP): $(STAMP) requirements-remote.txt
	$(VENV)/bin/python -m pip install --quiet -r requirements-remote.txt
	touch $(REMOTE_STAMP)

remote: $(REMOTE_STAMP)

# The training curves as pictures, offline: plots/perplexity.svg and .png (the plots extra).
$(PLOTS_STAMP): $(STAMP) requirements-plots.txt
	$(VENV)/bin/python -m pip install --quiet -r requirements-plots.txt
	touch $(PLOTS_STAMP)

# REVS="main workspace my-exp": several runs on one chart (branches, commits, experiments).
plots: $(PLOTS_STAMP)
	$(VENV)/bin/python -m lstmlm.plots --curves metrics/train/plots/metrics --out plots \
		$(if $(REVS),--revs $(REVS))

# The tour of the library in Jupyter (requirements-notebook.txt: Jupyter and the plots extra).
$(NOTEBOOK_STAMP): $(STAMP) requirements-notebook.txt requirements-plots.txt
	$(VENV)/bin/python -m pip install --quiet -r requirements-notebook.txt
	touch $(NOTEBOOK_STAMP)

notebook: $(NOTEBOOK_STAMP)
	$(VENV)/bin/jupyter lab notebooks/tour.ipynb

# A local page to write with the model (http://127.0.0.1:8000/); MODEL=path for another one.
serve: $(SERVE_STAMP)
	$(VENV)/bin/python -m lstmlm serve --model $(MODEL)

# Runs the whole pipeline, then sets its figures beside the committed ones (tools/compare.py).
# Stages call `python`, so the venv goes first on PATH.
pipeline: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" dvc repro
	$(VENV)/bin/python tools/compare.py

# `dvc metrics diff REV` (default HEAD) less timings and step counters: REV=main, an experiment.
compare: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" python tools/compare.py --diff $(REV)

# The experiments: the params that differ, the static and the adapted perplexities.
exps: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" python tools/compare.py --exps

# Back to the committed results after any number of `dvc exp run`s: params.yaml, dvc.lock
# and metrics/ as committed at REV (default HEAD), data/ from DVC's cache, else the remote,
# else this machine's own run of those params from the run-cache. Uncommitted changes go to
# `git stash`; code and conf/ edits stay. Nothing is trained (tools/restore.py).
restore:
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" python tools/restore.py --rev $(REV)

test: $(TEST_STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" python -m pytest -q

test-fast: $(TEST_STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" python -m pytest -q -m "not slow"

# Benchmarks on the real data (minutes, not a test). repro_speed and dynamic_grid need
# `make pipeline` first; hostile_input takes `--before REV` for a revision's figures beside.
bench: $(STAMP) $(SERVE_STAMP) $(PLOTS_STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" python bench/data_speed.py
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" python bench/data_scale.py
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" python bench/train_speed.py
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" python bench/train_profile.py
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" python bench/ladder.py --out plots/ladder
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" python bench/generate_speed.py
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" python bench/repro_speed.py
	-PATH="$(CURDIR)/$(VENV)/bin:$$PATH" python bench/pull_speed.py  # needs a remote: skipped without
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" python bench/dynamic_grid.py
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" python bench/hostile_input.py

clean:
	rm -rf $(VENV)
