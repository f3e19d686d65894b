# The two set-up commands: `make demo` and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast typecheck venv clean bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned, so that no dependency lets pip choose a (multi-GB CUDA) build itself.
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[test,fast-tsne,export]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/audiocpc demo --out results/demo

test: $(STAMP)
	$(BIN)/python -m mypy src/audiocpc
	$(BIN)/python -m pytest -q

# Static types alone (settings: [tool.mypy] in pyproject.toml).
typecheck: $(STAMP)
	$(BIN)/python -m mypy src/audiocpc

# The fast lane for your own loop (~40 s on 2 cores): everything but tests/e2e and the tests
# marked slow (real processes: torchrun, kill -9, locks; learning runs).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/throughput.py --quick

clean:
	rm -rf $(VENV) results
