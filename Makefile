# Event-driven dunning for accounts receivable. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV_VERSION ?= 0.13.9
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
RUN := $(UV) run --frozen
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help env run up down test test-fast lint fmt docs bench clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

env: ## Create or update the virtualenv (.venv) from uv.lock; installs uv if missing
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet "uv==$(UV_VERSION)"
	@$(UV) sync --frozen --all-packages --quiet

run: env ## The whole system on embedded defaults, with a demo on an accelerated clock (Ctrl-C stops)
	$(RUN) arctl demo

up: env ## The same stack in the background; returns once every service answers /readyz
	$(RUN) arctl stack up

down: env ## Stop the background stack
	$(RUN) arctl stack down

test: env ## The whole test suite (unit, integration, e2e) against real broker, database and SMTP
	$(RUN) pytest $(PYTEST_ARGS)

test-fast: env ## Unit tests only
	$(RUN) pytest -m unit $(PYTEST_ARGS)

lint: env ## ruff (lint and format check) and mypy strict
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy libs/events/src libs/web/src libs/ops/src services/invoice-svc/src services/payment-svc/src services/dunning-svc/src services/notify-svc/src

fmt: env ## Format and auto-fix
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

docs: env ## Regenerate JSON Schemas and the AsyncAPI document under libs/events/
	$(RUN) python -m ar_events.docs

bench: env ## Benchmarks: print figures beside their baselines, write bench/results/
	$(RUN) python -m bench $(BENCH)

clean: ## Remove the virtualenv, caches and var/
	rm -rf .venv var .pytest_cache .mypy_cache .ruff_cache
