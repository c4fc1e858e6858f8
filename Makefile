# Every target works on a fresh clone: it makes .venv with the machine's python3 first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo install test model lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Runtime only (numpy, onnxruntime, click, Pillow): no torch.
demo: $(BIN)/python
	$(BIN)/pip install -q -e .
	$(BIN)/vae-edge sample -n 64 -o samples.png
	$(BIN)/python examples/demo.py

install: $(BIN)/python
	$(BIN)/pip install -q -e '.[train,dev]'

test: install
	$(BIN)/python -m pytest

# Rebuild the default model shipped in runtime/default_model (about a minute on 2 cores).
model: install
	$(BIN)/vae-edge train --data mnist --out build/mnist-run --epochs 10 --seed 0
	$(BIN)/vae-edge export build/mnist-run --out runtime/default_model --force

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) build samples.png .pytest_cache
