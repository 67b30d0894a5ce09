# quiver: `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export QUIVER_HOME ?= $(CURDIR)/.quiver
export DAGSTER_HOME ?= $(QUIVER_HOME)/dagster
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo test test-slow dev bench bench-refresh bench-churn bench-write-cost clean

# torch first, pinned: on these machines 2.13.0 is a local CPU wheel; an unpinned torch would pull
# several GB of CUDA packages. Then the lock file, then the project itself (editable, no deps).
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

install: $(STAMP)

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

# Materialize every asset of the spec through Dagster (rows, embeddings, commit log, snapshot),
# then query the index.
demo: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster asset materialize -m pipelines.definitions --select '*'
	$(BIN)/python -m pipelines status
	$(BIN)/python -m pipelines.demo

test: install
	$(BIN)/python -m pytest -q

# Longer property runs, more crash trials per kill point, a longer reader-during-writes run.
test-slow: install
	QUIVER_HYPOTHESIS_PROFILE=slow QUIVER_CRASH_TRIALS=10 QUIVER_READERS_SECONDS=180 \
		$(BIN)/python -m pytest -q tests/property tests/crash

dev: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster dev -w workspace.yaml

bench: install
	$(BIN)/python tests/benchmarks/bench_pipeline.py

# A first build of ../shared/data/debian_packages.parquet, then a refresh after 1% churn
# (BENCH_ROWS=5000 for a quicker run).
bench-refresh: install
	$(BIN)/python tests/benchmarks/bench_refresh.py

# 1,000,000 mixed adds, updates and deletes on 100,000 vectors (many minutes); BENCH_CHURN_OPS and
# BENCH_CHURN_ROWS make it shorter.
bench-churn: install
	$(BIN)/python tests/benchmarks/bench_churn.py

# Bytes written by a 1% change at 100k rows; BENCH_SIZE=100000,1000000 adds the 1M case.
bench-write-cost: install
	$(BIN)/python tests/benchmarks/bench_write_cost.py

clean:
	rm -rf $(QUIVER_HOME) .pytest_cache .hypothesis
