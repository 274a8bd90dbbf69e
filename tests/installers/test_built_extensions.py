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


def test_elf_files_settled_from_the_host_path_scan_match_the_pass_over_every_file(
        tmp_path: Path) -> None:
    """A layer installed in its own tree settles its ELF files from the host-path scan's
    findings (dependencies._settle_found_elf_files) instead of reading every file first
    (settle_install's pass): the same bytes in every file, RECORD included, and the
    same host paths left."""
    import shutil
    import types

    from slugbuild import records, relocate
    from slugbuild.dependencies import _settle_found_elf_files, host_needles

    cache, prefix = tmp_path / "cache", tmp_path / "prefix"
    (prefix / "lib").mkdir(parents=True)
    (prefix / "bin").mkdir()
    python = prefix / "bin" / "python3.12"
    python.touch()
    tree = tmp_path / "one" / "tree"
    site = tree / "lib" / "python3.12" / "site-packages"
    (site / "ext").mkdir(parents=True)
    (site / "ext-1.0.dist-info").mkdir()
    source = tmp_path / "ext.c"
    source.write_text("int ext(void) { return 1; }\n")
    # Built "here": a RUNPATH into the installing prefix and debug info naming the cache.
    (cache / "build").mkdir(parents=True)
    shutil.copy(source, cache / "build" / "ext.c")
    subprocess.run(["gcc", "-g", "-shared", "-fPIC", "-o", str(site / "ext" / "_ext.so"),
                    str(cache / "build" / "ext.c"), f"-Wl,-rpath,{prefix}/lib"],
                   check=True, capture_output=True)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(site / "ext" / "_plain.so"),
                    str(source)], check=True, capture_output=True)  # names nothing here
    (site / "ext" / "__init__.py").write_text("from ._ext import *\n")
    (site / "ext" / "notes.txt").write_text(f"made in {cache}\n")  # not ELF: only reported
    (site / "ext-1.0.dist-info" / "RECORD").write_text("".join(
        records.record_line(f"ext/{name}", (site / "ext" / name).read_bytes()) + "\n"
        for name in ("_ext.so", "_plain.so", "__init__.py", "notes.txt"))
        + "ext-1.0.dist-info/RECORD,,\n")
    other = tmp_path / "two" / "tree"
    shutil.copytree(tree, other, symlinks=True)
    job = types.SimpleNamespace(python=python, cache=types.SimpleNamespace(root=cache))
    needles = host_needles(job)  # type: ignore[arg-type]

    # As settle_install does it, then the scan.
    changed = relocate.settle_built_elf_files(site, needles, str(prefix), tree / "lib")
    relocate.refresh_records(site, changed)
    before = relocate.find_references(tree, needles)
    # From the scan.
    elf_files: list[str] = []
    found = relocate.find_references(other, needles, elf_files=elf_files)
    after = _settle_found_elf_files(job, other, "python3.12", found,  # type: ignore[arg-type]
                                    elf_files)

    assert [p.name for p in changed] == ["_ext.so"]
    assert sorted(p.rsplit("/", 1)[1] for p in elf_files) == ["_ext.so", "_plain.so"]
    assert [(p.relative_to(other), n) for p, n in after] == \
        [(p.relative_to(tree), n) for p, n in before]
    assert [p.name for p, _ in after] == ["notes.txt"]
    for path in sorted(p for p in tree.rglob("*") if p.is_file()):
        assert (other / path.relative_to(tree)).read_bytes() == path.read_bytes(), path
