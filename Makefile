.PHONY: setup demo test test-fast lint bench clean deb

setup:
	@scripts/setup.sh

demo: setup
	@scripts/demo.sh

# Two workers: one boots the QEMU guests one at a time (tests/conftest.py), the other runs
# everything else beside it.
test: setup
	.venv/bin/ruff check .
	.venv/bin/pytest -q -n 2 --durations=25

# The inner loop (well under a minute): the store's unit and behaviour tests on a local
# repository and the operations layer; `make test` runs everything, S3 and QEMU included.
FAST = tests/ops tests/store/test_runs.py tests/store/test_blockmap.py \
       tests/store/test_chunks.py tests/store/test_catalog.py tests/store/test_clones.py \
       tests/store/test_store.py tests/store/test_backend_conformance.py

test-fast:
	.venv/bin/ruff check .
	.venv/bin/pytest -q -x -p no:cacheprovider $(FAST) -k "not s3"

# dist/cairn_<version>_<arch>.deb: /usr/bin/cairn, the systemd units, a `cairn` user, /etc/cairn.
deb: setup
	@packaging/deb/build.sh

bench: setup
	.venv/bin/python bench/store_bench.py

clean:
	rm -rf demo-work .pytest_cache .ruff_cache dist
