# quiver: `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export QUIVER_HOME ?= $(CURDIR)/.quiver
export DAGSTER_HOME ?= $(QUIVER_HOME)/dagster
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
# Playwright (in the lock file) drives Debian's chromium below; it never downloads a browser of its own.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1

.PHONY: install demo test test-slow dev bench bench-pipeline bench-refresh bench-churn bench-write-cost bench-freshness bench-serving bench-embedding bench-chunking bench-refresh-cost bench-hybrid clean

# torch first, pinned: on these machines 2.13.0 is a local CPU wheel; an unpinned torch would pull
# several GB of CUDA packages. Then the lock file, then the project itself (editable, no deps).
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

# Debian's chromium for the browser test of the Dagster UI (tests/dagster/test_ui_browser.py); skipped
# when it is there, sudo only when not root, an `apt-get update` only when the install fails without one.
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_CHROMIUM := $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium
$(CHROMIUM):
	$(APT_CHROMIUM) || { $(SUDO) apt-get update && $(APT_CHROMIUM); }

# Debian's redis-server, the Celery broker that tests/dagster/test_executors.py starts on 127.0.0.1
# (a free port, stopped by pid); installed as chromium is, skipped when it is there. A machine whose
# apt cannot install it still installs the rest: the Celery test then skips and says why.
REDIS := /usr/bin/redis-server
APT_REDIS := $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server
$(REDIS):
	$(APT_REDIS) || { $(SUDO) apt-get update && $(APT_REDIS); } || \
		echo "warning: apt-get could not install redis-server; tests/dagster/test_executors.py's Celery test will skip"

install: $(STAMP) $(CHROMIUM) $(REDIS)

# The instance storage is created here, once: a first `dg dev` would otherwise have its daemon
# and code server race to create the same SQLite files.
$(DAGSTER_HOME)/dagster.yaml: pipelines/dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp pipelines/dagster.yaml $@
	$(BIN)/dagster instance migrate > /dev/null

# Build every dataset of the spec through Dagster (each one's refresh job, then its snapshot job),
# then query the index.
demo: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m quiver refresh
	$(BIN)/python -m quiver status
	$(BIN)/python -m quiver.pipelines.demo

test: install
	$(BIN)/python -m pytest -q

# Longer property runs, more crash trials per kill point, a longer reader-during-writes run.
test-slow: install
	QUIVER_HYPOTHESIS_PROFILE=slow QUIVER_CRASH_TRIALS=10 QUIVER_READERS_SECONDS=180 \
		$(BIN)/python -m pytest -q tests/property tests/crash

# `dg dev` (dagster-dg-cli), not the superseded `dagster dev`; on workspace.yaml, as the daemon and the UI test.
dev: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dg dev -w workspace.yaml

