# make test: virtualenv + requirements + the test suite. make demo: see README.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: test test-slow demo bench clean-venv

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

test: $(VENV)/.installed
	$(PY) -m pytest -q tests

# long checks (marked slow), not part of CI's default run
test-slow: $(VENV)/.installed
	$(PY) -m pytest -q -m slow tests

clean-venv:
	rm -rf $(VENV)
