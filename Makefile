# TALOS: `make up` runs the whole mesh locally; `make test` installs what is missing and tests.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
CONSTRAINTS := requirements/constraints.txt
PACKAGES := protos services/common sdk services/billing services/moderation services/render services/gateway dev
STAMP := $(VENV)/.talos-installed
PYPROJECTS := $(addsuffix /pyproject.toml,$(PACKAGES))

.PHONY: up test lint typecheck unit protos contract protos-check bench images clean-venv

$(PY):
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

# torch goes first, pinned by the constraints file: otherwise pip pulls a multi-GB CUDA build.
$(STAMP): $(PY) $(CONSTRAINTS) requirements/dev.txt $(PYPROJECTS)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q -c $(CONSTRAINTS) torch==2.13.0
	$(PIP) install -q --no-deps -c $(CONSTRAINTS) clip-anytorch
	$(PIP) install -q -c $(CONSTRAINTS) --config-settings editable_mode=compat $(addprefix -e ,$(PACKAGES))
	$(PIP) install -q -c $(CONSTRAINTS) -r requirements/dev.txt
	touch $(STAMP)

up: $(STAMP)
	$(PY) -m talos_dev.mesh up

protos: $(STAMP)
	$(PY) protos/generate.py

# The OpenAPI document and the docs tables, regenerated from talos.api.v1.contract.
contract: $(STAMP)
	$(PY) -m talos_gateway.openapi
	$(PY) -m talos_gateway.contract_docs docs/api.md

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(VENV)/bin/pytest

test: lint typecheck unit

bench: $(STAMP)
	$(PY) bench/render.py
	$(PY) bench/billing.py
	$(PY) bench/moderation.py
	$(PY) bench/relay.py
	$(PY) bench/mesh.py

# The Debian base (debootstrap, as root), then every image of deploy/docker/images.list.
images:
	@command -v docker >/dev/null && docker info >/dev/null 2>&1 || { echo "make images needs a running container engine"; exit 1; }
	bash deploy/docker/build-images.sh

# The images run as the cluster runs them (read-only root, uid 10001, no capabilities) on one
# Docker network, billing on this machine's PostgreSQL; one image generated end to end, charged.
.PHONY: container-smoke
container-smoke: $(STAMP) images
	CONTAINER_SMOKE=1 $(VENV)/bin/pytest -p no:cacheprovider tests/deploy/test_containers.py

clean-venv:
	rm -rf $(VENV)
