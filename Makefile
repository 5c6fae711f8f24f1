# `make demo` and `make test` each build tools/venv first when it is missing or stale.
SHELL := /bin/bash
VENV := tools/venv
PYTEST_ARGS ?=

.PHONY: setup demo test clean

setup:
	@bash tools/setup.sh

demo: setup
	cd egs/sample_speakers/spk1 && ./run.sh --nj 2

test: setup
	bash tools/slurm/start.sh || echo "make: local Slurm cluster not started; test/test_slurm.py skips its cluster tests"
	$(VENV)/bin/python -m pytest test $(PYTEST_ARGS)

clean:
	rm -rf egs/*/*/data egs/*/*/exp egs/*/*/dump
