# The two commands in the README: `make demo` and `make test`. Both bootstrap first.
.PHONY: bootstrap demo test check lint bench screenshots clean

bootstrap:
	@scripts/bootstrap

demo: bootstrap
	.venv/bin/pvc-tui demo

test: bootstrap
	.venv/bin/python -m pytest -q $(PYTEST_ARGS)

lint: bootstrap
	.venv/bin/ruff check pvc_tui node_agent tests benchmarks
	.venv/bin/mypy
	.venv/bin/lint-imports

check: lint test

screenshots: bootstrap
	.venv/bin/python scripts/screenshots.py

bench: bootstrap
	.venv/bin/python benchmarks/run_all.py
