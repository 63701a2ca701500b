# The front door. `make serve` and `make test` each create the environment first when it is missing.
SHELL := /bin/bash
PY ?= python3
UV := $(PY) -m uv
RUN := $(UV) run --frozen

# No telemetry, no network calls from the libraries we use.
export BENTOML_DO_NOT_TRACK := true
export GRADIO_ANALYTICS_ENABLED := False
export TF_CPP_MIN_LOG_LEVEL := 2
export DVC_NO_ANALYTICS := 1

.PHONY: env serve test lint params repro bench clean

.venv/.synced: pyproject.toml uv.lock
	@$(PY) -m uv --version >/dev/null 2>&1 || $(PY) -m pip install --quiet uv
	$(UV) sync --frozen
	@touch $@

env: .venv/.synced  ## create/refresh the virtual environment from uv.lock

params: env  ## recompose params.yaml from conf/ (run after editing conf/)
	$(RUN) emotune config compose --out params.yaml

repro: params  ## run the DVC pipeline with the current conf/
	$(RUN) dvc repro

lint: env
	$(RUN) ruff check .
	$(RUN) ruff format --check .

test: env  ## lint + the whole test suite (what CI runs)
	$(RUN) ruff check .
	$(RUN) pytest

clean:
	rm -rf .venv artifacts .pytest_cache
