"""Bytecode: checked-hash pycs, the same bytes every time, reused where valid."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from slugbuild.relocate import compile_bytecode

from .helpers import local_interpreter

SOURCE = 'def member(x):\n    return x in {"alpha", "beta", "gamma", "delta", "epsilon"}\n'


def _pyc(directory: Path, python: Path) -> bytes:
    tag = subprocess.run([python, "-c", "import sys; print(sys.implementation.cache_tag)"],
                         capture_output=True, text=True, check=True).stdout.strip()
    return (directory / "__pycache__" / f"mod.{tag}.pyc").read_bytes()


@pytest.mark.parametrize("version", ["3.8", "3.10", "3.12"])
def test_set_constants_compile_to_the_same_bytes_every_time(tmp_path, version):
    # Before 3.11 marshal wrote sets in hash order, which PYTHONHASHSEED decides.
    python = local_interpreter(version)
    seen = set()
    for attempt in range(3):
        directory = tmp_path / str(attempt)
        directory.mkdir()
        (directory / "mod.py").write_text(SOURCE)
        compile_bytecode(python, directory, "/app/x", {"PATH": os.environ["PATH"]})
        data = _pyc(directory, python)
        assert data[4:8] == (3).to_bytes(4, "little")  # checked hash
        seen.add(data)
    assert len(seen) == 1


def _run(python: Path, code: str, *args: str) -> str:
    return subprocess.run([python, "-c", code, *args], capture_output=True, text=True,
                          check=True).stdout.strip()


CHECK = """
import marshal, sys
data = open(sys.argv[1], "rb").read()
code = marshal.loads(data[16:])
fresh = compile(open(sys.argv[2], "rb").read(), sys.argv[3], "exec", dont_inherit=True)
print(code == fresh, "reused" in code.co_consts, code.co_filename)
"""

# The pyc a runtime's installation wrote for mod.py, made recognisable: its code
# says MARKER = 'reused', its header matches mod.py's mtime and size.
MARKED_PYC = """
import importlib.util, marshal, os, sys
source, pyc = sys.argv[1:3]
st = os.stat(source)
code = compile("MARKER = 'reused'\\n", "/somewhere/else/mod.py", "exec")
os.makedirs(os.path.dirname(pyc), exist_ok=True)
with open(pyc, "wb") as handle:
    handle.write(importlib.util.MAGIC_NUMBER + bytes(4)
                 + (int(st.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little")
                 + (st.st_size & 0xFFFFFFFF).to_bytes(4, "little") + marshal.dumps(code))
"""


@pytest.mark.parametrize("stale", [False, True])
def test_a_copied_runtimes_pycs_are_reused_only_when_they_match(tmp_path, stale):
    python = local_interpreter("3.12")
    original = tmp_path / "original"
    original.mkdir()
    (original / "mod.py").write_text(SOURCE)
    # Written by the 3.12 interpreter: the pytest process may be another version.
    _run(python, MARKED_PYC, str(original / "mod.py"),
         str(original / "__pycache__" / "mod.cpython-312.pyc"))
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(original / "mod.py", copy / "mod.py")
    if stale:  # the copy was rewritten after copying: its pyc must not be reused
        (copy / "mod.py").write_text(SOURCE.replace("alpha", "omega"))
    compile_bytecode(python, copy, "/app/lib", {"PATH": os.environ["PATH"]},
                     reuse_from=original)
    data = _pyc(copy, python)
    assert data[4:8] == (3).to_bytes(4, "little")  # checked hash, of the copy's bytes
    expected_hash = _run(python, "import importlib.util, sys; print(importlib.util.source_hash("
                                 "open(sys.argv[1], 'rb').read()).hex())", str(copy / "mod.py"))
    assert data[8:16].hex() == expected_hash
    fresh, reused, filename = _run(python, CHECK, str(copy / "__pycache__/mod.cpython-312.pyc"),
                                   str(copy / "mod.py"), "/app/lib/mod.py").split()
    assert reused == ("False" if stale else "True")
    assert fresh == ("True" if stale else "False")
    assert filename == "/app/lib/mod.py"  # not where the runtime was compiled
    assert b"/somewhere/else" not in data


def test_unreadable_sources_do_not_stop_the_reuse(tmp_path):
    python = local_interpreter("3.12")
    original, copy = tmp_path / "original", tmp_path / "copy"
    original.mkdir()
    copy.mkdir()
    (copy / "gone.py").symlink_to(tmp_path / "missing.py")
    (copy / "mod.py").write_text(SOURCE)
    compile_bytecode(python, copy, "/app/lib", {"PATH": os.environ["PATH"]},
                     reuse_from=original)
    assert _pyc(copy, python)[4:8] == (3).to_bytes(4, "little")


# What py_compile (through compileall) writes for a file, canonicalised: the pycs the
# compile script wrote before it compiled sources itself.
PY_COMPILE_THEN_CANONICAL = """
import compileall, importlib.util, os, py_compile, sys
sys.path.insert(0, sys.argv[3])
from marshal_canon import canonical_marshal
path, recorded_dir = sys.argv[1:3]
compileall.compile_file(path, ddir=recorded_dir, force=True, quiet=2,
                        invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
pyc = importlib.util.cache_from_source(path)
data = open(pyc, "rb").read()
sys.stdout.write((data[:16] + canonical_marshal(data[16:])).hex() + " %o" % os.stat(pyc).st_mode)
"""


def test_each_pyc_is_what_py_compile_writes_canonicalised_and_never_written_through_a_link(
        tmp_path):
    """The compile script compiles the source it read and writes each pyc once: the
    same bytes and mode as py_compile's pyc canonicalised, a pyc that was a hard link
    (to an installer's cache, say) replaced rather than written through, and a file
    compile() refuses left without a pyc, as compileall leaves it."""
    python = local_interpreter("3.12")
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "mod.py").write_text(SOURCE)
    (package / "tool.py").write_text("print('run me')\n")
    (package / "tool.py").chmod(0o755)
    (package / "broken.py").write_text("def broken(:\n")
    tag = _run(python, "import sys; print(sys.implementation.cache_tag)")
    cache = package / "__pycache__"
    cache.mkdir()
    elsewhere = tmp_path / "installer-cache.pyc"
    elsewhere.write_bytes(b"an installer's own file")
    os.link(elsewhere, cache / f"mod.{tag}.pyc")
    compile_bytecode(python, package, "/app/pkg", {"PATH": os.environ["PATH"]})
    assert elsewhere.read_bytes() == b"an installer's own file"
    assert not (cache / f"broken.{tag}.pyc").exists()
    canon_dir = Path(__file__).parents[1] / "src" / "slugbuild"
    for name in ("mod", "tool"):
        reference = tmp_path / "reference" / f"{name}.py"
        reference.parent.mkdir(exist_ok=True)
        shutil.copy2(package / f"{name}.py", reference)
        expected_hex, expected_mode = _run(python, PY_COMPILE_THEN_CANONICAL, str(reference),
                                           "/app/pkg", str(canon_dir)).split()
        pyc = cache / f"{name}.{tag}.pyc"
        assert pyc.read_bytes().hex() == expected_hex
        assert f"{pyc.stat().st_mode:o}" == expected_mode
