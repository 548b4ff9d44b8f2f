# ebmops: `make demo` runs the pipeline on the embedded default; `make test` runs the tests.
# Both create .venv on first use: torch's CPU wheel first (pinned, so pip never pulls a CUDA build),
# then the project with its dev extras, pinned by constraints.txt.

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.ebmops-installed
TORCH_VERSION := 2.13.0

.PHONY: install demo test test-fast lock clean help

help:
	@echo "make demo      - create .venv if missing, install, run 'ebmops demo' (no server needed)"
	@echo "make test      - same venv, run the whole test suite (servers and slow tests included)"
	@echo "make test-fast - the suite without the slow and server tests (pytest -m 'not slow and not server')"
	@echo "make lock      - refresh constraints.txt from the current venv"
	@echo "make clean     - remove .venv and ./.ebmops"

install: $(INSTALLED)

$(INSTALLED): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	@touch $(INSTALLED)

demo: $(INSTALLED)
	$(VENV)/bin/ebmops demo

test: $(INSTALLED)
	$(PY) -m pytest

# Markers (pyproject.toml): `slow` = more than about 5 s, `server` = starts a real server or browser.
test-fast: $(INSTALLED)
	$(PY) -m pytest -m "not slow and not server"

lock:
	$(PY) -m pip freeze --exclude-editable | grep -v -i '^ebmops' > constraints.txt

clean:
	rm -rf $(VENV) .ebmops
