# torchkafka developer commands. `make help` lists them.
#
# Everything installs what it needs on first use: a virtual environment in
# $(VENV) with the project and its dev, bench and examples extras, and (for run/up/test) the system
# packages (Java 17, Maven, kcat, redis-server) and the Kafka jars.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PACKAGES := -p torchkafka.client -p torchkafka.codecs -p torchkafka.topology -p torchkafka.worker
PYTEST_ARGS ?=

.PHONY: help install system-deps kafka-jars up down run test hostile faults lint format bench clean

help: ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,bench,examples]'
	touch $@

install: $(INSTALLED) ## create the virtual environment and install torchkafka[dev,bench,examples]

system-deps: ## apt-install Java 17, Maven, kcat and redis-server where missing
	deploy/local/install-system-deps.sh

kafka-jars: system-deps ## fetch the Kafka broker and tool jars into the cache (Maven)
	deploy/local/kafka.sh fetch

up: kafka-jars ## start the local Kafka broker and Redis
	TORCHKAFKA_SKIP_SYSTEM_DEPS=1 deploy/local/up.sh

down: ## stop the local Kafka broker(s) and Redis
	deploy/local/down.sh

run: install up ## the main job end to end: workers, a producer and a result reader
	$(BIN)/torchkafka demo

test: install kafka-jars lint ## lint, then the whole suite (starts and stops services it needs)
	$(BIN)/pytest $(PYTEST_ARGS)

hostile: install kafka-jars ## the hostile-input suite alone, printing its table (also in `make test`)
	$(BIN)/pytest tests/hostile -s $(PYTEST_ARGS)

faults: install kafka-jars ## the fault suite alone (3-node cluster, ~6 min), printing its table (also in `make test`)
	$(BIN)/pytest tests/faults $(PYTEST_ARGS)

lint: install ## ruff and mypy (strict)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy $(PACKAGES)
	$(BIN)/mypy tests bench examples deploy/grafana/dashboard.py

format: install ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install up ## codec vs memcpy, dedup cost, worker vs bare model, exactly-once cost, worker vs hand-written loops, backends, image decoding, 1-3 worker processes
	$(BIN)/python bench/codec_bench.py
	$(BIN)/python bench/dedup_bench.py
	$(BIN)/python bench/worker_bench.py
	$(BIN)/python bench/guarantee_bench.py
	$(BIN)/torchkafka bench
	$(BIN)/python bench/backend_bench.py
	$(BIN)/python bench/image_decode_bench.py
	$(BIN)/python bench/scaling_bench.py

clean: down ## stop services and remove the virtual environment and run state
	rm -rf $(VENV) .run .mypy_cache .pytest_cache .ruff_cache *.egg-info
