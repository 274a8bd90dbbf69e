"""One real app per package manager: built, served from the slug, rebuilt, refused."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
import requests

from slugbuild import compile_app
from slugbuild.log import Reporter

from ..helpers import (
    FIXTURE_APPS,
    Server,
    assert_clean_failure,
    copy_app,
    make_app,
    run_cli,
    seed_runtimes,
    slug_differences,
)

pytestmark = pytest.mark.slow

# fixture app -> (package manager, a package it must have, a dev-only package it must not)
APPS = {
    "flask-pipenv": ("pipenv", "flask", "iniconfig"),
    "poetry-falcon": ("poetry", "falcon", "iniconfig"),
    "uv-bottle": ("uv", "bottle", "iniconfig"),
    "fastapi-uvicorn": ("pip", "fastapi", None),
}


def _build(app, out, cache_dir, **kwargs):
    return compile_app(app, out, cache_dir=cache_dir, reporter=Reporter(quiet=True), **kwargs)


@pytest.fixture(scope="module")
def builds_cache(tmp_path_factory, runtime_seed):
    """The cache of ``builds``: its own (the session's runtime layers copied in), so
    that their dependency layers are installed from the locks whatever other tests
    built in the session cache before, or beside them on another worker."""
    return seed_runtimes(runtime_seed, tmp_path_factory.mktemp("manager-cache") / "cache")


@pytest.fixture(scope="module")
def builds(tmp_path_factory, builds_cache):
    out = tmp_path_factory.mktemp("manager-slugs")
    return {name: _build(FIXTURE_APPS / name, out / f"{name}.tgz", builds_cache)
            for name in APPS}


@pytest.mark.parametrize("name", ["flask-pipenv", "poetry-falcon", "uv-bottle"])
def test_a_warm_build_of_an_unchanged_lock_runs_no_package_manager(builds, builds_cache, tmp_path,
                                                                     monkeypatch, name):
    # Nothing to export, resolve, install, compile or import-check: no uv, Pipenv or
    # Poetry (so no index either) and no Python process; the same slug.
    import subprocess

    started: list[list[str]] = []

    class Recording(subprocess.Popen):  # type: ignore[type-arg]
        def __init__(self, args, *rest, **kwargs):  # type: ignore[no-untyped-def]
            started.append([str(a) for a in ([args] if isinstance(args, (str, Path)) else args)])
            super().__init__(args, *rest, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", Recording)
    warm = _build(FIXTURE_APPS / name, tmp_path / "warm.tgz", builds_cache)
    assert warm.sha256 == builds[name].sha256
    programs = {Path(argv[0]).name for argv in started}
    assert not programs & {"uv", "pipenv", "poetry", "pip"}, started
    assert not any(program.startswith("python") for program in programs), started
    assert not any(arg in ("pipenv", "poetry") for argv in started for arg in argv), started


@pytest.mark.parametrize("name", sorted(APPS))
def test_fixture_app_serves_from_its_slug(builds, name):
    manager, wanted, dev_only = APPS[name]
    result = builds[name]
    meta = json.loads(result.metadata_path.read_text())
    assert meta["package_manager"]["name"] == manager
    names = {p["name"].lower() for p in result.packages}
    assert wanted in names
    assert dev_only not in names
    with tarfile.open(result.slug_path) as tar:
        members = tar.getnames()
    # The manager tools stay in the cache: no pip, uv, pipenv or poetry in the slug.
    for tool in ("pipenv", "poetry", "uv", "pip"):
        assert not any(f"/site-packages/{tool}/" in m for m in members), tool
    with Server(result.slug_path) as server:
        response = requests.get(server.base + "/", timeout=10)
    assert response.status_code == 200
    assert response.json() == {"app": name, "ok": True}
    if manager in ("pipenv", "poetry"):
        # A current lock is read directly: the manager itself is never installed.
        log = "\n".join(result.log)
        assert "is current" in log and f"Installing {manager}==" not in log, log


@pytest.mark.parametrize("name, lock_file", [("uv-bottle", "uv.lock"),
                                             ("flask-pipenv", "Pipfile.lock")])
def test_changed_lock_rebuilds_and_says_why(tmp_path, builds_cache, builds, name, lock_file):
    cache_dir = builds_cache
    app = copy_app(FIXTURE_APPS / name, tmp_path / "app")
    first = _build(app, tmp_path / "one.tgz", cache_dir)
    assert "Restoring dependencies from cache" in "\n".join(first.log)
    assert first.sha256 == builds[name].sha256
    with open(app / lock_file, "a") as handle:
        handle.write("\n")  # still a valid lock, but other bytes
    second = _build(app, tmp_path / "two.tgz", cache_dir)
    log = "\n".join(second.log)
    assert "Discarding cache since:" in log
    assert f"- The contents of {lock_file} changed" in log
    assert f"Installing requirements with {APPS[name][0]}" in log
    assert "Installing pipenv==" not in log  # the tool itself stays cached
    assert second.packages == first.packages


def test_lock_installs_give_the_same_bytes_elsewhere_with_another_cache(tmp_path, builds):
    app = copy_app(FIXTURE_APPS / "uv-bottle", tmp_path / "some" / "other-dir")
    # A cache path this long makes the installer write /bin/sh trampolines
    # instead of shebangs (bottle ships a wheel `scripts` file, bin/bottle.py).
    again = _build(app, tmp_path / "again.tgz", tmp_path / ("long-" * 20) / "fresh-cache")
    assert "Installing requirements with uv" in "\n".join(again.log)
    assert again.sha256 == builds["uv-bottle"].sha256, slug_differences(
        again.slug_path, builds["uv-bottle"].slug_path)


@pytest.mark.parametrize("name, edit, words", [
    ("flask-pipenv", ("Pipfile", 'requests = "*"\n'), "Pipfile.lock does not match Pipfile"),
    ("uv-bottle", ("pyproject.toml", "[tool.x]\n"), None),
    ("poetry-falcon", ("pyproject.toml", "[tool.poetry.group.docs.dependencies]\nsix = '*'\n"),
     "poetry.lock does not match pyproject.toml"),
    ("flask-pipenv", ("Pipfile.lock", "}"), "Pipfile.lock cannot be read"),
])
def test_stale_or_broken_lock_is_refused(tmp_path, cache_dir, name, edit, words):
    app = copy_app(FIXTURE_APPS / name, tmp_path / "app")
    rel, text = edit
    if name == "uv-bottle":
        # A new dependency in pyproject.toml that uv.lock does not have.
        pyproject = (app / rel).read_text().replace('"gunicorn>=23",', '"gunicorn>=23", "six",')
        (app / rel).write_text(pyproject)
        words = "uv.lock does not match pyproject.toml"
    else:
        with open(app / rel, "a") as handle:
            handle.write(text)
    stderr = assert_clean_failure(app, cache_dir, tmp_path, words)
    assert "lock" in stderr.split("Error [", 1)[1]


def test_constraints_from_an_earlier_slug_reproduce_its_versions(tmp_path, cache_dir):
    app = make_app(tmp_path / "app", {".python-version": "3.12\n",
                                      "requirements.txt": "six==1.16.0\n"})
    old = _build(app, tmp_path / "old.tgz", cache_dir)
    (app / "requirements.txt").write_text("six\n")
    result = run_cli("compile", app, "-o", tmp_path / "new.tgz", "--cache-dir", cache_dir,
                     "--constraints-from", old.metadata_path, "--json")
    assert result.returncode == 0, result.stderr
    assert "1 requirement(s) are not pinned" in result.stderr
    # setuptools 70.3.0: Heroku's baseline for pip apps on 3.12 (installers/baseline.py).
    assert json.loads(result.stdout)["packages"] == [{"name": "setuptools", "version": "70.3.0"},
                                                     {"name": "six", "version": "1.16.0"}]


def test_lock_pins_requirements_in_and_keeps_the_old_file_on_failure(tmp_path, cache_dir):
    app = make_app(tmp_path / "app", {"requirements.in": "six\n"})
    result = run_cli("lock", app, "--cache-dir", cache_dir)
    assert result.returncode == 0, result.stderr
    pinned = (app / "requirements.txt").read_text()
    assert "\nsix==" in pinned and "slugbuild lock" in pinned
    (app / "requirements.in").write_text("six\nno-such-package-slugbuild-test-4f1d\n")
    failed = run_cli("lock", app, "--cache-dir", cache_dir)
    assert failed.returncode != 0
    assert "Error [lock-failed]: Could not pin the app's dependencies" in failed.stderr
    assert (app / "requirements.txt").read_text() == pinned
    nothing = run_cli("lock", make_app(tmp_path / "empty", {"app.py": ""}),
                      "--cache-dir", cache_dir)
    assert nothing.returncode != 0 and "Error [nothing-to-lock]: Nothing to lock" in nothing.stderr


@pytest.mark.parametrize("version, kept", [("3.10", True), ("3.12", False)])
def test_lock_resolves_for_the_apps_python_not_slugbuilds(tmp_path, cache_dir, version, kept):
    # slugbuild runs on 3.11 here: the marker is evaluated for the app's version.
    app = make_app(tmp_path / "app", {".python-version": f"{version}\n", "requirements.in":
                                      'tomli ; python_version < "3.11"\nsix\n'})
    result = run_cli("lock", app, "--cache-dir", cache_dir)
    assert result.returncode == 0, result.stderr
    assert f"for Python {version} on " in result.stderr
    pinned = (app / "requirements.txt").read_text()
    assert "\nsix==" in pinned and ("\ntomli==" in pinned) is kept


def test_local_package_is_keyed_by_its_files_and_points_at_the_slug(tmp_path, cache_dir):
    app = make_app(tmp_path / "app", {
        ".python-version": "3.12\n",
        "requirements.txt": "./libs/greeting\n",
        "libs/greeting/pyproject.toml": (
            '[build-system]\nrequires = ["setuptools>=61"]\n'
            'build-backend = "setuptools.build_meta"\n'
            '[project]\nname = "greeting"\nversion = "1.0"\n'),
        "libs/greeting/greeting/__init__.py": "WORD = 'hello'\n",
    })
    first = _build(app, tmp_path / "one.tgz", cache_dir)
    assert not any("name the build directory" in line for line in first.log)
    direct_url = ("./.heroku/python/lib/python3.12/site-packages/"
                  "greeting-1.0.dist-info/direct_url.json")
    with tarfile.open(first.slug_path) as tar:
        assert json.load(tar.extractfile(direct_url))["url"] == "file:///app/libs/greeting"
    (app / "libs/greeting/greeting/__init__.py").write_text("WORD = 'bonjour'\n")
    second = _build(app, tmp_path / "two.tgz", cache_dir)
    log = "\n".join(second.log)
    assert "- The contents of libs/greeting/greeting/__init__.py changed" in log
    with tarfile.open(second.slug_path) as tar:
        module = tar.extractfile(
            "./.heroku/python/lib/python3.12/site-packages/greeting/__init__.py").read()
    assert b"bonjour" in module


def test_a_package_naming_the_build_directory_is_reported(tmp_path, cache_dir):
    # Its build writes the directory it ran in into the package: the slug
    # would carry a path that does not exist once unpacked.
    app = make_app(tmp_path / "app", {
        ".python-version": "3.12\n",
        "requirements.txt": "./libs/leaky\n",
        "libs/leaky/setup.py": (
            "import os\nfrom setuptools import setup\n"
            "with open(os.path.join('leaky', 'where.txt'), 'w') as f:\n"
            "    f.write(os.getcwd())\n"
            "setup(name='leaky', version='1.0', packages=['leaky'],\n"
            "      package_data={'leaky': ['where.txt']})\n"),
        "libs/leaky/leaky/__init__.py": "",
    })
    result = _build(app, tmp_path / "one.tgz", cache_dir)
    warm = _build(app, tmp_path / "warm.tgz", cache_dir)
    assert any("Restoring dependencies from cache" in line for line in warm.log)
    in_package = ".heroku/python/lib/python3.12/site-packages/leaky/where.txt"
    for built in (result, warm):  # a warm build reports what the layer names too
        warnings = [line for line in built.log if "name the build directory" in line]
        assert warnings and in_package in warnings[0]
    # A hook that rewrites the file (a new file, not the cached one) fixes it:
    # what the layer held when it was made is no longer reported.
    (app / "bin").mkdir()
    (app / "bin" / "post_compile").write_text(
        f"#!/usr/bin/env bash\nsed -i 's|.*|/app/libs/leaky|' {in_package}\n")
    (app / "bin" / "post_compile").chmod(0o755)
    fixed = _build(app, tmp_path / "two.tgz", tmp_path / "fresh-cache")
    assert not any(in_package in line for line in fixed.log)


def _run_tool(tmp_path, cache_dir, name: str, argv_tail: list[str], app=None) -> str:
    """What the package manager itself prints for a fixture app (or ``app``)."""
    import os
    import subprocess
    import sys

    from slugbuild.cache import Cache
    from slugbuild.installers import InstallJob
    from slugbuild.installers.tools import ensure_tool, tool_command

    manager = APPS[name][0]
    job = InstallJob(python=Path(sys.executable), python_version="3.12.0", app_dir=tmp_path,
                     lock_file="-", config_vars={}, cache=Cache(cache_dir),
                     reporter=Reporter(quiet=True), scratch=tmp_path)
    tool = ensure_tool(manager, job)
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(tool), "HOME": str(tmp_path),
           "PIPENV_VERBOSITY": "-1", "PIPENV_IGNORE_VIRTUALENVS": "1", "NO_COLOR": "1",
           "POETRY_CONFIG_DIR": str(tmp_path / "p"), "POETRY_CACHE_DIR": str(tmp_path / "p"),
           "POETRY_VIRTUALENVS_CREATE": "false"}
    app = app or FIXTURE_APPS / name
    env["PIPENV_PIPFILE"] = str(app / "Pipfile")
    return subprocess.run([*tool_command(manager), *argv_tail], cwd=app,
                          env=env, capture_output=True, text=True, check=True).stdout


def _pins(text: str) -> dict[str, tuple]:
    """name -> (version, hashes, marker) of an exported requirements file."""
    from packaging.requirements import Requirement

    pins = {}
    for line in text.replace("\\\n", " ").splitlines():
        if not line.strip() or line.startswith("-"):
            continue
        spec, *hashes = line.split(" --hash=")
        requirement = Requirement(spec.strip())
        pins[requirement.name] = (str(requirement.specifier), sorted(h.strip() for h in hashes),
                                  requirement.marker)
    return pins


def test_locks_read_directly_match_what_the_managers_export(tmp_path, cache_dir):
    from slugbuild.installers.pipenv import locked_default_pins
    from slugbuild.installers.poetry import locked_main_pins

    pipenv = _run_tool(tmp_path, cache_dir, "flask-pipenv", ["requirements", "--hash"])
    assert locked_default_pins(FIXTURE_APPS / "flask-pipenv") == pipenv  # byte for byte

    poetry = _pins(_run_tool(tmp_path, cache_dir, "poetry-falcon",
                                ["export", "--only", "main", "--format", "requirements.txt"]))
    ours = _pins(locked_main_pins(FIXTURE_APPS / "poetry-falcon"))
    assert sorted(ours) == sorted(poetry) == ["falcon", "gunicorn"]
    for name, (version, hashes, marker) in ours.items():
        assert (version, hashes) == poetry[name][:2]
        # Poetry adds the project's python constraint, which slugbuild checks on its own.
        for python in ("3.12", "3.13"):
            environment = {"python_version": python, "python_full_version": python + ".0"}
            theirs = poetry[name][2]
            assert (marker is None or marker.evaluate(environment)) == \
                (theirs is None or theirs.evaluate(environment))


def test_runtime_outside_the_poetry_projects_python_is_refused(tmp_path, cache_dir):
    app = copy_app(FIXTURE_APPS / "poetry-falcon", tmp_path / "app")
    (app / ".python-version").write_text("3.11\n")  # the project says ^3.12
    stderr = assert_clean_failure(app, cache_dir, tmp_path, "is not allowed by pyproject.toml")
    assert "asks for `^3.12`" in stderr


def test_hashes_slugbuild_computes_are_the_ones_the_managers_check(tmp_path, cache_dir):
    from slugbuild.installers.pipenv import pipfile_hash
    from slugbuild.installers.poetry import content_hash
    from slugbuild.toml_compat import tomllib

    app = copy_app(FIXTURE_APPS / "poetry-falcon", tmp_path / "poetry")
    pyproject = app / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace(
        "[tool.poetry.dependencies]\n", '[tool.poetry.dependencies]\nsix = "==1.17.0"\n'))
    lock = (app / "poetry.lock").read_text()
    old = tomllib.loads(lock)["metadata"]["content-hash"]
    (app / "poetry.lock").write_text(lock.replace(old, content_hash(tomllib.loads(
        pyproject.read_text()))))
    _run_tool(tmp_path, cache_dir, "poetry-falcon", ["check", "--lock"], app=app)

    app = copy_app(FIXTURE_APPS / "flask-pipenv", tmp_path / "pipenv")
    pipfile = app / "Pipfile"
    pipfile.write_text(pipfile.read_text().replace(
        "[packages]\n", '[packages]\nTyping_Extensions = {version = "*", markers = '
                         '"python_version < \'3.13\'"}\n'))
    lock = json.loads((app / "Pipfile.lock").read_text())
    lock["_meta"]["hash"]["sha256"] = pipfile_hash(tomllib.loads(pipfile.read_text()))
    (app / "Pipfile.lock").write_text(json.dumps(lock))
    _run_tool(tmp_path, cache_dir, "flask-pipenv", ["verify"], app=app)
