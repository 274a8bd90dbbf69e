"""Dependency layers: keyed by what determines them, fresh when that changes."""

from __future__ import annotations

import json
import tarfile

import pytest

from slugbuild import compile_app
from slugbuild.log import Reporter

from ..helpers import make_app, seed_runtimes

pytestmark = pytest.mark.slow


def _build(app, out, cache_dir, **kwargs):
    return compile_app(app, out, cache_dir=cache_dir, reporter=Reporter(quiet=True), **kwargs)


def _names(slug):
    with tarfile.open(slug) as tar:
        return tar.getnames()


def test_changed_requirements_build_a_fresh_layer(tmp_path, cache_dir):
    app = make_app(tmp_path / "app", {
        ".python-version": "3.12\n",
        "requirements.txt": "-r base.txt\nidna==3.10\n",
        "base.txt": "six==1.17.0\n",
        "Procfile": "web: python -m http.server $PORT\n",
    })
    first = _build(app, tmp_path / "one.tgz", cache_dir)
    assert "Installing requirements with pip" in "\n".join(first.log)
    assert any("/site-packages/idna/" in n for n in _names(first.slug_path))

    # An included file changes: the key changes too.
    (app / "base.txt").write_text("six==1.16.0\n")
    second = _build(app, tmp_path / "two.tgz", cache_dir)
    assert "Installing requirements with pip" in "\n".join(second.log)
    assert {"name": "six", "version": "1.16.0"} in second.packages

    # A package removed from the requirements is really gone from the slug.
    (app / "requirements.txt").write_text("-r base.txt\n")
    third = _build(app, tmp_path / "three.tgz", cache_dir)
    assert "Installing requirements with pip" in "\n".join(third.log)
    assert not any("/site-packages/idna" in n for n in _names(third.slug_path))
    # setuptools: Heroku's baseline for pip apps on 3.12 (installers/baseline.py).
    assert [p["name"] for p in third.packages] == ["setuptools", "six"]
    meta = json.loads(third.metadata_path.read_text())
    assert meta["package_manager"]["files"] == ["requirements.txt", "base.txt"]

    # Going back to an earlier set restores that layer instead of reinstalling.
    (app / "requirements.txt").write_text("-r base.txt\nidna==3.10\n")
    fourth = _build(app, tmp_path / "four.tgz", cache_dir)
    assert "Restoring dependencies from cache" in "\n".join(fourth.log)
    assert fourth.sha256 == second.sha256


def test_config_vars_never_reach_the_slug(tmp_path, cache_dir):
    app = make_app(tmp_path / "app", {
        ".python-version": "3.12\n",
        "requirements.txt": "six==1.17.0\n",
    })
    secret = "sekrit-value-4f1d9c"
    result = _build(app, tmp_path / "s.tgz", cache_dir, env={"API_TOKEN": secret})
    assert secret.encode() not in result.slug_path.read_bytes()
    with tarfile.open(result.slug_path) as tar:
        for member in tar:
            if member.isfile():
                assert secret.encode() not in tar.extractfile(member).read()
    assert secret not in result.metadata_path.read_text()
    for manifest in cache_dir.glob("*/*/manifest.json"):
        assert secret not in manifest.read_text()


def test_source_date_epoch_sets_entry_times(tmp_path, cache_dir):
    app = make_app(tmp_path / "app", {".python-version": "3.12\n", "requirements.txt": ""})
    result = _build(app, tmp_path / "e.tgz", cache_dir, source_date_epoch=1700000000)
    with tarfile.open(result.slug_path) as tar:
        assert {m.mtime for m in tar} == {1700000000}


def test_same_app_in_other_places_with_other_caches_gives_the_same_bytes(tmp_path):
    files = {
        ".python-version": "3.12\n",
        "requirements.txt": "six==1.17.0\n",
        "Procfile": "web: python -m http.server $PORT\n",
        "app/__init__.py": "VALUE = 1\n",
    }
    one = _build(make_app(tmp_path / "a" / "app", files), tmp_path / "one.tgz",
                 tmp_path / "cache-one")
    two = _build(make_app(tmp_path / "b" / "c" / "other-name", files), tmp_path / "two.tgz",
                 tmp_path / "cache-two")
    assert one.sha256 == two.sha256


