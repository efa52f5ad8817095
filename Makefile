# The two quick-start commands, and the checks behind them.
# Both run scripts/setup.sh first: it installs what is missing and does nothing else.

.PHONY: setup demo test lint bench

setup:
	./scripts/setup.sh

demo:
	./scripts/demo.sh

test: lint
	.venv/bin/pytest

lint: setup
	.venv/bin/ruff check src tests bench
	.venv/bin/ruff format --check src tests bench
	.venv/bin/mypy

bench: setup
	.venv/bin/pip install -q -e ".[bench]"
	.venv/bin/python bench/bench_start.py
	.venv/bin/python bench/bench_analyze.py
