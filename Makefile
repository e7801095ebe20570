# The two entry points the README opens with. Each creates the virtual environment it needs when
# missing or out of date, installs tfmi into it with the stack's exact pins, then runs.
#   make demo   the default benchmark, on the reference stack (.venv, Python 3.11)
#   make test   lint, then the test suite on both stacks: reference (.venv) and current (.venv-current)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
# Python 3.12 or 3.13 for the current stack: the first that runs of python3.12/3.13 on PATH (pyenv shims
# included) and pyenv's own 3.12/3.13 installs
CURRENT_PYTHON ?= $(shell for p in python3.12 python3.13 \
	$$(ls -d $$(pyenv root 2>/dev/null)/versions/3.1[23].*/bin/python 2>/dev/null | sort -V); do \
	"$$p" -c 'import sys; assert sys.version_info[:2] in ((3, 12), (3, 13))' 2>/dev/null && \
	{ "$$p" -c 'import sys; print(sys.executable)'; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tfmi-installed
CURRENT_VENV := .venv-current
CURRENT_BIN := $(CURRENT_VENV)/bin
CURRENT_STAMP := $(CURRENT_VENV)/.tfmi-installed

.PHONY: demo test test-reference test-current test-all lint clean

$(STAMP): setup.cfg pyproject.toml constraints/reference.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "the reference stack needs Python 3.11 (tensorflow-privacy supports < 3.12); set PYTHON=/path/to/python3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -c constraints/reference.txt -e '.[dev,ray]'
	touch $(STAMP)

$(CURRENT_STAMP): setup.cfg pyproject.toml constraints/current.txt
	@test -n "$(CURRENT_PYTHON)" || { echo "the current stack needs Python 3.12 or 3.13: set CURRENT_PYTHON=/path/to/python3.12"; exit 1; }
	@$(CURRENT_PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] in ((3, 12), (3, 13)) else "the current stack needs Python 3.12 or 3.13; set CURRENT_PYTHON=/path/to/python3.12")'
	test -x $(CURRENT_BIN)/python || $(CURRENT_PYTHON) -m venv $(CURRENT_VENV)
	$(CURRENT_BIN)/python -m pip install -c constraints/current.txt -e '.[dev,ray]'
	touch $(CURRENT_STAMP)

demo: $(STAMP)
	$(BIN)/tfmi benchmark

test: test-reference test-current

# One pytest worker per core, up to 4 (pytest-xdist), each test file kept on one worker so its module
# fixtures are built once. --durations: CI's log names the slowest tests, the candidates for the `slow`
# mark when a suite nears 15 min
PYTEST := -m pytest -n auto --maxprocesses 4 --dist loadfile
test-reference: $(STAMP)
	$(BIN)/ruff check tfmi cli tests
	$(BIN)/python $(PYTEST) --durations=15

test-current: $(CURRENT_STAMP)
	$(CURRENT_BIN)/python $(PYTEST) --durations=15

test-all: $(STAMP) $(CURRENT_STAMP)
	$(BIN)/python $(PYTEST) -m ''
	$(CURRENT_BIN)/python $(PYTEST) -m ''

lint: $(STAMP)
	$(BIN)/ruff check tfmi cli tests

clean:
	rm -rf $(VENV) $(CURRENT_VENV) build *.egg-info
