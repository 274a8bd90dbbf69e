"""`buildpack install DIR --force` replaces an earlier install only: a typo naming a
directory of other files (`install ~ --force`) must not empty it."""

from __future__ import annotations

from pathlib import Path

import pytest

import slugbuild
from slugbuild import errors


def test_force_never_empties_a_directory_that_is_not_an_install(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "lib").mkdir(parents=True)
    (home / "notes.txt").write_text("mine\n")
    with pytest.raises(errors.SlugbuildError) as raised:
        slugbuild.install_buildpack(home, force=True)
    assert raised.value.code == errors.BUILDPACK_INSTALL_REFUSED.code
    assert raised.value.variant == "not-a-buildpack"
    assert (home / "notes.txt").read_text() == "mine\n"
    assert sorted(p.name for p in home.iterdir()) == ["lib", "notes.txt"]


def test_force_replaces_an_earlier_install(tmp_path: Path) -> None:
    target = slugbuild.install_buildpack(tmp_path / "bp")
    (target / "stray").write_text("left from before\n")
    slugbuild.install_buildpack(target, force=True)
    assert not (target / "stray").exists()
    assert (target / "bin" / "compile").is_file()
