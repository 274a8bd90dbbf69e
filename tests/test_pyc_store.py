"""Canonical pycs kept across dependency layers (relocate.compile_bytecode's store)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from slugbuild import compile_app, relocate
from slugbuild.log import Reporter
from slugbuild.proc import clean_env

from .helpers import local_interpreter, make_app, seed_runtimes

LOGICAL = "/app/.heroku/python/lib/python3.12/site-packages"


def _compile(python: Path, directory: Path, store: Path | None) -> bytes:
    relocate.compile_bytecode(python, directory, LOGICAL, clean_env(), store=store)
    return next(directory.glob("pkg/__pycache__/mod.*.pyc")).read_bytes()


def _entries(store: Path) -> list[Path]:
    return [p for p in store.rglob("*") if p.is_file()]


def test_a_stored_pyc_is_the_compiled_one_and_is_taken_while_intact(tmp_path):
    python = local_interpreter("3.12")
    store = tmp_path / "store"
    source = "VALUE = {'b', 'a'}\ndef f():\n    return VALUE\n"
    one = make_app(tmp_path / "one", {"pkg/mod.py": source})
    plain = make_app(tmp_path / "plain", {"pkg/mod.py": source})
    compiled = _compile(python, one, store)
    assert compiled == _compile(python, plain, None)  # what the store keeps is what compiles
    (entry,) = _entries(store)
    assert entry.read_bytes() == compiled + hashlib.sha256(compiled).digest()

    # Taken from the store: a valid entry's bytes are what the next compile writes.
    marked = compiled[:-1] + bytes([compiled[-1] ^ 1])
    entry.write_bytes(marked + hashlib.sha256(marked).digest())
    two = make_app(tmp_path / "two", {"pkg/mod.py": source})
    assert _compile(python, two, store) == marked

    # A damaged entry (its SHA-256 does not match) is compiled again and replaced.
    entry.write_bytes(marked + b"\0" * 32)
    three = make_app(tmp_path / "three", {"pkg/mod.py": source})
    assert _compile(python, three, store) == compiled
    assert entry.read_bytes() == compiled + hashlib.sha256(compiled).digest()

    # Another source, another recorded path: other entries.
    four = make_app(tmp_path / "four", {"pkg/mod.py": source + "# more\n"})
    _compile(python, four, store)
    assert len(_entries(store)) == 2


@pytest.mark.slow
def test_a_layer_rebuilt_for_an_added_pin_equals_a_clean_build(tmp_path, runtime_seed):
    """The added-requirement build reuses stored pycs; its slug is byte-identical to a
    cold build of the same requirements in an empty cache."""
    files = {".python-version": "3.12\n", "requirements.txt": "six==1.17.0\n",
             "Procfile": "web: python -m http.server $PORT\n"}
    app = make_app(tmp_path / "app", files)
    cache = seed_runtimes(runtime_seed, tmp_path / "cache")
    compile_app(app, tmp_path / "first.tgz", cache_dir=cache, reporter=Reporter(quiet=True))
    stored = len(_entries(cache / "pyc"))
    assert stored > 0
    (app / "requirements.txt").write_text("six==1.17.0\nidna==3.10\n")
    changed = compile_app(app, tmp_path / "changed.tgz", cache_dir=cache,
                          reporter=Reporter(quiet=True))
    assert len(_entries(cache / "pyc")) > stored  # idna's added, six's taken
    clean_app = make_app(tmp_path / "clean", {**files,
                                              "requirements.txt": "six==1.17.0\nidna==3.10\n"})
    fresh = seed_runtimes(runtime_seed, tmp_path / "fresh")  # no pycs, no layer of six
    clean = compile_app(clean_app, tmp_path / "clean.tgz", cache_dir=fresh,
                        reporter=Reporter(quiet=True))
    assert changed.sha256 == clean.sha256
