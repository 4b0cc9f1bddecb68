.PHONY: setup demo test lint bench clean

setup:
	@scripts/setup.sh

demo: setup
	@scripts/demo.sh

test: setup
	.venv/bin/ruff check .
	.venv/bin/pytest -q

bench: setup
	.venv/bin/python bench/store_bench.py

clean:
	rm -rf demo-work .pytest_cache .ruff_cache
