# One entry point for people and CI. `make test` and `make demo` create .venv themselves.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Tests run in 2 processes; one BLAS thread each so they do not fight over the 2 cores.
export OMP_NUM_THREADS ?= 1
# Datasets: read from ../shared/data when that folder sits beside the checkout (offline runs and CI);
# elsewhere the user cache, filled by `anyformer data fetch NAME` or on first use.
ifneq ($(wildcard ../shared/data),)
export ANYFORMER_DATA ?= $(abspath ../shared/data)
endif

.PHONY: install test lint format demo demo-gpt bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test,bench,app]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

test: lint
	$(PY) -m pytest -n 2 -q

# The main job: every task at a tiny size, offline, one output each, and the table (experiments/demo.yaml).
demo: $(STAMP)
	OMP_NUM_THREADS=2 $(VENV)/bin/anyformer demo

# The single-GPT demo: a small BPE GPT on pydoc, then a sample.
demo-gpt: $(STAMP)
	OMP_NUM_THREADS=2 $(VENV)/bin/anyformer gpt fit --config experiments/text/gpt_demo.yaml
	OMP_NUM_THREADS=2 $(VENV)/bin/anyformer generate --ckpt runs/gpt_demo/checkpoints/last.ckpt --prompt "The " --strategy top-k --max-new-tokens 200 --seed 0

# Every performance target in one table (see experiments/bench/__main__.py), the whole fits and the
# scaling sweep (with bench_scaling.png), and profile.md: the measured operator shares behind each NO; takes a while.
# BENCH_ARGS passes options, e.g. make bench BENCH_ARGS="--quick --only gpt-cpu".
BENCH_ARGS ?=
bench: $(STAMP)
	OMP_NUM_THREADS=2 $(PY) -m anyformer.experiments.bench --threads 2 --out experiments/results/bench.md \
		--out-profile experiments/results/profile.md $(BENCH_ARGS)

clean:
	rm -rf runs lightning_logs .pytest_cache .ruff_cache
