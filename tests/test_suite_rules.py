"""The test suite's own rules, checked so they stay true as tests are added.

- No test module imports another: shared code lives in tests/helpers.py and shared
  fixtures in tests/conftest.py, so a test file can be moved or renamed alone.
- No test module defines a fixture named like a session fixture of conftest.py:
  a module-level ``cache_dir`` shadows the session cache and silently makes every
  build in that module cold.
- Tests mirror src/: a folder of tests/ is named for a package of src/slugbuild/,
  or is pipeline/ (whole builds through compile_app) or buildpacks/ (the
  repository's buildpacks/); each is a package, so ``from ..helpers import`` works.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src" / "slugbuild"
# Folders that are not named for a src package, and why they exist.
# golden/: recorded slug digests; adversarial/: attacks that cross modules (docs/security.md)
OTHER_FOLDERS = {"pipeline", "buildpacks", "golden", "adversarial"}


def _test_modules() -> list[Path]:
    return sorted(TESTS.rglob("test_*.py"))


def _imported_modules(tree: ast.Module) -> list[str]:
    """Every module an ``import``/``from … import`` names, relative ones with their dots."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            names.append(base)
            if node.module is None:  # `from . import test_x`
                names.extend(base + alias.name for alias in node.names)
    return names


def _fixture_names(tree: ast.Module) -> set[str]:
    def is_fixture(decorator: ast.expr) -> bool:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        return isinstance(target, ast.Attribute) and target.attr == "fixture"

    return {node.name for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and any(is_fixture(d) for d in node.decorator_list)}


def test_no_test_module_imports_another() -> None:
    offenders = []
    for path in _test_modules():
        for name in _imported_modules(ast.parse(path.read_text(), str(path))):
            if name.rsplit(".", 1)[-1].startswith("test_") or ".test_" in name:
                offenders.append(f"{path.relative_to(TESTS)} imports {name}")
    assert offenders == []


def test_no_test_module_shadows_a_session_fixture() -> None:
    shared = _fixture_names(ast.parse((TESTS / "conftest.py").read_text()))
    assert "cache_dir" in shared
    offenders = [f"{path.relative_to(TESTS)} defines {name}"
                 for path in _test_modules()
                 for name in sorted(_fixture_names(ast.parse(path.read_text())) & shared)]
    assert offenders == []


def test_test_folders_are_named_for_src_packages() -> None:
    packages = {path.parent.name for path in SRC.glob("*/__init__.py")}
    folders = {path for path in TESTS.iterdir()
               if path.is_dir() and not path.name.startswith((".", "__"))}
    assert sorted(p.name for p in folders if p.name not in packages | OTHER_FOLDERS) == []
    assert sorted(p.name for p in folders if p.name != "golden"
                  and not (p / "__init__.py").is_file()) == []


def test_what_is_kept_per_machine_is_made_once_and_stale_entries_go(tmp_path) -> None:
    import os
    import threading
    import time

    from .helpers import MACHINE_CACHE_DAYS, machine_cache_entry

    found_complete: list[bool] = []

    def session() -> None:  # two sessions of one machine, at the same time
        with machine_cache_entry("things", "k1", tmp_path) as entry:
            def make() -> None:  # what a session does with the entry, made or not
                found_complete.append(entry.complete)
                time.sleep(0.3)  # the other session arrives while this one makes it

            entry.once(make)

    sessions = [threading.Thread(target=session) for _ in range(2)]
    for thread in sessions:
        thread.start()
    for thread in sessions:
        thread.join()
    # The second waited for the first to make it, then used it as made.
    assert found_complete == [False, True]

    # A daemon's directory is one session's at a time.
    with machine_cache_entry("things", "k1", tmp_path) as entry:
        with entry.alone() as first, entry.alone() as second:
            assert (first, second) == (True, False)

    stale = time.time() - (MACHINE_CACHE_DAYS + 1) * 86400
    for key in ("old", "old-in-use"):
        (tmp_path / "things" / key).mkdir()
        os.utime(tmp_path / "things" / key, (stale, stale))
    with machine_cache_entry("things", "old-in-use", tmp_path):
        os.utime(tmp_path / "things" / "old-in-use", (stale, stale))
        with machine_cache_entry("things", "k1", tmp_path):
            pass
        assert sorted(p.name for p in (tmp_path / "things").iterdir() if p.is_dir()) == [
            "k1", "old-in-use"]
