""".slugignore, in one place: its patterns, how it is read, what it leaves out and when.

Heroku applies .slugignore before any buildpack runs, so detection, version files,
requirement includes and build hooks all see the app without the paths it lists;
leaving out a file the build needs is refused with a message naming the pattern.
"""

from __future__ import annotations

import json
import tarfile

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from slugbuild import errors
from slugbuild.stage import IgnoreRules, _Glob

from .helpers import (
    MINIMAL,
    Server,
    assert_clean_failure,
    assert_refused,
    cli,
    encoded,
    limited,
    make_app,
    make_buildpack,
    read_member,
    run_cli,
)


def slug_files(slug) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(slug) as tar:
        return {m.name: m for m in tar.getmembers()}


# --- The patterns ---------------------------------------------------------------------------

def test_ignore_rules():
    rules = IgnoreRules(["# docs", "*.log", "/docs/", "tests", "!keep.log", "data/**/*.csv"])
    assert rules.ignored("app.log", False)
    assert rules.ignored("sub/app.log", False)
    assert not rules.ignored("keep.log", False)
    assert rules.ignored("docs", True)
    assert not rules.ignored("src/docs", True)
    assert not rules.ignored("docs", False)
    assert rules.ignored("tests", True)
    assert rules.ignored("pkg/tests", True)
    assert rules.ignored("data/a/b/x.csv", False)
    assert rules.ignored("data/x.csv", False)
    assert not rules.ignored("app.py", False)


@given(st.lists(st.text(max_size=30), max_size=10), st.text(max_size=60), st.booleans())
@settings(max_examples=300)
def test_ignore_rules_accept_any_pattern(lines, path, is_dir):
    assert IgnoreRules(lines).ignored(path, is_dir) in (True, False)


@given(st.lists(st.from_regex(r"[a-z]{1,8}(/[a-z]{1,8}){0,3}", fullmatch=True), min_size=1,
                max_size=5))
def test_literal_patterns_match_themselves(paths):
    rules = IgnoreRules(["/" + p for p in paths])
    assert all(rules.ignored(p, False) for p in paths)


@given(st.text(alphabet="ab/*?.[]", max_size=8), st.text(alphabet="ab/.", max_size=10),
       st.booleans())
@settings(max_examples=400, deadline=None)
def test_linear_glob_matcher_agrees_with_the_regex(pattern, name, anchored):
    regex = _Glob(pattern, anchored, max_unbounded_for_regex=99).regex
    assert regex is not None
    assert _Glob(pattern, anchored)._simulate(name) == (regex.match(name) is not None)


def test_pathological_slugignore_pattern_is_matched_in_bounded_time(tmp_path):
    pack = make_buildpack(tmp_path / "bp", "true\n")
    app = make_app(tmp_path / "app", {".slugignore": "**a" * 30 + "**b\n", "a" * 60: "x",
                                      "keep.txt": "kept\n"})
    result = limited(cli("compile", app, "-o", tmp_path / "slug.tgz", "--buildpack", pack,
                         "--cache-dir", tmp_path / "cache"), cpu=30)
    assert result.returncode == 0, result.stderr
    rules = IgnoreRules(["**a" * 30 + "**b"])
    assert not rules.ignored("a" * 60, False) and rules.ignored("a" * 59 + "b", False)


# --- Reading the file ------------------------------------------------------------------------

@pytest.mark.parametrize("encoding", ["utf-8 BOM", "utf-16 LE BOM", "utf-16 BE BOM"])
def test_slugignore_in_a_windows_encoding(tmp_path, encoding):
    app = tmp_path / "app"
    app.mkdir()
    (app / ".slugignore").write_bytes(encoded("notes/\n*.bak\n", encoding, "CRLF"))
    rules = IgnoreRules.from_app(app)
    assert rules.ignored("notes", is_dir=True)
    assert rules.ignored("app.py.bak", is_dir=False)
    assert not rules.ignored("app.py", is_dir=False)


# --- Before detection: what the build sees, and what it refuses -----------------------------

@pytest.mark.slow
def test_slugignored_lock_files_do_not_count_and_the_app_serves(tmp_path, cache_dir):
    """Heroku removes .slugignore matches before any buildpack runs: the uv files
    listed there do not make two package managers; pip builds it and it serves."""
    app = make_app(tmp_path / "app", {
        ".python-version": "3.12\n",
        "requirements.txt": "six==1.17.0\n",
        "uv.lock": "this would not parse\n",
        "pyproject.toml": "[project]\nname = 'x'\nversion = '1'\nrequires-python = '>=3.99'\n",
        ".slugignore": "uv.lock\npyproject.toml\n",
        "Procfile": "web: python -c 'import six, http.server as s; "
                    "s.test(s.SimpleHTTPRequestHandler, port=int(__import__(\"os\")"
                    ".environ[\"PORT\"]), bind=\"127.0.0.1\")'\n",
        "index.html": "served by pip's build\n",
    })
    result = run_cli("compile", app, "-o", tmp_path / "slug.tgz", "--cache-dir", cache_dir,
                     "--json")
    assert result.returncode == 0, result.stderr
    built = json.loads(result.stdout)
    # setuptools is Heroku's baseline for pip apps on 3.12 (package-managers.md).
    assert [p["name"] for p in built["packages"]] == ["setuptools", "six"]
    assert "More than one package manager" not in result.stderr
    metadata = json.loads((tmp_path / "slug.json").read_text())
    assert metadata["package_manager"]["name"] == "pip"
    with tarfile.open(tmp_path / "slug.tgz") as tar:
        names = set(tar.getnames())
    assert "./uv.lock" not in names and "./pyproject.toml" not in names
    with Server(tmp_path / "slug.tgz") as server:
        assert requests.get(server.base + "/index.html", timeout=10).text == \
            "served by pip's build\n"


