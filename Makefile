# Every target sets up .venv from nothing when it is missing or stale.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: setup data lint demo demo-full test test-fast bench bench-quick clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PINS)
	$(BIN)/python -m pip install -q -e '.[dev]' $(TORCH_PINS)
	touch $@

setup: $(STAMP)

# Fashion-MNIST from Debian's package (the library never runs a package manager; see training/sources.py).
FMNIST := /usr/share/datasets/fashion-mnist
data:
	@test -d $(FMNIST) || apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
		|| { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; } \
		|| echo "note: could not install dataset-fashion-mnist (needs root); real-data tests and the demo need it"

lint: $(STAMP)
	$(BIN)/ruff check .

demo: $(STAMP) data
	$(BIN)/oqat demo --out runs/demo --overwrite

demo-full: $(STAMP) data
	$(BIN)/oqat demo --preset full --out runs/demo-full --overwrite

test: $(STAMP) data lint
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m 'not slow'

# The Once-for-All float supernet (PyPI `ofa`) is the speed benchmark's baseline; optional.
OFA := ofa==0.1.0.post202307202001

bench: $(STAMP)
	$(BIN)/python -m pip install -q --no-deps $(OFA) || echo "note: ofa baseline unavailable"
	$(BIN)/python benchmarks/run.py

bench-quick: $(STAMP)
	$(BIN)/python -m pip install -q --no-deps $(OFA) || echo "note: ofa baseline unavailable"
	$(BIN)/python benchmarks/run.py --quick

clean:
	rm -rf $(VENV) runs build *.egg-info
