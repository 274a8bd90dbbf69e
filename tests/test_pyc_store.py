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
    # The entry is the layer's pyc itself (a hard link), named with its SHA-256.
    assert entry.read_bytes() == compiled
    assert entry.name.endswith("-" + hashlib.sha256(compiled).hexdigest())
    assert entry.samefile(next(one.glob("pkg/__pycache__/mod.*.pyc")))

    # Taken from the store: a valid entry's bytes are what the next compile writes.
    marked = compiled[:-1] + bytes([compiled[-1] ^ 1])
    entry.unlink()
    entry = entry.with_name(f"{entry.name[:62]}-{hashlib.sha256(marked).hexdigest()}")
    entry.write_bytes(marked)
    entry.chmod(0o644)
    two = make_app(tmp_path / "two", {"pkg/mod.py": source})
    assert _compile(python, two, store) == marked

    # A damaged entry (its SHA-256 is not the one its name holds: written through a
    # layer's pyc, say) is compiled again and replaced.
    entry.unlink()
    entry = entry.with_name(f"{entry.name[:62]}-{hashlib.sha256(compiled).hexdigest()}")
    entry.write_bytes(marked)
    three = make_app(tmp_path / "three", {"pkg/mod.py": source})
    assert _compile(python, three, store) == compiled
    assert entry.read_bytes() == compiled

    # Another source, another recorded path: other entries.
    four = make_app(tmp_path / "four", {"pkg/mod.py": source + "# more\n"})
    _compile(python, four, store)
    assert len(_entries(store)) == 2


def test_a_write_through_a_layers_pyc_never_reaches_another_layer(tmp_path):
    """A store entry is a hard link to the pyc of the layer that compiled it. A write
    through that pyc in place (a hook editing a file of a build directory, which links
    the layer's) changes the entry's bytes but not the SHA-256 its name holds: the next
    compile refuses the entry and compiles again. A layer that took the pyc from the
    store has a file of its own, which the write never reaches."""
    python = local_interpreter("3.12")
    store = tmp_path / "store"
    source = "VALUE = 41\n"
    one = make_app(tmp_path / "one", {"pkg/mod.py": source})
    clean = _compile(python, one, store)
    two = make_app(tmp_path / "two", {"pkg/mod.py": source})
    assert _compile(python, two, store) == clean  # taken from the store
    (entry,) = _entries(store)
    pyc_one = next(one.glob("pkg/__pycache__/mod.*.pyc"))
    pyc_two = next(two.glob("pkg/__pycache__/mod.*.pyc"))
    assert entry.samefile(pyc_one) and not pyc_two.samefile(pyc_one)

    with pyc_one.open("r+b") as handle:  # in place, through the link
        handle.seek(len(clean) - 2)
        handle.write(b"\xff\xff")
    assert entry.read_bytes() != clean  # the entry is that very file
    assert pyc_two.read_bytes() == clean
    three = make_app(tmp_path / "three", {"pkg/mod.py": source})
    assert _compile(python, three, store) == clean
    pyc_three = next(three.glob("pkg/__pycache__/mod.*.pyc"))
    (entry,) = _entries(store)  # replaced by the clean one, the new layer's pyc
    assert entry.read_bytes() == clean and entry.samefile(pyc_three)
    assert not pyc_three.samefile(pyc_one)


def test_a_stored_pyc_is_written_as_a_compiled_one(tmp_path):
    """Taken from the store, a pyc gets the mode a compile gives it (the source's, less
    execute bits) and replaces a pyc that is a hard link (to an installer's cache, say)
    instead of writing through it: whether the store had it does not show."""
    import os

    python = local_interpreter("3.12")
    store = tmp_path / "store"
    source = "VALUE = 1\n"
    modes = {}
    for name in ("first", "second"):
        app = make_app(tmp_path / name, {"pkg/mod.py": source})
        (app / "pkg" / "mod.py").chmod(0o600)
        if name == "second":  # the store holds it now
            tag = next((tmp_path / "first").glob("pkg/__pycache__/mod.*.pyc")).name
            elsewhere = tmp_path / "installer-cache.pyc"
            elsewhere.write_bytes(b"an installer's own file")
            (app / "pkg" / "__pycache__").mkdir()
            os.link(elsewhere, app / "pkg" / "__pycache__" / tag)
        data = _compile(python, app, store)
        modes[name] = (data, next(app.glob("pkg/__pycache__/mod.*.pyc")).stat().st_mode)
    assert modes["first"] == modes["second"]
    assert modes["second"][1] & 0o777 == 0o600
    assert elsewhere.read_bytes() == b"an installer's own file"


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
