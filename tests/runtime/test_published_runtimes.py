"""Runtimes published once, pulled by every build (issue 20's cold builds, issue 17).

``slugbuild runtime publish`` builds Python 3.12's runtime layer on a cache of
its own and pushes it to a real CNCF Distribution registry on 127.0.0.1 (one
for this module: a blob is tampered with below) and into a directory. A build
on an empty cache given ``--python-registry`` pulls it instead of copying and
relocating the pyenv prefix, and its slug is runner A's (the same app built
with the local source), byte for byte. A registry that is down, or a blob that
does not match its digest, costs one warning: the runtime comes from the local
source and nothing wrong is used.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from slugbuild import compile_app
from slugbuild.cache import Cache
from slugbuild.cache_admin import local_layers
from slugbuild.cache_registry import registry_store
from slugbuild.errors import (
    PYTHON_REGISTRY_INVALID,
    RUNTIME_PUBLISH_FAILED,
    SlugbuildError,
)
from slugbuild.layer_artifact import LayoutStore, namespace
from slugbuild.log import Reporter
from slugbuild.platform_info import current as current_platform
from slugbuild.runtime import RuntimeOptions
from slugbuild.runtime.published import version_tag

from ..helpers import FIXTURE_APPS, RegistryServer, assert_refused, free_port, run_cli

APP = FIXTURE_APPS / "flask-hello"  # .python-version: 3.12, as runner A's build
VERSION_TAG = version_tag(namespace(current_platform().key), "3.12.1")


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Iterator[tuple[RegistryServer, str, Path, Path]]:
    """The module's registry, its repository and the directory Python 3.12 was
    published to, and the publisher's cache."""
    root = tmp_path_factory.mktemp("published")
    with RegistryServer(root / "registry") as server:
        reference = f"docker://{server.host}/slugbuild/runtimes"
        cache = root / "publisher-cache"
        for target in (reference, root / "runtimes"):
            done = run_cli("runtime", "publish", target, "--python", "3.12",
                           "--python-source", "local", "--cache-dir", cache)
            assert done.returncode == 0, done.stderr
            assert "Published Python 3.12.1 (cpython-3.12.1-" in done.stdout, done.stdout
        yield server, reference, root / "runtimes", cache


def _build(cache: Path, out: Path, python_registry: str) -> tuple[str, str, dict]:
    reporter = Reporter(quiet=True)
    result = compile_app(APP, out, cache_dir=cache, reporter=reporter,
                         runtime_options=RuntimeOptions.from_env(
                             sources="local", python_registry=python_registry))
    return result.sha256, "\n".join(reporter.lines), dict(result.runtime)


def _runtime_layers(cache: Path) -> list[str]:
    return [entry.name for entry in local_layers(Cache(cache), ("runtimes",))]


def _warnings(log: str, about: str = "") -> list[str]:
    return [line for line in log.splitlines() if line.startswith(" !") and about in line]


@pytest.mark.slow
def test_a_build_on_an_empty_cache_pulls_the_published_runtime(
        published, runner_a, tmp_path: Path) -> None:
    _, reference, _, publisher = published
    sha, log, runtime = _build(tmp_path / "cache", tmp_path / "slug.tgz", reference)
    assert sha == runner_a[2]  # the local source's slug, byte for byte
    assert (f"Pulled the Python 3.12.1 runtime layer from the published runtimes "
            f"{reference}") in log, log
    assert f"Restoring Python 3.12.1 from cache (published in {reference})" in log, log
    assert "Installing Python" not in log
    # Its publisher chose the patch: no advice to install another one locally.
    assert "not the newest" not in log and _warnings(log) == [], log
    assert runtime["source"] == "published" and runtime["published_from"] == "pyenv"
    # The same layer (name and key) as the build that made it.
    assert _runtime_layers(tmp_path / "cache") == _runtime_layers(publisher) \
        == _runtime_layers(runner_a[0])


