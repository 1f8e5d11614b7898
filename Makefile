# ChurnGuard: `make demo` and `make test` work on a fresh clone; everything else is optional.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The committed model in model_artifacts/ was made by exactly these commands (`make model`).
MODEL_DATA := data/train-events.csv.gz
MODEL_GENERATE := --users 20000 --days 365 --seed 7 --as-of 2026-11-01 --out $(MODEL_DATA)
MODEL_TRAIN := --events $(MODEL_DATA) --cutoff 2026-10-02 --horizon-days 30 --out model_artifacts

RUNTIME := .venv-runtime

.PHONY: install demo test lint benchmark cold-start model clean

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/python -m chalicelib demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest

benchmark: install
	$(BIN)/python scripts/benchmark.py

# What a Lambda container has: the runtime requirements, boto3 and chalice (pins from requirements-dev.txt).
$(RUNTIME)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(RUNTIME)
	$(RUNTIME)/bin/python -m pip install --quiet -r requirements.txt $$(grep -E '^(boto3|chalice)==' requirements-dev.txt)
	touch $@

cold-start: install $(RUNTIME)/.installed
	$(BIN)/python scripts/cold_start.py --python $(RUNTIME)/bin/python

model: install
	$(BIN)/python -m chalicelib generate $(MODEL_GENERATE)
	$(BIN)/python -m chalicelib train $(MODEL_TRAIN)

clean:
	rm -rf $(VENV) $(RUNTIME) .pytest_cache .ruff_cache data
