# Every target sets up what it needs: a fresh machine only needs python3.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

SPLUNK_SDK_WHEEL := .cache/wheels/splunk_sdk-3.0.1-py3-none-any.whl

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
	BIN=$(BIN) examples/run.sh

test: $(STAMP) system-deps
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

# PyPI serves splunk-sdk 3.0.1 only to Python >= 3.13; the wheel is pure
# Python and the parts the app vendors run on Splunk 9's Python 3.9 too.
$(SPLUNK_SDK_WHEEL): $(STAMP)
	$(BIN)/pip download -q --no-deps --only-binary=:all: --python-version 3.13 -d .cache/wheels splunk-sdk==3.0.1

splunk-app: $(STAMP) $(SPLUNK_SDK_WHEEL)
	$(BIN)/python splunk_app/build.py --sdk-wheel $(SPLUNK_SDK_WHEEL)

clean:
	rm -rf $(VENV) .venv-appinspect .cache build dist out .pytest_cache .hypothesis
