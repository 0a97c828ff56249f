# One venv, pinned dependencies (requirements.lock), Debian chromium for the browser tests.
VENV      ?= .venv
PYTHON    ?= python3
BIN       := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export AUDITLAKE_LAKE ?= $(CURDIR)/lake

.PHONY: setup demo test bench ui explore clean

setup: $(VENV)/.installed

# The two C extensions (batch SHA-256; verify's record matcher and export's row text) build against OpenSSL's
# libcrypto and Python's headers; Debian packages them as below.
NATIVE := auditlake/ledger/_sha256.c auditlake/_records.c auditlake/_sha256_x16.h

$(VENV)/.installed: requirements.lock pyproject.toml $(NATIVE)
	@{ command -v cc >/dev/null 2>&1 && test -f /usr/include/openssl/sha.h \
	   && $(PYTHON) -c "import os, sysconfig; assert os.path.exists(sysconfig.get_paths()['include'] + '/Python.h')"; } 2>/dev/null \
	 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq build-essential libssl-dev python3-dev >/dev/null; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	mkdir -p $(DAGSTER_HOME)
	touch $@

# The main job on the embedded default: a local lake in ./lake.
demo: setup
	$(BIN)/auditlake demo

test: setup
	$(BIN)/pytest -n 2 -q -p no:cacheprovider tests

bench: setup
	$(BIN)/python tests/bench/run.py

ui: setup
	$(BIN)/dagster dev -w workspace.yaml

explore: setup
	$(BIN)/auditlake explore

clean:
	rm -rf $(VENV) .dagster_home lake results
