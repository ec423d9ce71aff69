# accounts-grpc: the two commands are `make serve` and `make test`; everything sets itself up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BUF := node_modules/.bin/buf
# `make serve GRPC_PORT=9000 HTTP_PORT=9080` passes those ports as flags; without them
# the service's own settings apply: ACCOUNTS_* variables, else 50051 and 8080
GRPC_PORT ?=
HTTP_PORT ?=
SERVE_FLAGS = $(strip $(if $(GRPC_PORT),--grpc-port $(GRPC_PORT)) \
	$(if $(HTTP_PORT),--http-port $(HTTP_PORT)))
FUZZ_EXAMPLES ?= 200
FUZZ_SEED ?= random

.PHONY: serve test fuzz gen lint bench openapi clean venv check-gen proto-deps

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# build/proto-deps (the google/api protos ours import, from googleapis-common-protos) and
# build/proto-released (protos/ at protos/RELEASED): plain `buf lint`, `buf build` and
# `buf breaking --against build/proto-released` work offline, see buf.yaml
proto-deps: $(STAMP)
	$(PY) scripts/protogen.py deps

$(BUF): package.json
	npm install --no-audit --no-fund --silent
	touch $(BUF)

# Every setting from its ACCOUNTS_* variable (a flag would beat it); ACCOUNTS_PRINT_BOOTSTRAP
# defaults to true here: the credentials of a first admin, on an empty database
serve: $(STAMP)
	ACCOUNTS_PRINT_BOOTSTRAP="$${ACCOUNTS_PRINT_BOOTSTRAP:-true}" $(PY) -m accounts_grpc.cli serve $(SERVE_FLAGS)

test: $(STAMP) $(BUF) proto-deps
	$(PY) -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

# The fuzz tests of `make test`, longer: FUZZ_EXAMPLES cases per REST operation and per RPC,
# a fresh seed each run (printed; FUZZ_SEED=<n> replays one). Prints the cases run.
fuzz: $(STAMP)
	ACCOUNTS_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) ACCOUNTS_FUZZ_SEED=$(FUZZ_SEED) $(PY) -m pytest -q -s \
		-p no:cacheprovider --timeout 3600 tests/e2e/test_fuzz_rest.py tests/e2e/test_fuzz_grpc.py \
		$(PYTEST_ARGS)

# gen/ from the protos, then what the REST side is documented from (scripts/openapigen.py)
gen: $(STAMP) proto-deps
	$(PY) scripts/protogen.py gen
	$(PY) scripts/openapigen.py descriptors
	$(PY) scripts/openapigen.py openapi

check-gen: $(STAMP)
	$(PY) scripts/protogen.py check
	$(PY) scripts/openapigen.py check

lint: $(STAMP) $(BUF) proto-deps
	$(PY) scripts/protogen.py lint
	$(PY) scripts/protogen.py breaking
	$(VENV)/bin/ruff check src tests bench scripts
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

openapi: $(STAMP)
	$(PY) scripts/openapigen.py openapi

bench: $(STAMP)
	$(PY) -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) node_modules build .pytest_cache
