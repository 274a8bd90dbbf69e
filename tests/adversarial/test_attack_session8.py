"""Holes found by attacking slugbuild in session 8 (docs/security.md, "Attacked in
session 8"): each test failed before its fix."""

from __future__ import annotations

import os
import subprocess
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


# --- 2. strip and patchelf on a full disk ---------------------------------------------------

def _tool_writing_to_dev_full(bin_dir: Path, name: str) -> Path:
    """A stand-in for ``name`` whose write fails as on a full disk: the kernel's own
    ENOSPC (/dev/full), reported in the tool's own words by cat."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    tool = bin_dir / name
    tool.write_text('#!/bin/sh\nfor last; do :; done\ncat "$last" > /dev/full\n')
    tool.chmod(0o755)
    return tool


def _an_elf_file(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "libx.so"
    target.write_bytes(Path("/bin/true").read_bytes())
    return target


def test_strip_on_a_full_disk_is_disk_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    """strip failing with ENOSPC while it rewrites the runtime's libraries was
    `tool-failed` ("please report it"): the disk's fault, not slugbuild's."""
    from slugbuild import relocate

    _tool_writing_to_dev_full(tmp_path / "bin", "strip")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    _an_elf_file(tmp_path / "tree")
    with pytest.raises(subprocess.CalledProcessError) as caught:
        relocate.strip_debug_info(tmp_path / "tree")
    known = errors.from_exception(caught.value)
    assert known is not None and known.code == "disk-full", known and known.render()
    assert "strip" in known.render()


def test_a_failing_tool_that_is_not_out_of_space_stays_tool_failed() -> None:
    failed = subprocess.CalledProcessError(1, ["strip", "--strip-debug", "x"],
                                           stderr=b"strip: x: file format not recognized\n")
    known = errors.from_exception(failed)
    assert known is not None and known.code == "tool-failed"


def test_patchelf_on_a_full_disk_is_disk_full_not_a_relocation_failure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The runtime's RUNPATHs rewritten on a full disk ended in
    `runtime-relocation-failed`, which blames the runtime."""
    from slugbuild import relocate
    from slugbuild.runtime.layer import build_runtime_tree
    from slugbuild.runtime.sources import LocalRuntime

    prefix = tmp_path / "prefix"
    library = _an_elf_file(prefix / "lib")
    library.write_bytes(library.read_bytes() + str(prefix).encode())  # names the prefix
    (prefix / "lib" / "python3.12").mkdir()
    fake = _tool_writing_to_dev_full(tmp_path / "bin", "patchelf")
    monkeypatch.setattr(relocate, "patchelf_command", lambda: str(fake))
    monkeypatch.setattr(relocate, "_print_rpaths",
                        lambda patchelf, paths: [f"{prefix}/lib" for _ in paths])
    with pytest.raises(errors.SlugbuildError) as caught:
        build_runtime_tree(LocalRuntime("3.12.1", prefix, "test"), tmp_path / "tree")
    assert caught.value.code == "disk-full", caught.value.render()


def test_a_built_extension_stripped_on_a_full_disk_stops_the_build(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An ELF file built here (naming the cache) is stripped before it is kept; on a
    full disk that failure was ignored and the file left as built (the host-path
    check then blamed the package): now it is `disk-full`."""
    from types import SimpleNamespace

    from slugbuild import dependencies, relocate
    from slugbuild.dependencies import settle_install

    monkeypatch.setattr(dependencies, "pyc_store", lambda job, name: None)
    monkeypatch.setattr(relocate, "compile_bytecode", lambda *args, **kwargs: None)
    home = tmp_path / "home"
    site = home / "lib" / "python3.12" / "site-packages"
    library = _an_elf_file(site / "pkg")
    library.write_bytes(library.read_bytes() + str(tmp_path / "cache").encode())
    _tool_writing_to_dev_full(tmp_path / "bin", "strip")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    job = SimpleNamespace(app_dir=tmp_path / "app", python=tmp_path / "py" / "bin" / "python3",
                          cache=SimpleNamespace(root=tmp_path / "cache"), exports={})
    with pytest.raises(errors.SlugbuildError) as caught:
        settle_install(job, home, "python3.12")  # type: ignore[arg-type]
    assert caught.value.code == "disk-full", caught.value.render()