@pytest.mark.slow
def test_a_directory_holds_the_same_artifact_and_builds_the_same_slug(
        published, runner_a, tmp_path: Path) -> None:
    _, reference, directory, _ = published
    assert LayoutStore(directory).get_manifest(VERSION_TAG) == \
        registry_store(reference).get_manifest(VERSION_TAG)
    listed = run_cli("runtimes", "--python-registry", directory, "--python-source", "local",
                     "--json")
    assert listed.returncode == 0, listed.stderr
    assert {"version": "3.12.1", "source": "published", "origin": str(directory),
            "status": "supported"} in json.loads(listed.stdout)["runtimes"]
    # `slugbuild plan` keys the layer as the build will, and pulls nothing.
    planned = run_cli("plan", APP, "--json", "--cache-dir", tmp_path / "cache",
                      "--python-source", "local", "--python-registry", directory)
    assert planned.returncode == 0, planned.stderr
    [runtime_layer] = [layer for layer in json.loads(planned.stdout)["layers"]
                       if layer["layer"] == "runtime"]
    assert [runtime_layer["name"]] == _runtime_layers(runner_a[0])
    assert runtime_layer["cached"] is False and _runtime_layers(tmp_path / "cache") == []
    out = tmp_path / "slug.tgz"
    built = run_cli("compile", APP, "-o", out, "--cache-dir", tmp_path / "cache",
                    "--python-source", "local", "--python-registry", directory, "--json")
    assert built.returncode == 0, built.stderr
    assert json.loads(built.stdout)["sha256"] == runner_a[2]
    assert "Pulled the Python 3.12.1 runtime layer from the published runtimes" \
        in built.stderr, built.stderr
    # The next build remembers what this one read: it does not read the directory
    # (gone now) while its layer is in the cache.
    directory.rename(directory.with_name("moved"))
    try:
        again = run_cli("compile", APP, "-o", out, "--cache-dir", tmp_path / "cache",
                        "--python-source", "local", "--python-registry", directory)
    finally:
        directory.with_name("moved").rename(directory)
    assert again.returncode == 0, again.stderr
    assert f"Restoring Python 3.12.1 from cache (published in {directory})" in again.stderr
    assert " !" not in again.stderr, again.stderr


@pytest.mark.slow
def test_a_registry_that_is_down_is_one_warning_and_the_local_source(
        runner_a, tmp_path: Path) -> None:
    reference = f"docker://127.0.0.1:{free_port()}/slugbuild/runtimes"
    sha, log, runtime = _build(tmp_path / "cache", tmp_path / "slug.tgz", reference)
    assert sha == runner_a[2]
    [warning] = _warnings(log, "published")
    assert f"The published runtimes {reference} were not used" in warning
    assert "Python 3.12.1 comes from local instead" in warning
    assert "Installing Python 3.12.1 (from pyenv)" in log and runtime["source"] == "local"


@pytest.mark.slow
def test_a_tampered_blob_is_not_used(published, runner_a, tmp_path: Path) -> None:
    server, reference, _, _ = published
    manifest = json.loads(registry_store(reference).get_manifest(VERSION_TAG) or b"")
    with server.tampered(manifest["layers"][0]["digest"]):  # the runtime's part
        sha, log, runtime = _build(tmp_path / "cache", tmp_path / "slug.tgz", reference)
    assert sha == runner_a[2]
    [warning] = _warnings(log, "published")
    assert "its Python 3.12.1 entry was not used" in warning and "digest" in warning, warning
    assert "Pulled" not in log and "Installing Python 3.12.1 (from pyenv)" in log
    assert runtime["source"] == "local"
    assert not list((tmp_path / "cache" / "runtimes").glob("*/part-only.json"))


def test_what_cannot_be_done_is_one_error(tmp_path: Path) -> None:
    refused = run_cli("runtime", "publish", "https://example.com/runtimes", "--python",
                      "3.12", "--cache-dir", tmp_path / "cache")
    assert "https://example.com/runtimes: only docker:// registries" in assert_refused(
        refused, RUNTIME_PUBLISH_FAILED)
    refused = run_cli("runtime", "publish", f"docker://127.0.0.1:{free_port()}/runtimes",
                      "--python", "3.12", "--registry-timeout", "2",
                      "--cache-dir", tmp_path / "cache")
    assert_refused(refused, RUNTIME_PUBLISH_FAILED)
    assert _runtime_layers(tmp_path / "cache") == []  # refused before building anything
    with pytest.raises(SlugbuildError) as raised:
        _build(tmp_path / "cache", tmp_path / "slug.tgz", "docker://127.0.0.1:5000/r:tag")
    assert raised.value.code == PYTHON_REGISTRY_INVALID.code


@pytest.mark.slow
def test_a_remembered_version_whose_store_is_gone_is_one_warning(
        published, runner_a, tmp_path: Path) -> None:
    """`plan` remembers the version and its key inputs; the directory then goes
    before a build needs its layer: one warning, the local source, the same slug."""
    directory = tmp_path / "runtimes"
    shutil.copytree(published[2], directory)
    cache = tmp_path / "cache"
    planned = run_cli("plan", APP, "--cache-dir", cache, "--python-source", "local",
                      "--python-registry", directory)
    assert planned.returncode == 0, planned.stderr
    assert list((cache / "runtime-index").glob("published-*.json"))
    shutil.rmtree(directory)
    sha, log, runtime = _build(cache, tmp_path / "slug.tgz", str(directory))
    assert sha == runner_a[2] and runtime["source"] == "local"
    [warning] = _warnings(log, "published")
    assert f"{directory} is not a directory `slugbuild runtime publish` wrote" in warning
