# ChurnGuard: `make demo` and `make test` work on a fresh clone; everything else is optional.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The committed model in model_artifacts/ was made by exactly these commands (`make model`).
MODEL_DATA := data/train-events.csv.gz
MODEL_GENERATE := --users 20000 --days 365 --seed 7 --as-of 2026-11-01 --out $(MODEL_DATA)
MODEL_TRAIN := --events $(MODEL_DATA) --cutoff 2026-10-02 --horizon-days 30 --out model_artifacts

# The Lambda runtime's Python (python3.12), to package with and to run the packaged code in tests.
# Here it comes through pyenv; elsewhere any python3.12 on PATH (PYENV_VERSION is then ignored).
LAMBDA_PYTHON ?= PYENV_VERSION=3.12.1 python3.12
PACKAGER := .venv-package
LAMBDA_ENV := .venv-lambda
IAC := .venv-iac
# The npm tools (asl-validator), pinned in package.json and package-lock.json.
NODE_TOOLS := node_modules/.installed
STAGE ?= dev
PACKAGE_DIR := build/package

.PHONY: install demo test unit lint benchmark cold-start model package iac-check asl-check report-check prove clean

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

# One OpenMP thread per test process: the workers already take every core, and the model's threads would only
# spin against each other (a model call for 20 users took 0.8 s on a loaded machine, milliseconds with one thread).
test: lint asl-check package iac-check $(LAMBDA_ENV)/.installed
	OMP_NUM_THREADS=1 CHURNGUARD_PACKAGE_DIR=$(PACKAGE_DIR) CHURNGUARD_LAMBDA_PYTHON=$(LAMBDA_ENV)/bin/python $(BIN)/python -m pytest -n auto --dist load

# The pure and fake-backed tests (tests/unit, without the slow offline training tests): seconds, no AWS, no build.
unit: install
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest tests/unit -m "not slow" -q -n auto

# The demo's run report in headless Chromium (Debian's): every section and chart renders, nothing is cut off;
# writes docs/report.png. Not part of `make test`: it needs Chromium (CHROMIUM=/path overrides /usr/bin/chromium).
report-check: install
	OMP_NUM_THREADS=1 $(BIN)/python scripts/check_report.py

benchmark: install
	$(BIN)/python scripts/benchmark.py
	$(BIN)/python scripts/benchmark_scale.py

# Packaging runs chalice under the Lambda runtime's Python; chalice imports app.py, so the runtime
# requirements and boto3 are installed beside it (chalice's own pin from requirements-dev.txt).
$(PACKAGER)/.installed: requirements.txt requirements-dev.txt
	rm -rf $(PACKAGER)
	$(LAMBDA_PYTHON) -m venv $(PACKAGER)
	$(PACKAGER)/bin/python -m pip install --quiet -r requirements.txt $$(grep -E '^(boto3|chalice)==' requirements-dev.txt)
	touch $@

# What a Lambda container adds to the package: the runtime's Python and its boto3.
$(LAMBDA_ENV)/.installed: requirements-dev.txt
	rm -rf $(LAMBDA_ENV)
	$(LAMBDA_PYTHON) -m venv $(LAMBDA_ENV)
	$(LAMBDA_ENV)/bin/python -m pip install --quiet $$(grep -E '^boto3==' requirements-dev.txt)
	touch $@

# checkov has a large dependency tree of its own; it lives apart from the project's.
$(IAC)/.installed: requirements-iac.txt
	rm -rf $(IAC)
	$(PYTHON) -m venv $(IAC)
	$(IAC)/bin/python -m pip install --quiet -r requirements-iac.txt
	touch $@

# asl-validator, exactly as package-lock.json pins it (npm ci never resolves anything anew).
$(NODE_TOOLS): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Every state machine definition in infra/statemachines/, its placeholders filled in as Terraform will.
asl-check: install $(NODE_TOOLS)
	$(BIN)/python scripts/validate_asl.py

# The deployment: build/package holds deployment.zip, the Terraform and terraform.tfvars.json.
package: $(PACKAGER)/.installed
	$(PACKAGER)/bin/python scripts/package.py --stage $(STAGE) --out $(PACKAGE_DIR)

# The package's Terraform: `terraform validate` (offline from a provider mirror where there is one; skipped
# with a notice where terraform is not installed), then checkov's security checks.
iac-check: install $(IAC)/.installed
	test -f $(PACKAGE_DIR)/chalice.tf.json || $(MAKE) package
	$(BIN)/python scripts/terraform_validate.py $(PACKAGE_DIR)
	$(IAC)/bin/checkov --config-file .checkov.yaml --directory $(PACKAGE_DIR)

# Cold start of the packaged code: a fresh python3.12 with only the package and boto3, as Lambda runs it.
cold-start: install package $(LAMBDA_ENV)/.installed
	$(BIN)/python scripts/cold_start.py --python $(LAMBDA_ENV)/bin/python --package build/lambda

# The model where the best answer is known (docs/model.md, "Proof on data whose truth is known"): minutes, and
# exits 1 when a criterion fails. Not part of `make test`.
prove: install
	OMP_NUM_THREADS=1 $(BIN)/python scripts/prove_model.py --out build/prove.json

model: install
	$(BIN)/python -m chalicelib generate $(MODEL_GENERATE)
	$(BIN)/python -m chalicelib train $(MODEL_TRAIN)
	$(BIN)/python scripts/pin_model.py model_artifacts

clean:
	rm -rf $(VENV) $(PACKAGER) $(LAMBDA_ENV) $(IAC) node_modules build .pytest_cache .ruff_cache data
