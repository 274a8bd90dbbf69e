"""A package built from source at install time sees the build's environment: no
app's environment may decide another app's slug through a shared cache.

App A (config var ENVPKG_FLAVOUR=a) and app B (none) install the same sdist from a
loopback index on one cache; the sdist's build writes the variable into a module.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from slugbuild import compile_app
from slugbuild.installers.built_wheels import BUILD_ENV_INPUT

from ..helpers import (
    minimal_wheel,
    seed_runtimes,
    serve_directory,
    setuptools_sdist,
    write_simple_index,
)

SETUP_PY = '''\
import os
from setuptools import setup
with open("envpkg.py", "w") as module:
    module.write("FLAVOUR = %r\\n" % os.environ.get("ENVPKG_FLAVOUR"))
setup(name="envpkg", version="1.0", py_modules=["envpkg"])
'''


def write_index(root: Path, setuptools: Path) -> None:
    """A PEP 503 index: envpkg's sdist (its build writes ENVPKG_FLAVOUR, as the build
    saw it, into envpkg.py), setuptools' wheel (its build backend: the
    ``setuptools_wheel`` fixture) and a wheel-only plainpkg."""
    write_simple_index(root, {
        "envpkg": ("envpkg-1.0.tar.gz", setuptools_sdist("envpkg", "1.0", SETUP_PY)),
        "setuptools": (setuptools.name, setuptools.read_bytes()),
        "plainpkg": ("plainpkg-1.0-py3-none-any.whl",
                     minimal_wheel("plainpkg", "1.0", "VALUE = 1\n"))})


def flavour_in_slug(slug: Path) -> str:
    with tarfile.open(slug) as tar:
        for member in tar:
            if member.name.endswith("site-packages/envpkg.py"):
                return tar.extractfile(member).read().decode()
    raise AssertionError("envpkg.py is not in the slug")


def make_app(root: Path) -> Path:
    app = root / "app"
    app.mkdir(parents=True)
    (app / "app.py").write_text("import envpkg\n")
    (app / "Procfile").write_text("web: python -m http.server $PORT\n")
    (app / ".python-version").write_text("3.13\n")
    (app / "requirements.txt").write_text("envpkg==1.0\n")
    return app


@pytest.fixture
def envpkg_index(tmp_path: Path, setuptools_wheel: Path) -> Iterator[dict[str, str]]:
    """write_index's index served on loopback while the test runs: the config var
    that points the installers at it."""
    write_index(tmp_path / "index", setuptools_wheel)
    with serve_directory(tmp_path / "index") as base:
        yield {"PIP_INDEX_URL": f"{base}/simple/"}


def seeded_cache(runtime_seed: Path, cache: Path) -> Path:
    """``cache`` holding the session's Python 3.13 runtime layer: the subject here is
    the dependency layer, not the cold runtime path."""
    return seed_runtimes(runtime_seed, cache, "3.13")


@pytest.mark.slow
@pytest.mark.parametrize("manager", ["uv", "pip"])
def test_one_apps_build_environment_never_reaches_another_apps_slug(
        tmp_path, manager, envpkg_index, runtime_seed):
    cache = seeded_cache(runtime_seed, tmp_path / "cache")
    index = dict(envpkg_index)
    if manager == "pip":
        index["SLUGBUILD_PIP_INSTALLER"] = "pip"
    one = make_app(tmp_path / "one")
    compile_app(one, tmp_path / "one.tgz", cache_dir=cache,
                env={**index, "ENVPKG_FLAVOUR": "a"})
    assert flavour_in_slug(tmp_path / "one.tgz") == "FLAVOUR = 'a'\n"
    # A run that builds from source writes the caches privately (installers/common.py,
    # guarded_run): its built wheel is kept nowhere, and nothing of it is shared.
    built = "sdists-v*" if manager == "uv" else "wheels"
    assert not [path for path in (cache / "built-wheels" / manager).glob(f"*/{built}/*")
                if not path.name.startswith(".")]  # uv's bookkeeping files aside
    assert not list((cache / manager).glob(built))
    two = make_app(tmp_path / "two")
    layers = set(os.listdir(cache / "layers"))
    compile_app(two, tmp_path / "two.tgz", cache_dir=cache, env=index)
    assert flavour_in_slug(tmp_path / "two.tgz") == "FLAVOUR = None\n"
    # Both stay cached: the second under the layer key plus its environment's hash.
    assert len(set(os.listdir(cache / "layers")) - layers) == 1
    layers = set(os.listdir(cache / "layers"))
    # The same environment again shares the first app's layer.
    shutil.rmtree(one)
    one = make_app(tmp_path / "one")
    compile_app(one, tmp_path / "again.tgz", cache_dir=cache,
                env={**index, "ENVPKG_FLAVOUR": "a"})
    assert flavour_in_slug(tmp_path / "again.tgz") == "FLAVOUR = 'a'\n"
    assert set(os.listdir(cache / "layers")) == layers


@pytest.mark.slow
def test_wheel_only_layers_stay_shared_across_environments(tmp_path, runtime_seed):
    """No package code runs for a wheel: apps with other config vars share its layer."""
    write_simple_index(tmp_path / "index", {"plainpkg": (
        "plainpkg-1.0-py3-none-any.whl", minimal_wheel("plainpkg", "1.0", "VALUE = 1\n"))})
    cache = seeded_cache(runtime_seed, tmp_path / "cache")
    with serve_directory(tmp_path / "index") as base:
        for number, flavour in enumerate(("a", "b")):
            app = make_app(tmp_path / str(number))
            (app / "requirements.txt").write_text("plainpkg==1.0\n")
            (app / "app.py").write_text("import plainpkg\n")
            compile_app(app, tmp_path / f"{number}.tgz", cache_dir=cache, env={
                "PIP_INDEX_URL": f"{base}/simple/", "ENVPKG_FLAVOUR": flavour})
            manifests = [json.loads(p.read_text())
                         for p in (cache / "layers").glob("*/manifest.json")]
            assert len(manifests) == 1
            assert BUILD_ENV_INPUT not in manifests[0]["inputs"]


@pytest.mark.slow
def test_a_changed_requirement_never_starts_from_another_environments_layer(
        tmp_path, envpkg_index, runtime_seed):
    """The incremental path (incremental.py): the app directory's previous layer, built
    from source with ENVPKG_FLAVOUR=a, is not where a build without it starts."""
    cache = seeded_cache(runtime_seed, tmp_path / "cache")
    app = make_app(tmp_path / "one")
    compile_app(app, tmp_path / "one.tgz", cache_dir=cache,
                env={**envpkg_index, "ENVPKG_FLAVOUR": "a"})
    (app / "requirements.txt").write_text("envpkg==1.0\nplainpkg==1.0\n")
    compile_app(app, tmp_path / "two.tgz", cache_dir=cache, env=envpkg_index)
    assert flavour_in_slug(tmp_path / "two.tgz") == "FLAVOUR = None\n"


@pytest.mark.slow
def test_a_layer_pulled_from_a_registry_keeps_its_build_environment(
        tmp_path, registry, envpkg_index, runtime_seed):
    """Runner one pushes the layer it built from source with ENVPKG_FLAVOUR=a; runner
    two, on a cache of its own without the variable, pulls it and does not use it."""
    reference = f"docker://{registry.host}/slugbuild-cache/envkey"
    compile_app(make_app(tmp_path / "one"), tmp_path / "one.tgz",
                cache_dir=seeded_cache(runtime_seed, tmp_path / "cache-one"),
                cache_registry=reference, env={**envpkg_index, "ENVPKG_FLAVOUR": "a"})
    compile_app(make_app(tmp_path / "two"), tmp_path / "two.tgz",
                cache_dir=seeded_cache(runtime_seed, tmp_path / "cache-two"),
                cache_registry=reference, env=envpkg_index)
    assert flavour_in_slug(tmp_path / "two.tgz") == "FLAVOUR = None\n"
