# accounts-grpc: the two commands are `make serve` and `make test`; everything sets itself up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BUF := node_modules/.bin/buf
GRPC_PORT ?= 50051
HTTP_PORT ?= 8080

.PHONY: serve test gen lint bench openapi clean venv check-gen

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

$(BUF): package.json
	npm install --no-audit --no-fund --silent
	touch $(BUF)

serve: $(STAMP)
	$(PY) -m accounts_grpc.cli serve --grpc-port $(GRPC_PORT) --http-port $(HTTP_PORT) --print-bootstrap

test: $(STAMP) $(BUF)
	$(PY) -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

gen: $(STAMP)
	$(PY) scripts/protogen.py gen
	$(PY) -m accounts_grpc.rest.openapi --write-descriptors
	$(PY) -m accounts_grpc.rest.openapi > openapi.json.tmp && mv openapi.json.tmp openapi.json

check-gen: $(STAMP)
	$(PY) scripts/protogen.py check
	$(PY) -m accounts_grpc.rest.openapi --check

lint: $(STAMP) $(BUF)
	$(PY) scripts/protogen.py lint
	$(VENV)/bin/ruff check src tests bench scripts
	$(VENV)/bin/mypy

openapi: $(STAMP)
	$(PY) -m accounts_grpc.rest.openapi > openapi.json.tmp && mv openapi.json.tmp openapi.json

bench: $(STAMP)
	$(PY) -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) node_modules build .pytest_cache
