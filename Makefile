# Two commands for a fresh machine (plain Python 3.11): `make demo` and `make test`.
# Both create the local virtualenv .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-local lint docs tap-service browser bench clean-venv

$(BIN)/spxdask: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench,docs]'
	touch $@

demo: $(BIN)/spxdask
	$(BIN)/spxdask demo

test: $(BIN)/spxdask tap-service browser
	$(BIN)/python -m pytest -q

# Everything that needs no root: all but the DaCHS TAP tests and the page in Chromium
# (the HTTP, S3 and Dask Gateway servers run on loopback as the user)
test-local: $(BIN)/spxdask
	$(BIN)/python -m pytest -q -m "not tap and not browser"

lint: $(BIN)/spxdask
	$(BIN)/ruff check spxdask tests benchmarks
	$(BIN)/mypy

# The TAP tests talk to a real GAVO DaCHS service on loopback (Debian packages; needs root).
tap-service:
	if [ "$$(id -u)" = 0 ]; then sh spxdask/testing/dachs/setup.sh; else sudo -n sh spxdask/testing/dachs/setup.sh; fi

# The Sphinx docs: API reference from the numpy docstrings, warnings are errors
docs: $(BIN)/spxdask
	$(BIN)/python -m sphinx -W --keep-going -q -b html docs docs/_build/html

# The report tests render the page in Debian's headless Chromium (needs root or password-less sudo).
browser:
	command -v chromium >/dev/null || { if [ "$$(id -u)" = 0 ]; then apt-get install -y -q chromium; else sudo -n apt-get install -y -q chromium; fi; }

bench: $(BIN)/spxdask
	$(BIN)/python -m benchmarks

clean-venv:
	rm -rf $(VENV)
