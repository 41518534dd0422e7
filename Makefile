# Two commands for a fresh machine (plain Python 3.11): `make demo` and `make test`.
# Both create the local virtualenv .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench clean-venv

$(BIN)/spxdask: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/spxdask
	$(BIN)/spxdask demo

test: $(BIN)/spxdask
	$(BIN)/python -m pytest -q

bench: $(BIN)/spxdask
	$(BIN)/python -m benchmarks

clean-venv:
	rm -rf $(VENV)
