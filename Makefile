# Everything a fresh machine needs is created here: `make demo`, `make test`.
# The venv's Python only runs slugbuild; the slugs' runtimes come from local
# CPython installations (pyenv prefixes, SLUGBUILD_PYTHON_PATH).

VENV   := .venv
BIN    := $(VENV)/bin
# The first of these that is Python >= 3.9 creates the venv.
PYTHON ?= $(shell for p in python3.12 python3.13 python3.11 python3.10 python3 python; do \
            $$p -c 'import sys; sys.exit(sys.version_info < (3, 9))' >/dev/null 2>&1 \
            && { echo $$p; break; }; done)

.PHONY: demo test lint bench clean venv system-packages dist

# Debian packages the build and the tests use: zstd (runtime archives), binutils
# (strip/objcopy settle source-built extensions), gcc (sdists with C code), git
# (buildpacks from URLs), nodejs/npm (the Node step), docker-registry, skopeo, umoci and
# htpasswd (apache2-utils) for the image tests (a loopback registry, image validation),
# mmdebstrap (slugbuild stack build), podman + runc and docker.io (the images run in
# the container tests). Installed only when missing, with apt-get, and only as root; otherwise the missing commands are named.
SYSTEM_COMMANDS := zstd:zstd dpkg-deb:dpkg strip:binutils objcopy:binutils gcc:gcc git:git node:nodejs npm:npm \
    docker-registry:docker-registry skopeo:skopeo umoci:umoci htpasswd:apache2-utils \
    podman:podman runc:runc mmdebstrap:mmdebstrap dockerd:docker.io

system-packages:
	@missing=$$(for pair in $(SYSTEM_COMMANDS); do \
	    command -v $${pair%%:*} >/dev/null 2>&1 || echo $${pair#*:}; done | sort -u | tr '\n' ' '); \
	if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	        echo "make: installing Debian packages: $$missing"; \
	        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	    else \
	        echo "make: please install these packages: $$missing"; exit 1; \
	    fi; \
	fi

venv: $(VENV)/.installed system-packages

$(VENV)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || { echo "make: no Python >= 3.9 found; set PYTHON=/path/to/python3"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: venv
	$(BIN)/python scripts/demo.py

# The suite on every core (pytest-xdist): a group of tests that share a module's
# fixture stays on one worker, the longest work first (tests/conftest.py).
# TEST_WORKERS=0 runs it in one process; README.md, "Layout".
TEST_WORKERS ?= auto
test: venv
	$(BIN)/ruff check src tests scripts buildpacks $(wildcard benchmarks)
	$(BIN)/mypy
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder

lint: venv
	$(BIN)/ruff check src tests scripts buildpacks $(wildcard benchmarks)
	$(BIN)/mypy

bench: venv
	$(BIN)/python benchmarks/run.py

# The sdist (with the tests, fixtures and docs) and the wheel built from it (with the
# buildpack), as tests/test_packaging.py checks them.
dist: venv
	$(BIN)/uv build --out-dir dist .

clean:
	rm -rf $(VENV) build dist .pytest_cache
