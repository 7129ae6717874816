# Set-up and checks. Every install step lives here and in pyproject.toml.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: install test demo clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[test]'
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q

# The method end to end at CPU scale (see `dsn demo --help`); DEMO_ARGS=--quick for the few-minute run.
demo: install
	$(BIN)/dsn demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
