# The two entry points the README opens with. Each creates .venv (Python 3.11) and installs tfmi into
# it when missing or out of date, then runs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tfmi-installed

.PHONY: demo test test-all lint clean

$(STAMP): setup.cfg pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "tfmi needs Python 3.11 (tensorflow-privacy supports < 3.12); set PYTHON=/path/to/python3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tfmi benchmark

test: $(STAMP)
	$(BIN)/ruff check tfmi cli tests
	$(BIN)/python -m pytest

test-all: $(STAMP)
	$(BIN)/python -m pytest -m ''

lint: $(STAMP)
	$(BIN)/ruff check tfmi cli tests

clean:
	rm -rf $(VENV) build *.egg-info
