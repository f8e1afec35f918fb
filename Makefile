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

# One standalone broker on 127.0.0.1:5672 with ./data, until the cluster manager replaces it.
run: $(STAMP)
	$(BIN)/qstored --interface 127.0.0.1 --port 5672 --data-dir ./data --auto-create yes

test: $(STAMP)
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python bench/journal_bench.py

clean:
	rm -rf $(VENV) build *.egg-info
