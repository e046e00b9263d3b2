PYTHON ?= python3

.PHONY: setup test lint proto bench up

setup:  ## install system packages (Debian) and the project with its dev extras
	bash scripts/setup.sh

test:   ## every test tier these machines can run
	$(PYTHON) -m pytest -q

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m mypy proto election principal agent mooring
	lint-imports

proto:  ## regenerate the committed gRPC stubs
	bash scripts/genproto.sh

bench:
	for b in bench/bench_*.py; do $(PYTHON) $$b || exit 1; done
