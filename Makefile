# Two entry points: `make demo` (the main job) and `make test` (the whole suite).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test install bench clean

# requirements.lock's versions need Python >= 3.11 (numpy 2.4 has no 3.10 wheels): said so, not pip's
# ResolutionImpossible
$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "make needs Python >= 3.11 for the lock, \
	not " + sys.version.split()[0] + ": make PYTHON=python3.11, or pip install -e .[test] without it")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

# requirements.lock pins every dependency to the tested versions (README, "Reproducibility")
$(STAMP): pyproject.toml requirements.lock | $(BIN)/python
	$(BIN)/python -m pip install -c requirements.lock -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/posepart demo --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_targets.py
	$(BIN)/python benchmarks/bench_decode.py
	$(BIN)/python benchmarks/bench_predict.py
	$(BIN)/python benchmarks/bench_network.py --threads 1
	$(BIN)/python benchmarks/bench_data.py
	$(BIN)/python benchmarks/bench_train.py

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
