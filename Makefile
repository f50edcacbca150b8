# Fresh machine: `make demo` or `make test` installs everything first (a venv in .venv).
PYTHON ?= python3
VENV   ?= .venv
DATA   ?= data
RESULTS ?= results/demo
BIN    := $(VENV)/bin

.PHONY: install demo test test-fast bench gpu-check clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[dev]"
	touch $@

# A real short training (ConvMixer-64/4 p2 k5, 3 epochs, paper augmentation) and its table.
demo: install
	$(BIN)/cmx train --h 64 --d 4 --p 2 --k 5 --epochs 3 --batch-size 128 --data $(DATA) --results $(RESULTS) --quiet
	$(BIN)/cmx table --results $(RESULTS) --all

# The whole suite (slow tests included). pytest's exit 5 (no tests collected) is said loudly, not failed on.
test: install
	$(BIN)/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5)"; rc=0; fi; exit $$rc

test-fast: install
	$(BIN)/python -m pytest -m "not slow and not slurm"

bench: install
	$(BIN)/cmx bench --vs-reference

# The whole GPU check on cuda:0 in under 8 minutes (README "Checking a GPU"). Without CUDA: one line, exit 2.
# GPU_PY=python3 runs it with an interpreter that already has torch and cmx (no venv, no registry needed).
GPU_PY ?= $(BIN)/python
GPU_DATA := $(if $(wildcard ../shared/data/cifar10-mini),../shared/data/cifar10-mini,.gpu/data/cifar10-mini)
OUT ?= results/gpu-check
gpu-check: DATA = $(GPU_DATA)
gpu-check: $(if $(filter $(BIN)/python,$(GPU_PY)),install)
	@$(GPU_PY) -m cmx.bench.gpu --data $(DATA) --out $(OUT)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
