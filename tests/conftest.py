"""Shared test set-up: one cache per session, and the Django and Flask fixtures built once.

The cache (runtime layers, dependency layers and pip's download cache) is made
once per session, so each runtime is prepared and each wheel downloaded once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import (
    AUTH_REGISTRY_PASSWORD,
    AUTH_REGISTRY_USER,
    DJANGO_APP,
    FIXTURE_APPS,
    HOOK_SECRET,
    MINIMAL,
    RegistryServer,
    copy_app,
    machine_cache_entry,
    machine_cache_key,
    make_app,
    once_per_run,
    taking_turns,
    unpack,
    xdist_worker,
)


@pytest.fixture(autouse=True)
def _no_secrets_left_by_an_earlier_test():
    """The secret registry is process-wide: a build's config var values (``GREETING=there``
    in test_buildpack_runner.py) would otherwise be masked in every later test's messages."""
    from slugbuild import redact

    yield
    redact.forget_secrets()


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    # Named as buildpacks/python keeps it under a buildpack CACHE_DIR, so that
    # buildpack tests share this cache too (see buildpack_cache_dir).
    def make(root: Path) -> Path:
        (root / "slugbuild").mkdir()
        return root / "slugbuild"

    return once_per_run(tmp_path_factory, "buildpack-cache", make)


@pytest.fixture(scope="session")
def golden_cache(tmp_path_factory) -> Path:
    """A cache for building the fixture apps that fail by design as they are (their
    recorded outcome, pipeline/test_golden_slugs.py), apart from the session's: tests
    that expect a cold dependency layer of a fixture there must not find one made by
    these."""
    return once_per_run(tmp_path_factory, "golden-cache", lambda root: root)


@pytest.fixture(scope="session")
def runtime_seed(tmp_path_factory) -> Path:
    """A cache holding the Python 3.12 and 3.13 runtime layers, built once a session
    apart from the session cache. Tests that need a cache of their own (they damage
    it, or compare against a clean one) start it with ``seed_runtimes(runtime_seed,
    cache)`` (tests/helpers.py) instead of building the runtime layer cold."""
    from slugbuild import compile_app
    from slugbuild.log import Reporter

    def make(root: Path) -> Path:
        for version in ("3.12", "3.13"):
            app = make_app(root / version, {**MINIMAL, ".python-version": f"{version}\n"})
            compile_app(app, root / f"{version}.tgz", cache_dir=root / "cache",
                        reporter=Reporter(quiet=True))
        return root / "cache"

    return once_per_run(tmp_path_factory, "runtime-seed", make)


@pytest.fixture(scope="session")
def buildpack_cache_dir(cache_dir: Path) -> Path:
    """The CACHE_DIR to give buildpacks/python's bin/compile: it keeps slugbuild's cache
    in CACHE_DIR/slugbuild, which is the session cache, so no test pays a cold build
    just for going through the buildpack."""
    return cache_dir.parent


@pytest.fixture(scope="session")
def django_build(tmp_path_factory, cache_dir):
    """The Django fixture compiled once for the whole session (slow tests share it)."""
    from slugbuild import compile_app
    from slugbuild.log import Reporter

    return once_per_run(tmp_path_factory, "django-slug", lambda root: compile_app(
        DJANGO_APP, root / "django.tgz", cache_dir=cache_dir, reporter=Reporter(quiet=True)))


@pytest.fixture(scope="session")
def django_unpacked(tmp_path_factory, django_build) -> Path:
    """The Django slug unpacked once, in a directory that has nothing to do with the
    build or the cache, for the tests that run what is inside it (they only read it)."""
    return once_per_run(tmp_path_factory, "django-unpacked", lambda root: unpack(
        django_build.slug_path, root / "somewhere" / "else"))


# The Flask build's hooks and .slugignore (flask_build).
PRE_COMPILE = """\
#!/usr/bin/env bash
set -euo pipefail
# Only the value's shape is written here: the whole value must not be in the slug.
case "${HOOK_SECRET:-}" in s3cr3t-hook-*) ;; *) echo "no config var"; exit 1 ;; esac
if python -c "import flask" 2>/dev/null; then echo "flask already installed"; exit 1; fi
ls -A > pre_compile_saw.txt
echo "pre_compile ran"
"""
# No #!: run by bash, as Heroku does.
POST_COMPILE = """\
[ -n "$HOOK_SECRET" ] || exit 1
python -c "import flask; print('post_compile sees flask', flask.__name__)" > post_compile.txt
"""
SLUGIGNORE = "docs/\n*.md\n!KEEP.md\n/data/*.bin\n"


