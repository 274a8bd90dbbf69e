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
import os
from pathlib import Path

import pytest

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


def test_a_session_build_is_made_once_per_run_and_shared_by_the_workers(
        tmp_path, monkeypatch) -> None:
    """helpers.once_per_run under xdist: two workers ask at once; one makes it, the
    other waits and gets the same value. A make that fails leaves nothing kept."""
    import threading
    import time

    from .helpers import once_per_run

    class Factory:  # a worker's tmp_path_factory: its basetemp is one of the run's
        def __init__(self, worker: str) -> None:
            self.base = tmp_path / "run" / worker
            self.base.mkdir(parents=True)

        def getbasetemp(self) -> Path:
            return self.base

    made: list[Path] = []
    values: list[object] = []

    def make(directory: Path) -> dict[str, str]:
        made.append(directory)
        time.sleep(0.3)  # the other worker asks meanwhile
        (directory / "slug").write_text("built")
        return {"slug": str(directory / "slug")}

    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    workers = [threading.Thread(target=lambda w=w: values.append(
        once_per_run(Factory(w), "build", make))) for w in ("gw0", "gw1")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(made) == 1 and made[0].parent == tmp_path / "run" / "once-per-run"
    assert values == [{"slug": str(made[0] / "slug")}] * 2

    def failing(directory: Path) -> None:
        (directory / "half").write_text("")
        raise RuntimeError("the build failed")

    factory = Factory("gw2")
    for _ in range(2):  # tried again, from an empty directory
        with pytest.raises(RuntimeError):
            once_per_run(factory, "failing", failing)
    assert once_per_run(factory, "failing", lambda d: sorted(os.listdir(d))) == []

    monkeypatch.delenv("PYTEST_XDIST_WORKER")  # a plain pytest: made each time it is asked
    assert once_per_run(_mktemp_factory(tmp_path), "x", lambda d: d) != \
        once_per_run(_mktemp_factory(tmp_path), "x", lambda d: d)


def _mktemp_factory(root: Path):
    """Enough of pytest's TempPathFactory for once_per_run outside xdist."""
    import tempfile

    class Factory:
        def mktemp(self, name: str) -> Path:
            return Path(tempfile.mkdtemp(prefix=name, dir=root))

    return Factory()


def test_an_alone_test_runs_with_no_other_test_at_once(tmp_path) -> None:
    """helpers.taking_turns: tests of two workers run side by side; an ``alone`` one
    waits for the running ones, and no test starts while it runs, even though the
    other worker keeps starting tests (it must not wait for ever)."""
    import threading
    import time

    from .helpers import taking_turns

    running: list[str] = []
    overlaps: list[list[str]] = []
    stop = threading.Event()
    lock = threading.Lock()

    def run(name: str, alone: bool, seconds: float) -> None:
        with taking_turns(tmp_path, alone):
            with lock:
                if running and (alone or "alone" in running):
                    overlaps.append([*running, name])
                running.append(name)
            time.sleep(seconds)
            with lock:
                running.remove(name)

    def busy_worker(worker: str) -> None:  # short tests back to back
        number = 0
        while not stop.is_set():
            run(f"{worker}-{number}", False, 0.02)
            number += 1

    workers = [threading.Thread(target=busy_worker, args=(w,)) for w in ("gw0", "gw1")]
    for worker in workers:
        worker.start()
    time.sleep(0.1)
    finished = threading.Event()
    alone = threading.Thread(target=lambda: (run("alone", True, 0.2), finished.set()))
    alone.start()
    assert finished.wait(10), "the alone test never got its turn"
    stop.set()
    for thread in (*workers, alone):
        thread.join()
    assert overlaps == []
