# pullrun developer tasks. Everything runs on this machine: a Docker engine and
# three registries on 127.0.0.1 are provisioned by scripts/ (see each script's
# header). Debian 12 and root are assumed for installing what is missing.
#
#   make install     Debian packages (chromium, ...) and .venv with pip install -e '.[dev]'
#   make provision   Docker engine + registries on 127.0.0.1:5000-5002 + test images
#   make engines     provision, plus engines 2 (unix) and 3 (tcp+TLS) and a two-node swarm (scripts/swarm.sh) for the tests and bench
#   make run         provision, then `pullrun serve` (RUN_ARGS='--port 9000', or PULLRUN_* env)
#   make lint        ruff (check and format) + mypy
#   make test        install, provision, lint, the JS tests, then pytest (PYTEST_ARGS='-k pull -x')
#   make unit        the unit tests alone (no Docker, no browser), in well under a minute
#   make coverage    the unit tests with coverage of backend/ (needs no Docker either)
#   make test-js     the pages' scripts (static/js) under Node's test runner: node --test tests/js/
#   make js-fixtures rebuild tests/js/fixtures from the server's code (a unit test says when)
#   make bench       install, provision, then the benchmarks against the docker CLI (BENCH_ARGS='1 3 --quick')
#   make stop        stop the registries/dockerds that the scripts started
#   make clean       caches and test output;  make distclean  also .venv

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV := .venv
PYTEST_ARGS ?=
RUN_ARGS ?=
BENCH_ARGS ?=

.PHONY: help install provision engines run lint test unit coverage test-js js-fixtures bench stop clean distclean

help:
	@sed -n 's/^#   make/  make/p' Makefile

install:
	scripts/deps.sh

provision:
	scripts/engine.sh
	scripts/registry.sh
	scripts/images.sh

engines: provision
	scripts/engines.sh
	scripts/swarm.sh

run: install provision
	@echo "sample image: 127.0.0.1:5000/pullrun/busybox:latest"
	$(VENV)/bin/pullrun serve $(RUN_ARGS)

lint: install
	$(VENV)/bin/ruff check backend tests bench
	$(VENV)/bin/ruff format --check backend tests bench
	$(VENV)/bin/mypy

test: install engines lint test-js
	source scripts/test-env.sh && $(VENV)/bin/pytest -q $(PYTEST_ARGS)

unit: install
	$(VENV)/bin/pytest -q tests/unit $(PYTEST_ARGS)

coverage: install
	$(VENV)/bin/pytest -q tests/unit --cov=backend --cov-report=term-missing:skip-covered $(PYTEST_ARGS)

test-js: install
	node --test tests/js/

js-fixtures: install
	$(VENV)/bin/python -m tests.js.make_fixtures

bench: install engines
	source scripts/test-env.sh && $(VENV)/bin/python -m bench $(BENCH_ARGS)

stop:
	scripts/registry.sh stop
	scripts/swarm.sh stop
	scripts/engines.sh stop
	scripts/engine.sh stop

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis tests/artifacts .pullrun-data
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -print0 | xargs -0 rm -rf

distclean: clean
	rm -rf $(VENV) *.egg-info
