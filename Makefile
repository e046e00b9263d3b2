PYTHON ?= python3

.PHONY: setup testbed test fuzz lint proto bench up image chaos

setup:  ## install system packages (Debian) and the project with its dev extras
	bash scripts/setup.sh

testbed:  ## build kube-apiserver, etcd 3.6, helm and Argo CD's CRDs from the Go module proxy (cached)
	bash scripts/testbed.sh

test:   ## every test tier these machines can run (builds the test bed first when it is missing)
	bash scripts/testbed.sh --if-possible >/dev/null
	$(PYTHON) -m pytest -q -n 2 --dist loadfile  # a file's tests stay on one worker, in order

fuzz:  ## the fuzz targets (tests/fuzz) with 20x the examples `make test` runs, freshly randomized (FUZZ=N for another multiplier)
	MOORING_FUZZ_EXAMPLES=$(or $(FUZZ),20) $(PYTHON) -m pytest -q -n 2 --dist loadfile --timeout 0 tests/fuzz

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m mypy proto election principal agent mooring chaos
	lint-imports

proto:  ## regenerate the committed gRPC stubs
	bash scripts/genproto.sh

chaos:  ## every chaos experiment, then a seeded 50-fault campaign (SEED=N to replay one)
	$(PYTHON) -m mooring chaos run --report chaos-report/suite
	$(PYTHON) -m mooring chaos run --campaign 50 --report chaos-report/campaign $(if $(SEED),--seed $(SEED))

bench:
	for b in bench/bench_*.py; do $(PYTHON) $$b || exit 1; done

image:  ## build the container image offline (buildah, chroot isolation; as root)
	bash scripts/build-image.sh
