# Two entry points, both self-installing into ./.venv (only Python 3.11+ and pip needed).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXPORTS ?= sample_exports
WAREHOUSE ?= warehouse/consent.duckdb

.PHONY: run test test-slow install fuzz browser services clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	@# pip drops the DuckDB CLI's executable bit (its wheel records it in a way pip ignores)
	chmod +x $(BIN)/duckdb
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/consent run --exports $(EXPORTS) --warehouse $(WAREHOUSE)

test: $(STAMP) browser services
	$(BIN)/dagster definitions validate -w workspace.yaml
	$(BIN)/python -m pytest

# Long property tests over whole runs (marked slow), left out of `make test` to keep it short.
test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow
	DECIDE_SQL_EXAMPLES=2000 $(BIN)/python -m pytest tests/test_decide_sql.py

fuzz: $(STAMP)
	FUZZ_EXAMPLES=20000 $(BIN)/python -m pytest tests/test_fuzz.py

# The dashboard test drives headless Chromium (Debian's package); without it that one test is skipped.
browser:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1; } || \
	  echo "chromium could not be installed: the dashboard browser test will be skipped"

# The DuckLake tests start a throwaway PostgreSQL cluster (Debian's package; tests/services.py); without
# it they are skipped (on CI they fail). The S3 endpoint is moto, a dev dependency.
services:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >/dev/null 2>&1; } || \
	  echo "PostgreSQL could not be installed: the DuckLake tests on PostgreSQL will be skipped"

clean:
	rm -rf $(VENV) warehouse .pytest_cache
