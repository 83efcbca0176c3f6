# semcached: the targets people and CI use. `make help` lists them.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PROTO := protos/semcached/v1/semcached.proto
STAMP := $(VENV)/.installed

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# Re-install when the package definition or the Rust sources change.
$(STAMP): $(PY) pyproject.toml Cargo.toml $(shell find rust -name '*.rs')
	$(PIP) install -q -e ".[test]"
	touch $(STAMP)

.PHONY: install
install: $(STAMP) ## set up: virtualenv, Rust build, Python deps, the default embedding model
	$(VENV)/bin/semcached models pull

.PHONY: serve
serve: install ## set up, then start the server with its embedded defaults
	$(VENV)/bin/semcached serve

.PHONY: test
test: install ## set up, then run every test (Rust, stub drift, .pyi check, Python)
	cargo test --quiet
	$(MAKE) --no-print-directory proto-check lint
	$(PY) -m pytest -q

.PHONY: proto
proto: $(PY) ## regenerate the Python stubs from the proto (pinned grpcio-tools)
	@$(PY) -c 'import grpc_tools' 2>/dev/null || $(PIP) install -q grpcio-tools==1.85.1
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=python --pyi_out=python \
		--grpc_python_out=python $(PROTO)

.PHONY: proto-check
proto-check: ## fail when the committed stubs differ from the proto
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && \
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=$$tmp --pyi_out=$$tmp \
		--grpc_python_out=$$tmp $(PROTO) && \
	for f in semcached_pb2.py semcached_pb2.pyi semcached_pb2_grpc.py; do \
		diff -q $$tmp/semcached/v1/$$f python/semcached/v1/$$f >/dev/null || \
		{ echo "python/semcached/v1/$$f is out of date: run 'make proto' and commit"; exit 1; }; \
	done; echo "stubs match the proto"

.PHONY: lint
lint: ## type-check the package and its .pyi against the built native module
	$(PY) -m mypy.stubtest semcached._core
	$(PY) -m mypy

.PHONY: bench
bench: install ## the load-test suite, side by side with GPTCache and the ceilings (BENCHMARKS.md)
	$(PIP) install -q -r benchmarks/requirements.txt
	$(PY) benchmarks/suite.py

.PHONY: clean
clean: ## remove build outputs and the virtualenv
	rm -rf target $(VENV) python/semcached/*.so
