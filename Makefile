# Every target sets up what it needs: a fresh machine only needs python3.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: run test bench splunk-app system-deps clean

$(STAMP): setup.cfg pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[fast,test]'
	touch $@

# netcat-traditional makes the real captures the tests replay.
system-deps:
	@command -v nc.traditional >/dev/null || { \
	  [ "$$(id -u)" = 0 ] || { echo "install netcat-traditional (apt-get install netcat-traditional)"; exit 1; }; \
	  apt-get update -qq && apt-get install -y -qq netcat-traditional; }

run: $(STAMP)
	$(BIN)/nvsiem replay examples/syslog-dump.hex --out out/records.jsonl

test: $(STAMP) system-deps
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build dist out .pytest_cache .hypothesis
