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
	@echo "make servers-up / servers-down / servers-status - team servers (PostgreSQL, MLflow with auth, Prefect + worker), docs/team-setup.md"
	@echo "make test-integration - start those servers in a temporary folder, run tests/integration against them, stop them"
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

# The suite on TEST_WORKERS processes (pytest-xdist): most of its time is spent waiting on subprocesses
# and servers, so more processes than cores pays. A test file is one unit of work (`--dist loadfile`:
# its module fixtures are built once, its tests keep their order); the longest files go first
# (tests/conftest.py, LONGEST_FIRST). `make test TEST_WORKERS=0` runs everything in one process.
TEST_WORKERS ?= 4
XDIST := -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test: $(INSTALLED)
	$(PY) -m pytest $(XDIST)

# Markers (pyproject.toml): `slow` = more than about 5 s, `server` = starts a real server or browser.
test-fast: $(INSTALLED)
	$(PY) -m pytest -m "not slow and not server"

lock:
	$(PY) -m pip freeze --exclude-editable | grep -v -i '^ebmops' > constraints.txt

clean:
	rm -rf $(VENV) .ebmops

# --- Team servers (docs/team-setup.md): PostgreSQL 15, MLflow server with basic auth, Prefect server
# and a process worker, as plain processes under $(EBMOPS_SERVERS_DIR), bound to 127.0.0.1.
EBMOPS_SERVERS_DIR ?= $(CURDIR)/.ebmops-servers
export EBMOPS_SERVERS_DIR
TEAM_INSTALLED := $(VENV)/.ebmops-team-installed

.PHONY: team-install servers-up servers-down servers-purge servers-status servers-env test-integration

team-install: $(TEAM_INSTALLED)

$(TEAM_INSTALLED): $(INSTALLED) pyproject.toml constraints.txt
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,team]"
	@touch $(TEAM_INSTALLED)

# Prints the client exports last: eval "$(make -s servers-env)" after it, or source $(EBMOPS_SERVERS_DIR)/env.sh.
servers-up: $(TEAM_INSTALLED)
	@bash infra/servers-up.sh

servers-down:
	@bash infra/servers-down.sh

# Stops them and deletes their folder (databases, artifacts, logs).
servers-purge:
	@bash infra/servers-down.sh --purge

servers-status:
	@bash infra/servers-status.sh

servers-env:
	@test -f "$(EBMOPS_SERVERS_DIR)/env.sh" || { echo "no $(EBMOPS_SERVERS_DIR)/env.sh: run 'make servers-up' first" >&2; exit 1; }
	@cat "$(EBMOPS_SERVERS_DIR)/env.sh"

# Starts its own servers (in a temporary folder, free ports) and stops them at the end.
test-integration: $(TEAM_INSTALLED)
	$(PY) -m pytest -m integration tests/integration
