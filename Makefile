# The front door. `make serve` and `make test` each create the environment first when it is missing: the light
# one (serving only) for `make serve`, the full one (training, DVC, MLflow, the tests) for everything else.
SHELL := /bin/bash
PY ?= python3
# uv: the one on PATH, else `python3 -m uv`, else a private copy in .uv-bootstrap/ (a virtual environment, so
# pip installs it even where the system Python refuses pip installs, PEP 668).
ifneq ($(shell command -v uv 2>/dev/null),)
UV := uv
else ifeq ($(shell $(PY) -m uv --version >/dev/null 2>&1 && echo yes),yes)
UV := $(PY) -m uv
else
UV := .uv-bootstrap/bin/uv
UV_BOOTSTRAP := .uv-bootstrap/bin/uv
endif
RUN := $(UV) run --frozen

# No telemetry, no network calls from the libraries we use.
export BENTOML_DO_NOT_TRACK := true
export GRADIO_ANALYTICS_ENABLED := False
export TF_CPP_MIN_LOG_LEVEL := 2
export DVC_NO_ANALYTICS := 1

.DEFAULT_GOAL := help
.PHONY: help env env-serve env-full serve test test-fast lint params repro bench bench-quick bench-peers bench-torch clean

help:  ## list the targets (this text)
	@grep -hE '^[A-Za-z][A-Za-z_-]*:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  make %-12s %s\n", $$1, $$2}'

.uv-bootstrap/bin/uv:
	@$(PY) -m venv .uv-bootstrap || { echo "error: no uv, and '$(PY) -m venv' failed: install uv, or the venv module (Debian/Ubuntu: apt-get install python3-venv), then run make again" >&2; exit 1; }
	.uv-bootstrap/bin/pip install --quiet uv

# The light environment: the package's own dependencies. --inexact keeps what a full environment added.
.venv/.serve-synced: pyproject.toml uv.lock | $(UV_BOOTSTRAP)
	$(UV) sync --frozen --no-default-groups --inexact
	@touch $@

# The full environment: + the `train` and `dev` dependency groups (pyproject.toml's default groups).
.venv/.synced: pyproject.toml uv.lock | $(UV_BOOTSTRAP)
	$(UV) sync --frozen
	@touch $@ .venv/.serve-synced

env-serve: .venv/.serve-synced  ## create/refresh the light environment: serving only, no TensorFlow, DVC, MLflow or test tools

env-full: .venv/.synced  ## create/refresh the full environment from uv.lock (training, pipeline, tests)

env: env-full  ## the same as env-full

serve: env-serve  ## start the service and its page on http://127.0.0.1:3000 (MUSIC=DIR: your audio files; emotune serve --help)
	$(UV) run --frozen --no-sync emotune serve$(if $(MUSIC), --music-dir "$(MUSIC)")

params: env  ## recompose params.yaml from conf/ (run after editing conf/)
	$(RUN) emotune config compose --out params.yaml

repro: params  ## run the DVC pipeline with the current conf/
	$(RUN) dvc repro

lint: env  ## ruff check + ruff format --check (the lint half of make test)
	$(RUN) ruff check .
	$(RUN) ruff format --check .

test: lint  ## lint + the whole test suite (what CI runs)
	$(RUN) pytest

test-fast: lint  ## lint + the tests that need no server, pipeline run, browser or full data (a few minutes at most)
	$(RUN) pytest -m "not slow and not browser"

# The `fer` package, the peer the benchmarks compare against: outside the locked environment (its declared
# dependencies pull torch, MTCNN, moviepy and a second OpenCV, none of which FER(mtcnn=False) uses), in
# .bench-peers/ with the setuptools<81 that still has pkg_resources; benchmarks/peer.py adds it to sys.path.
FER_PEER := fer==25.10.3
.bench-peers/.installed:
	$(UV) pip install --quiet --python .venv/bin/python --target .bench-peers --no-deps "$(FER_PEER)" "setuptools<81"
	@touch $@

bench-peers: env .bench-peers/.installed  ## install the `fer` peer for the benchmarks

# Plain PyTorch for figure 1's reference row and the GPU path's tests (emotune.portable on the CPU), in
# .bench-torch/ and outside the locked environment (the benchmark and the portable trainer run it in processes
# of their own). pip, not uv: pip takes a CPU build where the machine offers one; from PyPI alone it is a large
# download. Without it the figure says the row was skipped and those tests skip.
TORCH_REF := torch==2.13.*
.bench-torch/.installed:
	$(PY) -m pip install --quiet --target .bench-torch "$(TORCH_REF)"
	@touch $@

bench-torch: env .bench-torch/.installed  ## install CPU PyTorch: the training figure's reference row, the GPU path's tests (optional)

bench: bench-peers  ## the full benchmark (docs/benchmarks.md): Markdown on stdout, JSON in bench-results/
	@$(MAKE) --no-print-directory bench-torch || echo "PyTorch reference unavailable: figure 1 skips its row"
	$(RUN) python -m benchmarks.run --full

bench-quick: bench-peers  ## the CI-sized benchmark (small training model, few repeats)
	$(RUN) python -m benchmarks.run --quick

clean:  ## delete .venv, artifacts/, test caches, the benchmark peers and a bootstrapped uv
	rm -rf .venv artifacts .pytest_cache .bench-peers .bench-torch .uv-bootstrap