def test_a_layer_built_apart_is_the_one_built_onto_the_build(tmp_path, runtime_seed):
    """Without a pre_compile hook the dependency layer is installed into a tree of
    its own, beside the runtime; with one, onto the build's runtime. The slug's
    .heroku/python must not show which."""
    from ..helpers import slug_differences

    files = {
        ".python-version": "3.12\n",
        "requirements.txt": "gunicorn==23.0.0\nsix==1.17.0\n",  # a console script, a module
        "Procfile": "web: gunicorn app:app\n",
    }
    apart = _build(make_app(tmp_path / "apart", files), tmp_path / "apart.tgz",
                   seed_runtimes(runtime_seed, tmp_path / "cache-apart"))
    onto_app = make_app(tmp_path / "onto", {**files, "bin/pre_compile": "#!/bin/sh\ntrue\n"})
    onto = _build(onto_app, tmp_path / "onto.tgz",
                  seed_runtimes(runtime_seed, tmp_path / "cache-onto"))
    assert "dependency_layer_apart" in apart.timings
    assert "dependency_layer_apart" not in onto.timings
    assert apart.packages == onto.packages
    assert any(n.endswith("/site-packages/six.py") for n in _names(apart.slug_path))
    differences = slug_differences(apart.slug_path, onto.slug_path, most=1000)
    assert differences == ["./bin", "./bin/pre_compile"]


@pytest.mark.slow
def test_prefetch_fills_the_installer_cache_ahead_of_the_install(tmp_path):
    from slugbuild.cache import Cache
    from slugbuild.dependencies import Prefetch

    cache = Cache(tmp_path / "cache")

    def start(name: str, requirements: str) -> Prefetch | None:
        app = make_app(tmp_path / name, {"requirements.txt": requirements})
        return Prefetch.start(app_dir=app, lock_file="requirements.txt", package_manager="pip",
                              config_vars={}, cache=cache, reporter=Reporter(quiet=True),
                              python_version="3.12.1", scratch=tmp_path / f"prefetch-{name}")

    # Pinned, and version ranges (uv resolves those too): both downloaded ahead.
    for name, requirements, module in (("app", "six==1.17.0\n", "six.py"),
                                       ("ranged", "idna>=3,<4\n", "idna/__init__.py")):
        prefetch = start(name, requirements)
        assert prefetch is not None
        prefetch.wait()
        prefetch.stop()
        assert prefetch.process.returncode == 0
        assert list((tmp_path / "cache" / "uv").rglob(module))
    # An option only pip reads: pip installs, and pip resolves as it installs.
    assert start("pip-only", "--prefer-binary\nsix>=1\n") is None


@pytest.mark.slow
@pytest.mark.parametrize("name, lock_file, manager, manifest", [
    ("flask-pipenv", "Pipfile.lock", "pipenv", "Pipfile"),
    ("poetry-falcon", "poetry.lock", "poetry", "pyproject.toml"),
])
def test_current_locks_are_downloaded_ahead_and_stale_ones_are_not(
        tmp_path, name, lock_file, manager, manifest):
    from slugbuild.cache import Cache
    from slugbuild.dependencies import Prefetch

    from ..helpers import FIXTURE_APPS, copy_app

    app = copy_app(FIXTURE_APPS / name, tmp_path / "app")
    cache = Cache(tmp_path / "cache")

    def start(scratch: str):
        return Prefetch.start(app_dir=app, lock_file=lock_file, package_manager=manager,
                              config_vars={}, cache=cache, reporter=Reporter(quiet=True),
                              python_version="3.12.1", scratch=tmp_path / scratch)

    prefetch = start("prefetch")
    assert prefetch is not None
    prefetch.wait()
    prefetch.stop()
    assert prefetch.process.returncode == 0
    assert list((tmp_path / "cache" / "uv").rglob("gunicorn/__init__.py"))
    with open(app / manifest, "a") as handle:
        handle.write("\n[x-stale]\nsix = '*'\n" if manager == "pipenv"
                     else "\n[tool.poetry.group.docs.dependencies]\nsix = '*'\n")
    assert start("prefetch2") is None  # only the tool can say what a stale lock means
