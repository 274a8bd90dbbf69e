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