@pytest.fixture(scope="session")
def flask_build(tmp_path_factory, cache_dir):
    """The Flask fixture with build hooks, a .slugignore and a secret config var, compiled
    once: pipeline/test_inferred_servers.py checks its hooks and serving,
    test_slugignore.py what it left out."""
    from slugbuild import compile_app
    from slugbuild.log import Reporter

    def make(root: Path):
        app = copy_app(FIXTURE_APPS / "flask-hello", root / "app")
        make_app(app, {
            "bin/pre_compile": PRE_COMPILE, "bin/post_compile": POST_COMPILE,
            ".slugignore": SLUGIGNORE, "docs/guide.txt": "guide\n", "NOTES.md": "notes\n",
            "KEEP.md": "kept\n", "data/blob.bin": "x" * 1000, "data/keep.txt": "kept\n",
        })
        return compile_app(app, root / "flask.tgz", cache_dir=cache_dir,
                           env={"HOOK_SECRET": HOOK_SECRET}, reporter=Reporter(quiet=True))

    return once_per_run(tmp_path_factory, "flask-slug", make)


@pytest.fixture(scope="session")
def registry(tmp_path_factory) -> Iterator[RegistryServer]:
    """A CNCF Distribution registry on 127.0.0.1 without auth, shared by the session
    (tests use repositories of their own; ``blob_uploads()`` counts what was pushed)."""
    with RegistryServer(tmp_path_factory.mktemp("registry")) as server:
        yield server


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory) -> Iterator[RegistryServer]:
    """The same behind htpasswd basic auth: user ``AUTH_REGISTRY_USER``, password
    ``AUTH_REGISTRY_PASSWORD`` (tests/helpers.py)."""
    with RegistryServer(tmp_path_factory.mktemp("auth-registry"),
                        users={AUTH_REGISTRY_USER: AUTH_REGISTRY_PASSWORD}) as server:
        yield server


@pytest.fixture(scope="session")
def runner_a(tmp_path_factory, registry):
    """Runner A of the shared-cache tests: the small Flask fixture built once on a
    cache of its own, pushing its layers to the session registry
    (test_cache_admin.py, test_cache_registry.py). Its cache, slug path, sha256,
    cache registry reference and what it pushed. Other runners start empty."""
    from slugbuild import compile_app
    from slugbuild.log import Reporter

    root = tmp_path_factory.mktemp("runner-a")
    out = root / "a.tgz"
    reference = f"docker://{registry.host}/slugbuild-cache/runner-a"
    result = compile_app(FIXTURE_APPS / "flask-hello", out, cache_dir=root / "cache",
                         reporter=Reporter(quiet=True), cache_registry=reference)
    return root / "cache", out, result.sha256, reference, result.cache_registry


@pytest.fixture(scope="session")
def _kept_run_image(tmp_path_factory) -> Iterator[tuple[object, Path, Path]]:
    """The mmdebstrap run image (`slugbuild stack build`) as an OCI layout, and the
    directory its layer is kept in: per machine, not per session
    (helpers.machine_cache_entry), keyed by the code that builds it (stack.py), the
    mmdebstrap version and the week (build_run_image keys it by its recipe below
    that). The first session on a machine runs mmdebstrap, holding the entry alone."""
    import slugbuild.stack
    from slugbuild.stack import build_run_image, default_recipe

    version = subprocess.run(["mmdebstrap", "--version"], capture_output=True,
                             text=True).stdout if shutil.which("mmdebstrap") else "none"
    key = machine_cache_key(Path(slugbuild.stack.__file__), version)
    layout = tmp_path_factory.mktemp("run-image") / "layout"
    with machine_cache_entry("run-images", key) as kept:
        built = kept.once(lambda: build_run_image(f"oci:{layout}:run",
                                                  recipe=default_recipe(),
                                                  keep_dir=kept.path))
        yield built, layout, kept.path


@pytest.fixture(scope="session")
def mmdebstrap_run_image(_kept_run_image):
    """The mmdebstrap run image, built once per machine and week, as an OCI layout:
    (its build's RunImage, the layout directory)."""
    built, layout, _ = _kept_run_image
    return built, layout


@pytest.fixture(scope="session")
def run_image_keep_dir(_kept_run_image) -> Path:
    """Where the mmdebstrap run image's layer is kept (``keep_dir`` of build_run_image)."""
    return _kept_run_image[2]


