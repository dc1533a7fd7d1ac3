# The two commands of the quick start: `make up` and `make check`.
VENV := .venv
PY := $(VENV)/bin/python
export MICROCLOUD_DIR ?= /var/lib/microcloud

.PHONY: up down check setup lint test integration bench clean

setup:
	scripts/setup.sh

up: setup
	scripts/up.sh

down:
	scripts/down.sh

check: setup lint test integration

lint:
	$(VENV)/bin/ruff check microcloudd cli tests integration bench
	$(VENV)/bin/mypy

test:
	$(PY) -m pytest -q -p no:cacheprovider tests

integration:
	$(PY) -m pytest -q -p no:cacheprovider integration

bench:
	$(PY) -m bench

clean:
	rm -rf $(VENV) build *.egg-info
