# The README's commands: `make demo`, `make test` (every test layer), `make test-unit` (the fast
# layer, tests/unit, alone). Everything they need installs here.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
UV_VERSION := 0.13.9
UV := .tools/bin/uv
VENV := .venv
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)
# Python's compiled bytecode is kept (__pycache__), whatever the shell says: with
# PYTHONDONTWRITEBYTECODE=1 (as on the CI machines) every process compiles about 1,000 modules
# from source again, 0.5-1.5 s per `billing` command, a Celery worker or a console server, and
# the suite starts hundreds of them. `uv sync --compile-bytecode` compiles the dependencies once.
unexport PYTHONDONTWRITEBYTECODE
# pytest-xdist worker processes for the test targets (0: one process); `--dist loadfile` keeps each
# module on one worker, so the tests that share a Redis database never run at once. Two processes
# on two cores: on an idle machine four took 14 min 39 s against 13 min 30 s (708 tests)
TEST_WORKERS ?= 2
PYTEST_PARALLEL := -n $(TEST_WORKERS) --dist loadfile

.PHONY: demo test test-unit install system-deps test-system-deps services lint format check bench bench-rating bench-memory bench-close bench-console bench-workers bench-scale bench-render bench-rerender bench-render-growth clean

demo: install  ## install, then close last month against the built-in emulator (SQLite, files)
	$(VENV)/bin/billing demo

test: install test-system-deps services  ## install, start PostgreSQL and Redis if needed, lint, run every test (tests/unit, tests/integration, tests/e2e)
	$(MAKE) --no-print-directory check
	$(VENV)/bin/pytest $(PYTEST_PARALLEL) tests

test-unit: install test-system-deps  ## the fast layer alone: tests/unit (no database, no network, no services started)
	$(VENV)/bin/pytest $(PYTEST_PARALLEL) tests/unit

install: system-deps $(UV)  ## the locked dependencies into .venv
	$(UV) sync --frozen --compile-bytecode --python "$$("$(PYTHON)" -c 'import sys; print(sys.executable)')"

$(UV):
	"$(PYTHON)" -m venv .tools
	.tools/bin/pip install --quiet "uv==$(UV_VERSION)"

system-deps:  ## the shared libraries WeasyPrint needs, from Debian's packages when missing
	@scripts/install-system-deps.sh runtime

test-system-deps:
	@scripts/install-system-deps.sh test

services:  ## start PostgreSQL and Redis when they are not running
	@scripts/ensure-services.sh

check:  ## ruff, formatting, mypy and the import-layer contracts
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy billing workers
	$(VENV)/bin/lint-imports

bench: bench-rating bench-memory bench-workers bench-close bench-render bench-rerender bench-render-growth  ## the benchmarks (not bench-scale); figures in bench/results/ and docs/PERFORMANCE.md

bench-rating: install  ## rating of 1,000,000 usage rows on one core
	$(VENV)/bin/python -m bench.rating

bench-memory: install  ## peak memory of a close over 10 pages against 100 pages
	$(VENV)/bin/python -m bench.fetch_memory

bench-close: install services  ## the close of BENCH_ORGS orgs (1,000) on PostgreSQL, stage by stage, beside each stage's floor
	$(VENV)/bin/python -m bench.close --end-to-end $(if $(BENCH_ORGS),--orgs $(BENCH_ORGS))
	$(VENV)/bin/python -m bench.report $(if $(BENCH_ORGS),--orgs $(BENCH_ORGS))

bench-console: install services  ## the console's Review and invoice pages over HTTP on BENCH_CONSOLE_ORGS orgs (5,000), median and p95
	$(VENV)/bin/python -m bench.console $(if $(BENCH_CONSOLE_ORGS),--orgs $(BENCH_CONSOLE_ORGS)) $(if $(BENCH_CONSOLE_REQUESTS),--requests $(BENCH_CONSOLE_REQUESTS))
	$(VENV)/bin/python -m bench.report

bench-workers: install services  ## the close of BENCH_WORKER_ORGS orgs (200) on 1 and then 2 Celery worker processes
	$(VENV)/bin/python -m bench.workers $(if $(BENCH_WORKER_ORGS),--orgs $(BENCH_WORKER_ORGS))

bench-render: install test-system-deps  ## a small, the median and a 200-line statement printed by WeasyPrint (optimised and plain paths) and by headless Chromium (Debian's), BENCH_RENDER_REPEAT (15) times each
	$(VENV)/bin/python -m bench.render_peer $(if $(BENCH_RENDER_REPEAT),--repeat $(BENCH_RENDER_REPEAT))
	$(VENV)/bin/python -m bench.report

bench-rerender: install services  ## `billing statements render` of BENCH_RERENDER_ORGS orgs (100) printing every PDF, then with nothing changed (keys match), and a re-close with nothing new
	$(VENV)/bin/python -m bench.rerender $(if $(BENCH_RERENDER_ORGS),--orgs $(BENCH_RERENDER_ORGS))
	$(VENV)/bin/python -m bench.report

bench-render-growth: install test-system-deps  ## a small, the median and a 200-line statement printed now and as the page was before issue 19 (git archive of bench/render_growth.py's BASELINE_REVISION), BENCH_RENDER_REPEAT (15) times each
	$(VENV)/bin/python -m bench.render_growth $(if $(BENCH_RENDER_REPEAT),--repeat $(BENCH_RENDER_REPEAT))
	$(VENV)/bin/python -m bench.report

bench-scale: install services  ## time and peak RSS of the close at BENCH_SIZES orgs (100,1000,5000), each in its own process
	$(VENV)/bin/python -m bench.scaling $(if $(BENCH_SIZES),--sizes $(BENCH_SIZES))
	$(VENV)/bin/python -m bench.report

format:
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf .tools $(VENV) statements billing.db billing.db-wal billing.db-shm .pytest_cache .mypy_cache .ruff_cache
