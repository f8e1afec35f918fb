# `make test` builds .venv from nothing, installs qstore with its test extra and runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	@echo "qstore: the broker (qstored) arrives with the standalone-broker issue; nothing to run yet."
	@echo "Try the journal tool: $(BIN)/qstore-journal summary fixtures/clean"

test: $(STAMP)
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python bench/journal_bench.py

clean:
	rm -rf $(VENV) build *.egg-info
