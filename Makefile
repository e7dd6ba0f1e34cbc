# The targets humans run; .ci/run runs `make test`.
SHELL := /bin/bash
PYTHON ?= python3
CARGO ?= cargo
# Generated models are cached outside the repo, keyed by nothing but their generator's inputs
# (gen-model.py is deterministic), so every run reuses them.
CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/a3s-power
MODELS ?= $(CACHE)/models
DEMO_MODEL := $(MODELS)/tiny-qwen2-q4_k_m.gguf
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
export PICOLM_BIN := $(TARGET_DIR)/release/a3s-power

.PHONY: setup build demo demo-down demo-local e2e-scenarios test lint unit oracle bench-smoke bench e2e-machinery server-tests operator-checks clean-models

## Install what a fresh machine lacks (Python packages for the generator and the oracle).
setup:
	@$(PYTHON) -c "import gguf, numpy, llama_cpp, jinja2, pytest, openai, jsonschema" 2>/dev/null || \
	  CMAKE_ARGS="$${CMAKE_ARGS:--DGGML_NATIVE=ON}" $(PYTHON) -m pip install --quiet -r tools/requirements.txt
	@$(CARGO) --version >/dev/null

build:
	$(CARGO) build --release -p a3s-power

## The main job on an embedded default: a local Kubernetes control plane with the operator
## (Helm), an attested two-replica InferenceModel, the verifier's verdict and a streamed chat;
## left running until `make demo-down`.
demo: setup
	e2e/demo.sh up

demo-down:
	e2e/demo.sh down

## The runtime alone: generate a small model and chat with it.
demo-local: setup build
	$(PYTHON) tools/gen-model.py --preset tiny-qwen2 --types q4_k_m --out $(MODELS) >/dev/null
	$(PICOLM_BIN) inspect $(DEMO_MODEL)
	$(PICOLM_BIN) run --model $(DEMO_MODEL) --chat --prompt "Tell me about confidential computing." --max-tokens 48 --seed 7

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit:
	PICOLM_TEST_MODELS=$(MODELS) $(CARGO) test --workspace

## picolm against a live llama.cpp on freshly generated models (not only the fixtures).
oracle: setup
	rm -rf $(CACHE)/oracle-live
	$(PYTHON) tools/oracle.py --models $(MODELS) --out $(CACHE)/oracle-live 2>/dev/null
	PICOLM_TEST_MODELS=$(MODELS) PICOLM_ORACLE_DIR=$(CACHE)/oracle-live $(CARGO) test -p picolm --test oracle -- --nocapture

## Everything CI runs.
test: setup lint unit oracle bench-smoke e2e-machinery server-tests operator-checks e2e-scenarios

## A short benchmark run: checks the harness works and prints ratios; never fails on speed.
bench-smoke: setup build
	$(PYTHON) bench/bench.py --smoke --models $(MODELS)

## The real benchmark (see README): picolm vs llama.cpp, same file, same threads, one run.
bench: setup build
	$(PYTHON) bench/bench.py --models $(MODELS)

## The real Kubernetes control plane (built from Go modules, cached) and the process kubelet.
e2e-machinery:
	e2e/run-machinery-tests.sh

## Issue #8's ten scenarios: operator (Helm) + attested runtime pods on the real control plane.
e2e-scenarios: setup
	e2e/run-scenarios.sh

clean-models:
	rm -rf $(MODELS) $(CACHE)/oracle-live

## a3s-power serve against the official openai client (chat, streaming, tools, json_schema, errors, canary, load).
## Also: pulls (local HTTP server, Range resume, 409), integrity pins and .sig, LRU/keep_alive,
## graceful shutdown, 429s, promtool on /metrics (tools/promtool.sh builds it once, cached),
## every curl in README.md, config/*.hcl through `serve --check`.
server-tests: setup
	$(PYTHON) tools/gen-model.py --preset tiny-qwen2 --types q8_0,q4_k_m --out $(MODELS) >/dev/null
	$(CARGO) build -p a3s-power -p power-attest
	PROMTOOL=$$(tools/promtool.sh) PICOLM_TEST_MODELS=$(MODELS) $(PYTHON) -m pytest -q runtime/server/tests/python

## CRD YAML up to date, chart lints and renders (helm from e2e/), CRDs' CEL rules against a real API server.
operator-checks:
	$(CARGO) run -q -p power-crds --bin crdgen -- --check
	H=$$(e2e/build-k8s-bins.sh)/helm && $$H lint --strict charts/a3s-power-operator && $$H template t charts/a3s-power-operator >/dev/null
	$(CARGO) build -q -p power-e2e-kubelet && e2e/with-cluster.sh -- crds/tests/apiserver.sh
