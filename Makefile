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

# A live 3-broker cluster on 127.0.0.1:5672-5674 with its manager; journals in ./data, the login in
# ./data/credentials. More options of `qstore-cluster up`: make run ARGS="--auth no".
run: $(STAMP)
	$(BIN)/qstore-cluster up $(ARGS)

test: $(STAMP)
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python bench/journal_bench.py

clean:
	rm -rf $(VENV) build *.egg-info
