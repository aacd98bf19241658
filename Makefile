# The two commands a fresh machine needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help venv system-packages test test-image lint lock demo bench bench-soak clean mixin release

help:
	@echo "make demo   - throwaway Redis + demo worker + traffic + exporter, prints the URL"
	@echo "make test   - install what is missing, then lint and the full test suite"
	@echo "make lint   - ruff and mypy"
	@echo "make mixin  - render mixin/ into alerts/*.yml, grafana/dashboards/ and deploy/kubernetes/"
	@echo "make bench  - benchmarks: ingestion, rate matrix, /metrics, memory (bench/RESULTS.md)"
	@echo "make bench-soak - two-hour soak at 10,000 tasks/s (SOAK_MINUTES=120)"
	@echo "make test-image - build the container image with buildah and run it (root)"
	@echo "make release - build and check the wheel + sdist, print the tag/upload/image steps"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

system-packages:
	bash tests/setup/system-packages.sh redis-server rabbitmq-server openssl prometheus kubernetes-client chromium prometheus-alertmanager node-typescript

lint: venv
	$(BIN)/ruff check exporter tests bench deploy mixin
	$(BIN)/ruff format --check exporter tests bench
	$(BIN)/mypy

test: venv system-packages lint
	# Every Redis server of the run is watched with MONITOR: the exporter must only read.
	TEST_REDIS_MONITOR=1 $(BIN)/pytest -q

test-image: venv
	bash tests/setup/system-packages.sh redis-server buildah debootstrap
	$(BIN)/pytest -q tests/image

# The mixin is the source of the rules and dashboards; the Kubernetes manifests embed them.
mixin: venv
	$(BIN)/python mixin/render.py
	$(BIN)/python deploy/kubernetes/generate.py

# The version is written once, in exporter/__init__.py.
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"$$/\1/p' exporter/__init__.py)
IMAGE ?= ghcr.io/celery-metrics-exporter/celery-metrics-exporter

# Builds and checks the release; publishes nothing: the steps that do are printed.
release: venv
	rm -rf dist
	$(BIN)/python -m build --no-isolation --outdir dist .
	$(BIN)/twine check --strict dist/*
	@echo
	@echo "Built celery-metrics-exporter $(VERSION) in dist/ (twine check passed). To publish:"
	@echo "  1. CHANGELOG.md: rename 'Unreleased' to '$(VERSION)'; commit."
	@echo "  2. git tag -a v$(VERSION) -m 'celery-metrics-exporter $(VERSION)' && git push origin v$(VERSION)"
	@echo "  3. $(BIN)/twine upload dist/*"
	@echo "  4. docker build --build-arg VERSION=$(VERSION) --build-arg REVISION=$$(git rev-parse HEAD) \\"
	@echo "       --build-arg CREATED=$$(date -u +%Y-%m-%dT%H:%M:%SZ) -t $(IMAGE):$(VERSION) . && docker push $(IMAGE):$(VERSION)"

lock: venv
	$(BIN)/python deploy/lock_requirements.py

demo: venv
	bash tests/setup/system-packages.sh redis-server
	bash deploy/demo/run.sh

bench: venv
	bash tests/setup/system-packages.sh redis-server
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/matrix.py
	$(BIN)/python bench/scrape.py
	$(BIN)/python bench/memory.py
	$(BIN)/python bench/memory_terms.py
	$(BIN)/python bench/protobuf.py
	$(BIN)/python bench/keyspace.py

SOAK_MINUTES ?= 120
bench-soak: venv
	bash tests/setup/system-packages.sh redis-server
	$(BIN)/python bench/soak.py --minutes $(SOAK_MINUTES)

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache .cache
