"""Bad input ends in one clear message, a non-zero exit, no slug and a sound cache."""

from __future__ import annotations

import os

import pytest

from ..helpers import DJANGO_APP, MINIMAL, assert_clean_failure, copy_app, make_app


def test_not_a_python_app(tmp_path, cache_dir):
    app = make_app(tmp_path / "app", {"README.md": "hello\n", "index.html": "<p>hi</p>\n"})
    stderr = assert_clean_failure(app, cache_dir, tmp_path, "No Python app found")
    assert "requirements.txt" in stderr


def test_missing_app_dir(tmp_path, cache_dir):
    assert_clean_failure(tmp_path / "nope", cache_dir, tmp_path, "App directory not found")


@pytest.mark.slow
def test_malformed_procfile(tmp_path, cache_dir):
    app = make_app(tmp_path / "app", {**MINIMAL, "Procfile": "# ok\nweb gunicorn app:app\n"})
    stderr = assert_clean_failure(app, cache_dir, tmp_path, "Procfile is malformed")
    assert "line 2" in stderr


def test_unknown_python_version(tmp_path, cache_dir):
    app = make_app(tmp_path / "app", {**MINIMAL, ".python-version": "3.11.99\n"})
    stderr = assert_clean_failure(app, cache_dir, tmp_path, "not available")
    assert ".python-version asks for Python 3.11.99" in stderr
    assert "3.12." in stderr  # the available versions are listed


def test_end_of_life_python_version(tmp_path, cache_dir):
    app = make_app(tmp_path / "app", {**MINIMAL, ".python-version": "3.8\n"})
    assert_clean_failure(app, cache_dir, tmp_path, "end of life")


def test_garbage_in_runtime_txt(tmp_path, cache_dir):
    app = make_app(tmp_path / "app", {**MINIMAL, "runtime.txt": "pyth0n 3.12 please\n"})
    assert_clean_failure(app, cache_dir, tmp_path, "Invalid Python version in runtime.txt")


@pytest.mark.slow
def test_requirement_missing_from_index(tmp_path, cache_dir):
    app = make_app(tmp_path / "app", {
        **MINIMAL, "requirements.txt": "six==1.17.0\nslugbuild-no-such-package-xyz==1.0.0\n"})
    stderr = assert_clean_failure(app, cache_dir, tmp_path,
                                  "Could not install the app's dependencies")
    assert "slugbuild-no-such-package-xyz" in stderr
    layers = cache_dir / "layers"
    assert not any("no-such-package" in (p / "manifest.json").read_text()
                   for p in layers.iterdir())


def test_included_requirements_file_missing(tmp_path, cache_dir):
    app = make_app(tmp_path / "app", {**MINIMAL, "requirements.txt": "-r base.txt\n"})
    stderr = assert_clean_failure(app, cache_dir, tmp_path, "A requirements file is missing")
    assert "requirements.txt line 1 includes base.txt" in stderr


def test_symlink_out_of_the_app(tmp_path, cache_dir):
    secret = tmp_path / "secret.txt"
    secret.write_text("do not pack me\n")
    app = make_app(tmp_path / "app", MINIMAL)
    os.symlink(secret, app / "linked.txt")
    assert_clean_failure(app, cache_dir, tmp_path, "A symlink points outside the app")


def test_invalid_config_var(tmp_path, cache_dir):
    app = make_app(tmp_path / "app", MINIMAL)
    assert_clean_failure(app, cache_dir, tmp_path, "Invalid build config var", "--env", "1X=y")


@pytest.mark.slow
def test_collectstatic_raising(tmp_path, cache_dir):
    app = copy_app(DJANGO_APP, tmp_path / "app")
    settings = app / "mysite" / "settings.py"
    settings.write_text(settings.read_text() + "\nSTATIC_ROOT = None\n")
    stderr = assert_clean_failure(app, cache_dir, tmp_path, "Django's collectstatic failed")
    assert "STATIC_ROOT" in stderr  # the tail of Django's own error is shown
    assert "DISABLE_COLLECTSTATIC" in stderr


@pytest.mark.slow
def test_requirement_missing_from_index_in_a_cold_build(tmp_path):
    # A cold build downloads ahead while it prepares the runtime; that download
    # failing must change nothing: the install reports it, the same way.
    app = make_app(tmp_path / "app", {
        **MINIMAL, "requirements.txt": "six==1.17.0\nslugbuild-no-such-package-xyz==1.0.0\n"})
    stderr = assert_clean_failure(app, tmp_path / "cold-cache", tmp_path,
                                  "Could not install the app's dependencies")
    assert "slugbuild-no-such-package-xyz" in stderr
