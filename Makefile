# mailbridge: `make demo` runs the demo full sync, `make test` runs every test. Both install first.
SHELL := /bin/bash
PYTHON ?= python3
UV := $(PYTHON) -m uv
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint pytest slow samples scale docs bench ui sandbox simulate chaos clean

$(STAMP): pyproject.toml uv.lock
	$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	$(UV) sync --frozen --quiet --compile-bytecode
	$(BIN)/dbt parse --project-dir dbt_project --profiles-dir dbt_project --quiet
	touch $(STAMP)

# bytecode compiled once, here: where PYTHONDONTWRITEBYTECODE is set (CI images, containers),
# every process would otherwise compile each module it imports, about 5 s per Dagster or dbt
# process. The project's own modules are refreshed on every make (only the changed ones)
install: $(STAMP)
	@$(BIN)/python -m compileall -q mailbridge pipelines assets sandbox bench >/dev/null

demo: install
	$(BIN)/mailbridge demo $(ARGS)

test: lint pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# the default suite; the end-to-end tests run in `slow`, the simulation's and the chaos suite's
# fixed samples in `samples`. Tests go to whichever worker is free (a module's shared world is
# built at most once per worker): by module, the compliance regressions alone held one worker
# for 14 minutes
pytest: install
	$(BIN)/pytest -n 2 --dist worksteal -m "not slow and not simulation and not chaos and not scale" $(ARGS)

# the end-to-end tests: mailbridge run as a process of its own or through Dagster (the CLI's
# syncs, pushes and sends, killed syncs and pushes, the report in a browser), and the compliance
# regressions that sync, push and sync again
slow: install
	$(BIN)/pytest -n 2 --dist worksteal -m "slow and not simulation and not chaos and not scale" $(ARGS)

# the fixed samples of the slow suites (seeded simulation, chaos schedules); SAMPLES picks
SAMPLES ?= simulation or chaos
samples: install
	$(BIN)/pytest -n 2 --dist loadfile -m "$(SAMPLES)" $(ARGS)

# tests on big worlds (100k contacts): an incremental sync agrees with a full one
scale: install
	$(BIN)/pytest -m scale $(ARGS)

# dbt's documentation of the models as one static page (.mailbridge/docs/static_index.html)
docs: install
	$(BIN)/python -m mailbridge.docs $(ARGS)

bench: install
	$(BIN)/python -m bench.run $(ARGS)

chaos: install
	$(BIN)/python -m tests.chaos $(ARGS)

ui: install
	$(BIN)/mailbridge ui

sandbox: install
	$(BIN)/mailbridge sandbox $(ARGS)

simulate: install
	$(BIN)/mailbridge simulate $(ARGS)

clean:
	rm -rf .mailbridge dbt_project/target dbt_project/logs .pytest_cache .ruff_cache .mypy_cache
