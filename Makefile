# Everything a fresh machine needs is created here: `make demo`, `make test`.
# The venv's Python only runs slugbuild; the slugs' runtimes come from local
# CPython installations (pyenv prefixes, SLUGBUILD_PYTHON_PATH).

VENV   := .venv
BIN    := $(VENV)/bin
# The first of these that is Python >= 3.9 creates the venv.
PYTHON ?= $(shell for p in python3.12 python3.13 python3.11 python3.10 python3 python; do \
            $$p -c 'import sys; sys.exit(sys.version_info < (3, 9))' >/dev/null 2>&1 \
            && { echo $$p; break; }; done)

.PHONY: demo test lint bench clean venv

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || { echo "make: no Python >= 3.9 found; set PYTHON=/path/to/python3"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: venv
	$(BIN)/python scripts/demo.py

test: venv
	$(BIN)/ruff check src tests scripts buildpacks $(wildcard benchmarks)
	$(BIN)/pytest

lint: venv
	$(BIN)/ruff check src tests scripts buildpacks $(wildcard benchmarks)

bench: venv
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) build .pytest_cache