# --- two workers (pytest-xdist; `make test` runs `pytest -n 2 --dist loadgroup`) -------
#
# A plain `pytest` runs the tests in one process as written. Under xdist, each worker
# collects the same tests and the controller hands them out: the hooks below decide
# what must stay on one worker (an xdist_group), what runs first, and what runs with
# no other test at once. README.md ("Layout") says how to run it either way.

# Session fixtures of this file that each worker would build for itself (they hold a
# server process or a cache of their own): the tests using one share a worker.
PER_WORKER_BUILDS = frozenset({"runner_a"})


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):
        # A pytest that a worker's test started (the sdist's own tests,
        # test_packaging.py) inherits the worker's id: it is no worker itself.
        os.environ.pop("PYTEST_XDIST_WORKER", None)
    config.addinivalue_line(
        "markers", "alone: runs with no other test at once when the suite runs on "
        "several pytest-xdist workers (it watches the whole machine: processes, load, "
        "mounts)")


def _worker_group(item: pytest.Item) -> str | None:
    """The group an item must share a worker with: its module when it uses a fixture
    made once per module (or class, or a session fixture of the module itself), which
    two workers would each make; a per-worker session build's name; else None."""
    marker = item.get_closest_marker("xdist_group")
    if marker is not None:
        return str(marker.kwargs.get("name", marker.args[0] if marker.args else "default"))
    info = getattr(item, "_fixtureinfo", None)
    for name, definitions in (info.name2fixturedefs.items() if info else ()):
        for definition in definitions:
            if definition.scope in ("module", "class", "package") or (
                    definition.scope == "session" and definition.baseid.endswith(".py")):
                return f"module:{item.nodeid.split('::')[0]}"
            if name in PER_WORKER_BUILDS:
                return f"fixture:{name}"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist: group what must share a worker, and put the longest work first
    (a group of slow tests, then a slow test, then the rest), as the scheduler hands
    work out in this order and the slow tests are the run's tail."""
    if xdist_worker() is None:
        return
    groups: dict[str | None, int] = {}
    scope_of: dict[str, str] = {}
    for item in items:
        group = _worker_group(item)
        if group is not None and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(group))
        scope_of[item.nodeid] = group or item.nodeid
        slow = item.get_closest_marker("slow") is not None
        groups[scope_of[item.nodeid]] = groups.get(scope_of[item.nodeid], 0) + slow
    items.sort(key=lambda item: -groups[scope_of[item.nodeid]])


@pytest.fixture(autouse=True)
def _alone_when_marked(request: pytest.FixtureRequest) -> Iterator[None]:
    """Under xdist, a test marked ``alone`` runs while no other test runs, and other
    tests wait for it (helpers.taking_turns)."""
    if xdist_worker() is None:
        yield
        return
    root = request.getfixturevalue("tmp_path_factory").getbasetemp().parent
    with taking_turns(root, alone=request.node.get_closest_marker("alone") is not None):
        yield


# The build backend served by loopback indexes whose sdists build with setuptools
# (tests/adversarial/test_build_env_isolation.py): taken from the machine's local
# index when it has it, else downloaded once per session from PyPI; checked by digest.
SETUPTOOLS_WHEEL = "setuptools-84.0.0-py3-none-any.whl"
SETUPTOOLS_WHEEL_SHA256 = "51a52592b3b99e102b609654876bd65f19f999935166d1352678931132b0c670"


@pytest.fixture(scope="session")
def setuptools_wheel(tmp_path_factory) -> Path:
    import hashlib
    import sys
    local = Path("/opt/pypi/files") / SETUPTOOLS_WHEEL
    if local.is_file():
        wheel = local
    else:
        where = tmp_path_factory.mktemp("setuptools-wheel")
        version = SETUPTOOLS_WHEEL.split("-")[1]
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--isolated", "--no-deps",
             "--only-binary=:all:", "--index-url", "https://pypi.org/simple/",
             "--dest", str(where), f"setuptools=={version}"],
            capture_output=True, text=True, timeout=300, check=False)
        wheel = where / SETUPTOOLS_WHEEL
        assert done.returncode == 0 and wheel.is_file(), \
            f"could not download {SETUPTOOLS_WHEEL} from PyPI:\n{done.stderr[-2000:]}"
    assert hashlib.sha256(wheel.read_bytes()).hexdigest() == SETUPTOOLS_WHEEL_SHA256
    return wheel
