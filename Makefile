# The two commands of the README, and the checks CI runs. Each target sets up
# the virtualenv it needs (.venv) on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-fast test-oldest check bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

# The demo's own stamp: the package with only the extras the walkthrough uses.
DEMO_STAMP := $(VENV)/.demo-stamp
$(DEMO_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	$(BIN)/python -m pip install -q -e ".[demo]"
	touch $@

demo: $(DEMO_STAMP)
	$(BIN)/python examples/walkthrough.py

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The inner loop: everything but the tests marked slow (CI runs `make test`, all of them).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# The suite on the oldest SQLAlchemy sa_djblob supports (CI runs it without the slow tests).
OLDEST := .venv-sqlalchemy2045
$(OLDEST)/.installed-stamp: pyproject.toml
	test -x $(OLDEST)/bin/python || $(PYTHON) -m venv $(OLDEST)
	$(OLDEST)/bin/python -m pip install -q -U pip
	$(OLDEST)/bin/python -m pip install -q -e ".[test]" "sqlalchemy==2.0.45"
	touch $@

test-oldest: $(OLDEST)/.installed-stamp
	$(OLDEST)/bin/python -m pytest $(PYTEST_ARGS)

check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	# the tests: top-level modules (no __init__.py), checked but not strict (tests/mypy.ini)
	cd tests && MYPYPATH=.:.. ../$(BIN)/mypy --config-file mypy.ini *.py helpers
	$(BIN)/lint-imports --no-cache

bench: $(STAMP)
	$(BIN)/python benchmarks/codec.py
	$(BIN)/python benchmarks/external.py
	$(BIN)/python benchmarks/sweep.py
	$(BIN)/python benchmarks/first_commit.py
	$(BIN)/python benchmarks/fsync.py
	$(BIN)/python benchmarks/durable_insert.py
	$(BIN)/python benchmarks/async_stall.py
	$(BIN)/python benchmarks/cancel.py
	$(BIN)/python benchmarks/streaming.py --rows 3000

clean:
	rm -rf $(VENV) $(OLDEST) build dist *.egg-info
