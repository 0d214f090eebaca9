# Two entry points: `make demo` and `make test`. Each sets up what it needs by itself.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := aria2 mktorrent opentracker wrk transmission-daemon

.PHONY: demo test lint bench apt

$(BIN)/shoal: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# transmission-daemon and opentracker come as services that would start at once, on every
# interface; tests run their own on loopback. A policy-rc.d that forbids starting services is
# in place for the install (unless the machine has one of its own).
apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		policy=/usr/sbin/policy-rc.d; added=""; \
		if [ ! -e $$policy ]; then \
			printf '#!/bin/sh\nexit 101\n' | $(SUDO) tee $$policy >/dev/null && $(SUDO) chmod 755 $$policy && added=1; \
		fi; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
		status=$$?; [ -z "$$added" ] || $(SUDO) rm -f $$policy; exit $$status; \
	fi

demo: $(BIN)/shoal
	$(BIN)/shoal demo
	$(BIN)/shoal demo --ledger

lint: $(BIN)/shoal
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict src/shoal

test: $(BIN)/shoal apt lint
	$(BIN)/pytest -q

bench: $(BIN)/shoal apt
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/throughput.py --encryption rc4
	$(BIN)/python bench/rc4.py
	$(BIN)/python bench/create.py
	$(BIN)/python bench/tracker_load.py
	$(BIN)/python bench/sim.py
	$(BIN)/pip install -q -e '.[dev,bench]'
	$(BIN)/python bench/architectures.py --jobs 2
