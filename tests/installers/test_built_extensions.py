"""Extensions built from source have the same bytes whoever built them.

The installing interpreter is the local prefix on a cold build and the cached
runtime layer's on a build that finds the runtime cached; a wheel either builds is
kept in the installer's cache for every later app. So a built extension must not
record which one built it (its RUNPATH did: the app's slug depended on what other
apps had put in the cache).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from slugbuild import compile_app
from slugbuild.installers.common import slug_link_command
from slugbuild.log import Reporter

from ..helpers import FIXTURE_APPS, copy_app, local_interpreter, make_app, slug_differences


def test_the_link_command_names_the_slugs_python_not_the_installing_one() -> None:
    python = local_interpreter("3.12")
    prefix = subprocess.run([str(python), "-c", "import sysconfig; "
                             "print(sysconfig.get_config_var('prefix'))"],
                            capture_output=True, text=True, check=True).stdout.strip()
    ldshared = slug_link_command(python)
    assert ldshared is not None and ldshared.split()[0] in {"gcc", "cc", "clang"}
    assert prefix not in ldshared
    if "-rpath" in ldshared:
        assert "-rpath,/app/.heroku/python/lib" in ldshared


def test_the_link_command_of_a_missing_interpreter_is_none(tmp_path: Path) -> None:
    assert slug_link_command(tmp_path / "python3") is None


@pytest.mark.slow
def test_a_built_extension_is_the_same_with_the_runtime_cached_or_not(tmp_path: Path) -> None:
    app = copy_app(FIXTURE_APPS / "pip-local-packages", tmp_path / "app")
    solo = compile_app(app, tmp_path / "solo.tgz", cache_dir=tmp_path / "cache-solo",
                       reporter=Reporter(quiet=True))
    # Another app with the same Python puts the runtime layer in the cache first.
    other = make_app(tmp_path / "other", {"requirements.txt": "six==1.17.0\n",
                                          ".python-version": "3.12\n",
                                          "Procfile": "web: python -m http.server $PORT\n"})
    compile_app(other, tmp_path / "other.tgz", cache_dir=tmp_path / "cache-shared",
                reporter=Reporter(quiet=True))
    after = compile_app(app, tmp_path / "after.tgz", cache_dir=tmp_path / "cache-shared",
                        reporter=Reporter(quiet=True))
    assert slug_differences(tmp_path / "solo.tgz", tmp_path / "after.tgz") == []
    assert solo.sha256 == after.sha256
