# The two set-up commands of the README: `make run` and `make test`. Each installs what it needs.
PYTHON ?= python3
PIP := $(PYTHON) -m pip

.PHONY: install install-test run test bench

install:
	$(PIP) install -q -e .

install-test:
	$(PIP) install -q -e '.[test,dashboard]'

run: install
	autotune run --model 26B-A4B

test: install-test
	PYTHON=$(PYTHON) bash scripts/install-sglang-parser.sh
	bash scripts/install-postgres.sh
	bash scripts/install-system-tools.sh
	$(PYTHON) -m pytest
