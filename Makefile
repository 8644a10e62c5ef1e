# The project's verbs. Each works on a fresh clone with Python 3.11+ and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CHECKSUM := $(shell cksum < pyproject.toml | cut -d' ' -f1)
# Two installs into one environment: the job alone (pip install -e ., for make run and make
# serve), and the job with every extra and the test tools (.[test], for everything else).
JOB_STAMP := $(VENV)/.job-$(CHECKSUM)
STAMP := $(VENV)/.installed-$(CHECKSUM)
LISTEN ?= 127.0.0.1:8080
OUT ?= out/api_example

.PHONY: run test test-fast test-slow bench bench-api lint format serve serve-stop samples docs clean

$(JOB_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	rm -f $(VENV)/.job-* && touch $@

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-* $(VENV)/.job-* && touch $@ $(JOB_STAMP)

## run: the job on both sample data sets, into out/api_example and out/demo (installs the job
## alone: pip install -e ., without the extras or the test tools)
run: $(JOB_STAMP)
	$(BIN)/convsum run --messages sample_data/api_example/messages.parquet \
		--statuses sample_data/api_example/statuses.parquet --out out/api_example
	$(BIN)/convsum run --messages sample_data/demo/messages \
		--statuses sample_data/demo/statuses --out out/demo
	@echo
	@echo "Output: out/api_example/current/api and out/demo/current/api"
	@echo "Serve one with nginx:  make serve OUT=out/api_example   (or OUT=out/demo)"
	@echo "Then:  TOKEN=\$$(.venv/bin/convsum tokens add out/api_example ip1-100)"
	@echo "       curl -H \"Authorization: Bearer \$$TOKEN\" 'http://$(LISTEN)/v2/conversations/46734487112/summary'"

## serve: nginx in the foreground on $(LISTEN), serving $(OUT) (needs nginx, libnginx-mod-http-set-misc and -js)
serve: $(JOB_STAMP)
	mkdir -p out/nginx
	$(BIN)/convsum nginx-conf $(OUT) --listen $(LISTEN) $(if $(filter 0,$(shell id -u)),--user root) > out/nginx/nginx.conf
	nginx -p $(CURDIR)/out/nginx -c $(CURDIR)/out/nginx/nginx.conf

## serve-stop: stop the nginx that `make serve` started
serve-stop:
	nginx -p $(CURDIR)/out/nginx -c $(CURDIR)/out/nginx/nginx.conf -s stop

## test: lint, type checks and the whole test suite, on every core (pytest-xdist)
test: lint
	$(BIN)/python -m pytest -n auto

## test-fast: the inner loop (about 2 minutes here): unit tests and both local engines end to end, a
## fifth of the property examples; no Spark, nginx, browser or slow suites (make test has all)
test-fast: $(STAMP)
	$(BIN)/python -m pytest -n auto -m "not slow and not spark and not http and not browser" \
		--hypothesis-profile=fast

## test-slow: the property-based suites with twenty times more examples
test-slow: lint
	$(BIN)/python -m pytest --hypothesis-profile=slow

## bench: the job's benchmark, then the read API's (bench-api)
## the job's: generate (or reuse) BENCH_MESSAGES messages and measure both engines against the floors
BENCH_MESSAGES ?= 1000000
BENCH_RUNS ?= 3
bench: $(STAMP) bench-api
	$(BIN)/python -m benchmarks.job --messages $(BENCH_MESSAGES) --runs $(BENCH_RUNS)

## bench-api: the read API's requests/s and p99 under wrk, against static nginx (needs nginx, wrk)
bench-api: $(STAMP)
	$(BIN)/python -m benchmarks.api

lint: $(STAMP)
	$(BIN)/ruff check src tests sample_data jobs benchmarks
	$(BIN)/ruff format --check src tests sample_data jobs benchmarks
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format src tests sample_data jobs benchmarks
	$(BIN)/ruff check --fix src tests sample_data jobs benchmarks

## samples: regenerate sample_data/ deterministically
samples: $(STAMP)
	$(BIN)/python sample_data/make_samples.py

## docs: regenerate docs/cli-reference.md from every command's --help (tests/test_docs.py checks it)
docs: $(STAMP)
	$(BIN)/cog -r docs/cli-reference.md

clean:
	rm -rf out .venv .pytest_cache .mypy_cache .ruff_cache .hypothesis
