"""App shapes beyond one Python app at the root: monorepos (APP_BASE), nltk.txt,
assets built by Node beside the Python app."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest
import requests

from slugbuild import compile_app, errors
from slugbuild.app_base import choose_app_base, resolve_app_base
from slugbuild.detect import detect, python_subdirectories
from slugbuild.log import Reporter

from .helpers import FIXTURE_APPS, Server, copy_app, make_app, run_cli

MONOREPO = FIXTURE_APPS / "monorepo-backend"


# --- apps in a subdirectory (APP_BASE) ----------------------------------------------------


def test_app_base_parameter_wins_over_the_config_var() -> None:
    assert choose_app_base("api", {"APP_BASE": "backend"}) == ("api", "--app-base")
    assert choose_app_base(None, {"APP_BASE": "backend"}) == (
        "backend", "the APP_BASE config var")
    assert choose_app_base(None, {"APP_BASE": " "}) is None
    assert choose_app_base(None, {}) is None


@pytest.mark.parametrize("value", ["backend", "./backend/", "backend/"])
def test_app_base_resolves_inside_the_app(tmp_path: Path, value: str) -> None:
    (tmp_path / "backend").mkdir()
    assert resolve_app_base(tmp_path, value, "--app-base") == tmp_path / "backend"


def test_app_base_dot_is_the_root(tmp_path: Path) -> None:
    assert resolve_app_base(tmp_path, ".", "--app-base") == tmp_path


def test_app_base_symlink_inside_the_app_is_the_directory_it_names(tmp_path: Path) -> None:
    (tmp_path / "services" / "api").mkdir(parents=True)
    (tmp_path / "api").symlink_to("services/api")
    assert resolve_app_base(tmp_path, "api", "--app-base") == tmp_path / "services" / "api"


@pytest.mark.parametrize("value, problem", [
    ("../elsewhere", "`..`"),
    ("backend/../../x", "`..`"),
    ("/etc", "absolute"),
    ("~/app", "absolute"),
    ("missing", "does not exist"),
    ("file.txt", "not a directory"),
    ("escape", "outside the app root"),
])
def test_app_base_refuses_what_is_not_a_directory_of_the_app(tmp_path: Path, value: str,
                                                             problem: str) -> None:
    root = tmp_path / "app"
    root.mkdir()
    (root / "file.txt").write_text("x")
    (tmp_path / "outside").mkdir()
    (root / "escape").symlink_to(tmp_path / "outside")
    with pytest.raises(errors.SlugbuildError) as caught:
        resolve_app_base(root, value, "--app-base")
    assert caught.value.code == "app-base-invalid"
    assert problem in caught.value.found
    assert repr(value) in caught.value.found


def test_not_a_python_app_names_the_one_subdirectory_that_is(tmp_path: Path) -> None:
    copy_app(MONOREPO, tmp_path / "repo")
    with pytest.raises(errors.SlugbuildError) as caught:
        detect(tmp_path / "repo")
    assert caught.value.code == "not-a-python-app"
    assert "`backend/` holds a Python app" in caught.value.found
    assert "--app-base backend" in caught.value.found


def test_not_a_python_app_lists_several_subdirectories(tmp_path: Path) -> None:
    make_app(tmp_path, {"api/requirements.txt": "", "services/worker/Pipfile.lock": "{}",
                        "frontend/main.py": "", "node_modules/x/requirements.txt": "",
                        ".hidden/requirements.txt": ""})
    assert python_subdirectories(tmp_path) == ["api", "services/worker"]
    with pytest.raises(errors.SlugbuildError) as caught:
        detect(tmp_path)
    assert "`api/`, `services/worker/`" in caught.value.found


def test_not_a_python_app_without_subdirectories_says_nothing_more(tmp_path: Path) -> None:
    make_app(tmp_path, {"frontend/main.py": "", "README.md": ""})
    with pytest.raises(errors.SlugbuildError) as caught:
        detect(tmp_path)
    assert "subdirector" not in caught.value.found


def test_cli_refuses_an_escaping_app_base(tmp_path: Path) -> None:
    copy_app(MONOREPO, tmp_path / "repo")
    result = run_cli("compile", tmp_path / "repo", "-o", tmp_path / "slug.tgz",
                     "--env", "APP_BASE=../..")
    assert result.returncode == 1
    assert "The app base is not a directory inside the app" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "slug.tgz").exists()


def test_cli_detect_with_app_base() -> None:
    result = run_cli("detect", MONOREPO, "--app-base", "backend", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["package_manager"] == "pip"


@pytest.mark.slow
def test_monorepo_backend_builds_from_app_base_and_serves(tmp_path: Path, cache_dir: Path
                                                          ) -> None:
    """APP_BASE=backend: the slug is backend/'s content only, and its web process runs."""
    slug = tmp_path / "slug.tgz"
    result = compile_app(MONOREPO, slug, cache_dir=cache_dir, env={"APP_BASE": "backend"},
                         reporter=Reporter(quiet=True))
    assert result.process_types == {"web": "gunicorn app:app"}
    with tarfile.open(slug) as tar:
        names = set(tar.getnames())
    assert "./app.py" in names and "./Procfile" in names
    assert not any(name.startswith(("./frontend", "./backend")) or name == "./README.md"
                   for name in names)
    with Server(slug) as server:
        answer = requests.get(server.base + "/", timeout=10)
    assert answer.text == "Hello from the backend; frontend shipped: False\n"
    # The parameter gives the same bytes as the config var.
    again = compile_app(MONOREPO, tmp_path / "again.tgz", cache_dir=cache_dir,
                        app_base="backend", reporter=Reporter(quiet=True),
                        source_date_epoch=None)
    assert again.sha256 == result.sha256
    assert os.path.getsize(slug) == again.size
