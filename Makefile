# Every target sets up what it needs: a fresh machine only needs python3.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

SPLUNK_SDK_WHEEL := .cache/wheels/splunk_sdk-3.0.1-py3-none-any.whl

PARSER_TESTS := tests/test_framing.py tests/test_text.py tests/test_decode.py tests/test_fuzz.py \
                tests/test_samples.py tests/test_text_json_equivalence.py tests/test_webhook.py tests/test_hexdump.py tests/test_senders.py \
                tests/test_gotypes.py
# Splunk 9 runs Python 3.9 and Splunk 10 Python 3.13: the parser core is tested
# on both as the Splunk app runs it (standard library only: its json path, no
# C accelerator), then the fast path again with the accelerator built.
SPEEDUPS_TESTS := tests/test_speedups.py tests/test_decode.py tests/test_text.py tests/test_gotypes.py
PYENV_ROOT ?= $(HOME)/.pyenv
PARSER_PYTHONS ?= $(lastword $(wildcard $(PYENV_ROOT)/versions/3.9.*/bin/python3)) $(lastword $(wildcard $(PYENV_ROOT)/versions/3.13.*/bin/python3))

.PHONY: run test test-parser-pythons bench splunk-app system-deps clean

# setup.py builds the optional C accelerators (parser, syslog sink) in place.
$(STAMP): setup.cfg setup.py pyproject.toml parser/nvparser/_speedups.c syslog_out/nvsiem_syslog/_speedups.c
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# The system packages the tests use (real peers: nc.traditional, openssl,
# logger, rsyslogd; libmagic for AppInspect; gcc for the C accelerator).
system-deps:
	@PY=$(PY) .ci/system-deps

run: $(STAMP)
	BIN=$(BIN) examples/run.sh

test: system-deps $(STAMP)
	$(BIN)/python -m pytest

test-parser-pythons:
	@[ $(words $(PARSER_PYTHONS)) -ge 2 ] || { \
	  echo "test-parser-pythons needs Python 3.9 and 3.13: pyenv install 3.9 3.13, or PARSER_PYTHONS='python3.9 python3.13' (found: $(PARSER_PYTHONS))"; exit 1; }
	@for py in $(PARSER_PYTHONS); do \
	  v=$$($$py -c 'import sys; print("%d.%d" % sys.version_info[:2])'); venv=.venv-$$v; \
	  $$venv/bin/python -c 'import pytest, hypothesis, setuptools' 2>/dev/null || \
	    { $$py -m venv $$venv && $$venv/bin/pip install -q pytest hypothesis setuptools; } || exit 1; \
	  so=parser/nvparser/_speedups$$($$py -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))'); \
	  rm -f $$so; \
	  echo "parser tests on Python $$v, pure Python (as the Splunk app runs them)"; \
	  PYTHONPATH=parser $$venv/bin/python -m pytest -q -p no:cacheprovider $(PARSER_TESTS) || exit 1; \
	  echo "parser tests on Python $$v, with the C accelerator"; \
	  $$venv/bin/python setup.py -q build_ext --inplace --build-temp .cache/build-$$v >/dev/null 2>&1; \
	  PYTHONPATH=parser $$venv/bin/python -m pytest -q -p no:cacheprovider $(SPEEDUPS_TESTS); status=$$?; \
	  rm -f $$so; [ $$status = 0 ] || exit 1; \
	done

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
