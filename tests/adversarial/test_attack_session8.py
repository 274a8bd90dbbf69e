"""Holes found by attacking slugbuild in session 8 (docs/security.md, "Attacked in
session 8"): each test failed before its fix."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from slugbuild import errors
from slugbuild.importcheck import check_process_commands, console_scripts, entry_points

from ..helpers import MINIMAL, assert_clean_failure, make_app

# Longer than NAME_MAX (255): a path lookup of it fails with ENAMETOOLONG.
LONG_WORD = "a" * 300


def _slug_python(root: Path) -> Path:
    """A slug's interpreter path (an empty file) with its bin directory."""
    bin_dir = root / ".heroku" / "python" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python3.12").write_text("")
    return bin_dir / "python3.12"


# --- 1. a Procfile word longer than a file name -----------------------------------------

@pytest.mark.parametrize("command", [f"python -m {LONG_WORD} $PORT",
                                     f"python -m {LONG_WORD}.app",
                                     f"python -m {'x/' * 3000}y"])
def test_an_overlong_module_word_is_not_the_apps_and_raises_nothing(tmp_path: Path,
                                                                    command: str) -> None:
    """`python -m aaa…` (300 characters): asking whether the app holds a module of that
    name failed with ENAMETOOLONG, which ended the build as a traceback."""
    found = entry_points({"web": command}, {}, tmp_path)
    assert [point.process for point in found] in ([], ["web"])


@pytest.mark.parametrize("program", [LONG_WORD, f"{LONG_WORD}.sh"])
def test_an_overlong_program_word_is_left_to_the_dyno(tmp_path: Path, program: str) -> None:
    """`web: aaa… arg`: the program is looked up in the slug's bin and the app; a name
    too long for a file is in neither, and no near miss of the slug's programs."""
    python = _slug_python(tmp_path)
    check_process_commands(tmp_path, python, {"web": f"{program} --port $PORT"}, {},
                           "3.12.1", "requirements.txt")


def test_an_overlong_near_miss_is_still_one_catalogue_error(tmp_path: Path) -> None:
    """The lookup's failure does not hide a real near miss beside it."""
    python = _slug_python(tmp_path)
    (python.parent / "gunicorn").write_text("")
    with pytest.raises(errors.PROCESS_COMMAND_UNKNOWN.exception):
        check_process_commands(tmp_path, python, {"web": f"gunicron {LONG_WORD}"}, {},
                               "3.12.1", "requirements.txt")
    assert os.path.exists(python)


@pytest.mark.slow
def test_a_build_with_an_overlong_procfile_word_ends_in_one_catalogue_error(
        tmp_path: Path, cache_dir: Path) -> None:
    """End to end: the build stopped with `filesystem-error` and a traceback file; the
    module named is simply not importable from the slug."""
    app = make_app(tmp_path / "app", {**MINIMAL, "Procfile": f"web: python -m {LONG_WORD}\n"})
    stderr = assert_clean_failure(app, cache_dir, tmp_path, "[process-import-failed]")
    assert "filesystem-error" not in stderr and "traceback" not in stderr


# --- 4. a dist-info's entry_points.txt that is no file --------------------------------------

def _site_packages(root: Path) -> Path:
    site = root / "lib" / "python3.12" / "site-packages"
    good = site / "gunicorn-23.0.0.dist-info"
    good.mkdir(parents=True)
    (good / "entry_points.txt").write_text("[console_scripts]\ngunicorn = gunicorn.app:run\n")
    return site


@pytest.mark.parametrize("planted", ["directory", "link-to-directory", "fifo", "dev-zero",
                                     "direct-url-directory"])
def test_an_entry_points_file_that_is_no_file_is_ignored(tmp_path: Path, planted: str) -> None:
    """A hook (or a package's build) can leave `x.dist-info/entry_points.txt` as a
    directory: reading it raised IsADirectoryError, a traceback at the import check.
    A fifo hung the build, /dev/zero filled memory. Such a file holds no scripts."""
    site = _site_packages(tmp_path)
    hostile = site / "hostile-1.0.dist-info"
    hostile.mkdir()
    target = hostile / "entry_points.txt"
    if planted == "directory":
        target.mkdir()
    elif planted == "link-to-directory":
        (tmp_path / "elsewhere").mkdir()
        target.symlink_to(tmp_path / "elsewhere")
    elif planted == "fifo":
        os.mkfifo(target)
    elif planted == "dev-zero":
        target.symlink_to("/dev/zero")
    else:
        target.write_text("[console_scripts]\nhostile = hostile.cli:main\n")
        (hostile / "direct_url.json").mkdir()
    scripts = console_scripts(site)
    assert scripts["gunicorn"] == "gunicorn.app"
    assert set(scripts) <= {"gunicorn", "hostile"}


def test_an_oversized_entry_points_file_is_ignored(tmp_path: Path) -> None:
    """Read within a bound: a sparse 1 GiB entry_points.txt is not read into memory."""
    site = _site_packages(tmp_path)
    hostile = site / "hostile-1.0.dist-info"
    hostile.mkdir()
    with open(hostile / "entry_points.txt", "wb") as handle:
        handle.write(b"[console_scripts]\nhostile = hostile.cli:main\n")
        handle.truncate(1 << 30)
    assert console_scripts(site) == {"gunicorn": "gunicorn.app"}