def test_only_manager_file_ignored_is_named_as_ignored(tmp_path, cache_dir):
    app = make_app(tmp_path / "app", {"app.py": "", "Pipfile.lock": "{}",
                                      "Pipfile": "", ".slugignore": "Pipfile*\n"})
    result = run_cli("compile", app, "-o", tmp_path / "slug.tgz", "--cache-dir", cache_dir)
    stderr = assert_refused(result, errors.SLUGIGNORE_EXCLUDES_REQUIRED,
                            cache=cache_dir, outputs=(tmp_path / "slug.tgz",))
    assert "Pipfile.lock is matched by .slugignore (pattern 'Pipfile*')" in stderr
    assert str(cache_dir) not in stderr  # never the scratch copy
    bare = make_app(tmp_path / "bare", {"app.py": ""})
    result = run_cli("compile", bare, "-o", tmp_path / "slug.tgz", "--cache-dir", cache_dir)
    stderr = assert_refused(result, errors.NO_PACKAGE_MANAGER, cache=cache_dir)
    assert f"{bare} is a Python app" in stderr and str(cache_dir) not in stderr


def test_manager_companion_ignored_is_named(tmp_path, cache_dir):
    app = make_app(tmp_path / "app", {"uv.lock": "version = 1\n",
                                      "pyproject.toml": "[project]\n",
                                      ".slugignore": "*.toml\n"})
    result = run_cli("compile", app, "-o", tmp_path / "slug.tgz", "--cache-dir", cache_dir)
    stderr = assert_refused(result, errors.SLUGIGNORE_EXCLUDES_REQUIRED, cache=cache_dir,
                            outputs=(tmp_path / "slug.tgz",))
    assert "pyproject.toml is matched by .slugignore (pattern '*.toml')" in stderr


def test_version_files_are_read_after_slugignore(tmp_path):
    """An ignored .python-version does not choose the version (detection sees the
    staged tree); the error for the remaining one names the app directory."""
    app = make_app(tmp_path / "app", {"requirements.txt": "", ".python-version": "3.12\n",
                                      "runtime.txt": "python-2.7.18\n",
                                      ".slugignore": ".python-version\n"})
    cache = tmp_path / "cache"
    result = run_cli("compile", app, "-o", tmp_path / "slug.tgz", "--cache-dir", cache)
    assert_refused(result, errors.PYTHON_VERSION_EOL, cache=cache,
                   outputs=(tmp_path / "slug.tgz",))
    assert "runtime.txt asks for Python 2.7" in result.stderr


@pytest.mark.slow
def test_included_requirements_file_ignored_is_named_as_ignored(tmp_path, cache_dir):
    app = make_app(tmp_path / "app", {".python-version": "3.12\n",
                                      "requirements.txt": "-r extra/base.txt\n",
                                      "extra/base.txt": "six==1.17.0\n",
                                      ".slugignore": "/extra/\n"})
    result = run_cli("compile", app, "-o", tmp_path / "slug.tgz", "--cache-dir", cache_dir)
    stderr = assert_refused(result, errors.REQUIREMENTS_FILE_IGNORED,
                            outputs=(tmp_path / "slug.tgz",))
    assert "requirements.txt line 1 includes extra/base.txt, which .slugignore leaves " \
           "out (pattern '/extra/')" in stderr
    assert "does not exist" not in stderr


def test_slugignore_may_not_leave_out_requirements_txt(tmp_path, cache_dir):
    app = make_app(tmp_path / "app", {**MINIMAL, ".slugignore": "# docs\n*.txt\n"})
    stderr = assert_clean_failure(app, cache_dir, tmp_path,
                                  ".slugignore leaves out a file the build needs")
    assert "requirements.txt is matched by .slugignore (pattern '*.txt')" in stderr
    assert "`!requirements.txt`" in stderr


# --- End to end: left out before the hooks and the install ---------------------------------

@pytest.mark.slow
def test_slugignore_applies_before_hooks_and_install(flask_build):
    # flask_build (conftest.py) lists docs/, *.md, !KEEP.md and /data/*.bin.
    names = slug_files(flask_build.slug_path)
    for gone in ("./docs", "./docs/guide.txt", "./NOTES.md", "./data/blob.bin"):
        assert gone not in names
    for kept in ("./KEEP.md", "./data/keep.txt", "./app.py", "./.slugignore"):
        assert kept in names
    # pre_compile, the first build step, already saw the app without them.
    seen = read_member(flask_build.slug_path, "./pre_compile_saw.txt").split()
    assert "docs" not in seen and "NOTES.md" not in seen and "KEEP.md" in seen
    assert any("Left out 3 path(s) listed in .slugignore" in line for line in flask_build.log)