# quiver vs DuckDB's vss extension vs raw usearch, one table (BENCH_SIZE=small|medium|large).
# vss runs in its own venv with its own DuckDB, pinned; the extension comes from the package (no network).
PEERS := .venv-peers
$(PEERS)/.installed:
	test -x $(PEERS)/bin/python || $(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/python -m pip install --quiet duckdb==1.5.5 duckdb-extension-vss==1.5.5 numpy==2.4.6 pyarrow==26.0.1
	touch $@

bench: install $(PEERS)/.installed
	BENCH_SIZE=$${BENCH_SIZE:-small} $(BIN)/python tests/benchmarks/bench_vs_vss.py

# The earlier pipeline benchmark: the demo dataset through Dagster (embedding rows/s, stage times).
bench-pipeline: install
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

# Cold start, query latency and recall against raw usearch, filters, at 1M vectors (the index is
# built once under $(QUIVER_HOME)/bench; BENCH_SERVING_SIZE=100000 for a quicker run).
bench-serving: install
	$(BIN)/python tests/benchmarks/bench_serving.py

# From a source file landing to its rows being searchable, with the real daemon and the default
# settings: each step's seconds, and the daemon's CPU when idle (BENCH_FRESHNESS_TRIALS,
# BENCH_FRESHNESS_ROWS, BENCH_FRESHNESS_IDLE_S, BENCH_FRESHNESS_GOAL_S; BENCH_FRESHNESS_INTERVAL
# sets QUIVER_SENSOR_INTERVAL_SECONDS to compare another interval).
bench-freshness: install
	$(BIN)/python tests/benchmarks/bench_freshness.py

# Rows/s of each embedding path (sentence-transformers default, torch and ONNX token-sorted, ONNX
# int8) at 1 and 2 threads on short and long texts, load times, fidelity against torch fp32, and the
# embeddings asset's reported rows/s (BENCH_SHORT, BENCH_LONG, BENCH_REPEATS, BENCH_THREADS).
bench-embedding: install
	$(BIN)/python tests/benchmarks/bench_embedding.py

# Which chunk size and overlap to default to: Debian's long descriptions (over 300 tokens) among
# distractors, a sentence from each one's second half as its query, success@1/@10 and MRR@10 per
# size/overlap against no chunking, and a short-text check (BENCH_CHUNK_DOCS, BENCH_CHUNK_DISTRACTORS,
# BENCH_CHUNK_CONFIGS; about 10 to 14 minutes on two shared cores).
bench-chunking: install
	$(BIN)/python tests/benchmarks/bench_chunking.py

# What a refresh costs against a plain sentence-transformers script, as a user runs both: first
# build (cold and warm export cache), a refresh with no change, the embeddings step against the
# backend, resume after SIGKILL, peak RSS at 10k/100k/1M rows (BENCH_ROWS, BENCH_RSS_ROWS=10000,100000
# for a quicker run; about 10 minutes on two shared cores).
bench-refresh-cost: install
	$(BIN)/python tests/benchmarks/bench_refresh_cost.py

# Typing a package's name: exact vector search, the full-text index and both fused (RRF) on
# ../shared/data/debian_packages.parquet (BENCH_HYBRID_ROWS, BENCH_HYBRID_QUERIES).
bench-hybrid: install
	$(BIN)/python tests/benchmarks/bench_hybrid.py

# The HTTP server under 1, 4 and 16 concurrent clients, alone and while a refresh and a snapshot run
# in another process: p50/p99, queries/s, errors, every answer checked (BENCH_LOAD_ROWS,
# BENCH_LOAD_SECONDS, BENCH_LOAD_CLIENTS; about 90 s on two shared cores).
.PHONY: bench-load
bench-load: install
	$(BIN)/python tests/benchmarks/bench_load.py

# The same incremental refresh (2,000 new rows of ../shared/data/debian_packages.parquet, long
# descriptions) embedded by one step with 1 and 2 threads, and by two fan-out workers of one thread
# each (embeddings.fan_out: 2, the multiprocess executor); medians of 3 (BENCH_NEW, BENCH_BASE,
# BENCH_REPEAT, BENCH_CONFIGS; about 7 minutes on two shared cores).
.PHONY: bench-fanout
bench-fanout: install
	$(BIN)/python tests/benchmarks/bench_fanout.py

# Reader processes (1, 2, 4), each with its own cache, on one bucket (moto's S3 on 127.0.0.1) while a
# writer publishes twice a second: q/s, latency, staleness, agreement (docs/scale.md; about 2.5 minutes).
.PHONY: bench-readers
bench-readers: install
	$(BIN)/python tests/benchmarks/bench_readers.py

# The single writer's commit rate (commit_changes, changes_after, append_segment; 100k rows, random vectors,
# no model) and the first snapshot of 1M clustered vectors (f32) plus 200k in f32/f16/i8: time, peak RSS, bytes
# on disk (docs/scale.md; about 13 minutes on two shared cores). BENCH_SCALE_ROWS=100000 BENCH_SCALE_DTYPE_ROWS=0
# for a quick run; BENCH_SCALE_PARTS, BENCH_SCALE_BASE_ROWS, BENCH_SCALE_BATCHES, BENCH_SCALE_REPEATS,
# BENCH_SCALE_DTYPES, BENCH_SCALE_VECTORS (see --help).
.PHONY: bench-scale
bench-scale: install
	$(BIN)/python tests/benchmarks/bench_scale.py

clean:
	rm -rf $(QUIVER_HOME) .pytest_cache .hypothesis

# The README's chart (docs/recall_vs_ef_search.png): the demo dataset materialized into a temporary
# home with every asset check and the evaluation asset (recall@10 and latency against ef_search).
.PHONY: chart
chart: install
	$(BIN)/python tests/benchmarks/recall_chart.py
