# make venv  : .venv from requirements.txt (re-run only when requirements.txt or pyproject.toml change)
# make book  : execute every notebook and build the HTML book in _build/html (offline; fails on any error)
# make test  : unit tests and every notebook (nbmake), with the smoke and smoke-gpt2 presets
# make clean : remove the built book and its execution cache
#
# CIRCUITS_PRESET (smoke | cpu | paper) reaches the notebooks from the environment:
#   CIRCUITS_PRESET=smoke make book
# VENV may point elsewhere (.ci/run builds a fresh one in a temporary folder).

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed
DEV_STAMP := $(VENV)/.requirements-dev-installed
TEST_PRESET ?= smoke
# nothing may reach a model or data hub unless a preset asks for it explicitly (paper: OpenWebText)
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1

.PHONY: venv book test clean

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install -r requirements.txt
	touch $@

# the tests also cross-check against TransformerLens 3.x, which the book itself does not need
$(DEV_STAMP): $(STAMP) requirements-dev.txt
	$(PYTHON) -m pip install -r requirements-dev.txt
	touch $@

# plotly.js comes from the installed plotly package, so the page script always matches the
# version that drew the figures; _static/plotly.min.js is not committed. _build/html is removed
# first so that the site holds exactly the pages of the toc (Sphinx never deletes stale pages).
# _build/.circuits holds the results chapters share within one build (circuits.findings.cache): cleared first,
# so that every build computes them afresh from the models.
book: venv
	rm -rf _build/html _build/.circuits
	mkdir -p _static
	cp "$$($(PYTHON) -c 'import pathlib, plotly; print(pathlib.Path(plotly.__file__).parent / "package_data" / "plotly.min.js")')" _static/plotly.min.js
	PATH="$(abspath $(VENV))/bin:$$PATH" jupyter-book build . --all -W --keep-going

# the notebooks run twice: with the smoke preset, and with smoke-gpt2 so that every chapter's code runs at GPT-2's
# 50,257-token vocabulary (circuit scans, dumps, browsers) on a CPU
# (their shared results in a cache of their own, cleared first)
TEST_CACHE := CIRCUITS_CACHE=$(CURDIR)/_build/.circuits-test
test: $(DEV_STAMP)
	rm -rf _build/.circuits-test
	$(OFFLINE) $(TEST_CACHE) CIRCUITS_PRESET=$(TEST_PRESET) $(PYTHON) -m pytest --nbmake --nbmake-timeout=600 tests book
	$(OFFLINE) $(TEST_CACHE) CIRCUITS_PRESET=smoke-gpt2 $(PYTHON) -m pytest --nbmake --nbmake-timeout=600 book

# the same as `jupyter-book clean --all .` (html, executed notebooks, cache), without needing the venv
clean:
	rm -rf _build _static/plotly.min.js
