# aimx developer entry points.  `make demo` runs a local demo, `make test` the tests.
SHELL := /bin/bash
PY ?= python3
PORT ?= 2525
# Test processes: one per CPU, at least 2 (the suite waits on sockets and processes).
JOBS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ $$n -lt 2 ] && n=2; echo $$n)
VENV ?= .venv
BIN := $(VENV)/bin
SOURCES := setup.cfg pyproject.toml $(shell find aimx twisted -name '*.py' 2>/dev/null)

.PHONY: install demo test clean

$(VENV)/.installed: $(SOURCES)
	@echo "Creating the virtualenv $(VENV)..."
	@$(PY) -m venv $(VENV) || { echo "python3 -m venv failed: on Debian/Ubuntu run 'apt-get install python3-venv'"; exit 1; }
	@echo "Updating pip in $(VENV)..."
	@$(BIN)/pip install -q --upgrade pip
	@echo "Installing aimx and its dependencies into $(VENV) (about 30 s the first time)..."
	@$(BIN)/pip install -q .
	@echo "Installed: $$($(BIN)/aimx --version)"
	@touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/aimx demo --port $(PORT)

test: install
	@rm -rf _trial_temp
	@set -o pipefail; $(BIN)/python -m twisted.trial -j$(JOBS) tests 2>&1 | tee .trial.log; status=$$?; \
	$(BIN)/python .ci/summary.py .trial.log && exit $$status

clean:
	rm -rf $(VENV) _trial_temp .trial.log build *.egg-info
