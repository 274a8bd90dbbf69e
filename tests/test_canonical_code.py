"""The canonical pyc writer (marshal_canon.canonical_code): byte for byte what the
canonicaliser makes of marshal's stream, on real modules of every CPython 3.8-3.13.

A slug's pycs are written by ``canonical_code`` straight from the code object; the
golden slugs hold its bytes. Each version's check runs in that interpreter over the
standard library (a sample in the quick tests, all of it in the slow ones) and a
module with every kind of constant and scope, each module both as compiled and as
the compile script's reuse path makes it (loaded from a stream, its file renamed).
"""

from __future__ import annotations

import gc
import marshal
import subprocess
from pathlib import Path

import pytest

from slugbuild.marshal_canon import Unsupported, canonical_code, canonical_marshal

from .helpers import local_interpreter

MARSHAL_CANON = Path(__import__("slugbuild").__file__).with_name("marshal_canon.py")

# Constants and scopes of every kind a compiler writes into a pyc.
EVERY_KIND = '''
import os
BIG, NEG = 2 ** 70, -(2 ** 40)
EDGE = (2 ** 31 - 1, -(2 ** 31), 2 ** 31, -(2 ** 31) - 1, 0, -1, 2 ** 15, -(2 ** 45))
FLOATS = (0.5, -0.0, 0.0, 1e300, float("inf"), 2j, -1.5 + 0j, 1e-310)
TEXT = ("", "é", "\\udcff", "x" * 255, "y" * 256, "a b" * 200, "name_" * 60, "日本", "a-b")
RAW = (b"", b"\\x00", b"abc" * 100, bytes(range(256)))
SINGLE = (None, True, False, ..., 1, 1.0, "1", b"1", (), ((),))
LONG_TUPLE = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10) * 30
x = [a for a in range(3)]
y = {k: v for k, v in os.environ.items()}


def member(verb, code):
    if verb in {"GET", "POST", "x-y", "", "é"}:
        return code in {200, 2 ** 70, -1, 0.5, None, b"a"}
    return (verb, code) in ((1, "a"), ("b", (2, 3)))


class Outer:
    z = [b for b in range(3)]

    def method(self, p, *args, q=1, **kw):
        def inner():
            nonlocal p
            p = [p for _ in args]
            return p, __class__, q
        return inner, [lambda: w for w in kw]

    async def coroutine(self, items):
        async with items as held:
            return [await held async for held in items]


def outer(a, b, /, c):
    def middle():
        def innermost():
            return a, b
        return innermost, c
    try:
        return middle
    except ValueError:
        raise
    finally:
        del a
'''

# Run by the interpreter under test after marshal_canon's source: argv = every
# how-many-th module of the standard library to take (1: all), then extra files.
# Prints "checked unsupported" counts, or the first modules that differ.
CHECK = r'''
import marshal, os, sys
sys.setrecursionlimit(20000)
step, extra = int(sys.argv[1]), sys.argv[2:]
code_type = type(compile("", "", "exec"))

def retarget(code, filename):
    consts = tuple(retarget(c, filename) if isinstance(c, code_type) else c
                   for c in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)

stdlib = os.path.dirname(os.__file__)
paths = []
for dirpath, dirnames, filenames in os.walk(stdlib):
    dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "__pycache__"))
    paths += [os.path.join(dirpath, n) for n in sorted(filenames) if n.endswith(".py")]
paths = paths[::step] + extra
checked = unsupported = 0
differ = []
for path in paths:
    try:
        with open(path, "rb") as handle:
            code = compile(handle.read(), path, "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        continue  # the standard library's tests hold files that do not compile
    reused = retarget(marshal.loads(marshal.dumps(code)), "/app/elsewhere.py")
    for made in (code, reused):
        expected = canonical_marshal(marshal.dumps(made))
        try:
            written = canonical_code(made)
        except Unsupported:
            unsupported += 1
            continue
        checked += 1
        if written != expected:
            differ.append(path)
print(checked, unsupported, *differ[:5])
'''


def _check(version: str, step: int, tmp_path: Path) -> None:
    python = local_interpreter(version)
    module = tmp_path / "every_kind.py"
    module.write_text(EVERY_KIND, encoding="utf-8")
    script = MARSHAL_CANON.read_text() + CHECK
    out = subprocess.run([python, "-W", "ignore", "-c", script, str(step), str(module)],
                         capture_output=True, text=True, check=True).stdout.split()
    checked, unsupported, differ = int(out[0]), int(out[1]), out[2:]
    assert differ == []
    # The writer does the work, not the fallback: set constants after 3.10 (about
    # one module in ten), and sets of tuples before (two modules of a standard
    # library), go there.
    assert checked > 5 * unsupported


@pytest.mark.parametrize("version", [
    "3.8", *(pytest.param(v, marks=pytest.mark.slow) for v in ("3.9", "3.10", "3.11")),
    "3.12", pytest.param("3.13", marks=pytest.mark.slow)])
def test_the_writer_gives_the_canonicalisers_bytes_on_each_stdlib(tmp_path, version):
    # Every 25th module (~180, tests included); the whole of every version's
    # standard library was checked when the writer was made (docs/benchmarks.md).
    _check(version, 25, tmp_path)


def test_what_the_writer_does_not_know_is_refused_for_the_fallback():
    with pytest.raises(Unsupported):
        canonical_code("not code")
    code = compile("x = 1\n", "m.py", "exec")
    odd = code.replace(co_consts=(*code.co_consts, bytearray(b"mutable")))
    with pytest.raises(Unsupported):
        canonical_code(odd)
    with pytest.raises(Unsupported):  # a set of containers, before 3.11
        canonical_code(code.replace(co_consts=(frozenset({(1, 2)}),)), (3, 10))
    assert issubclass(Unsupported, ValueError)


SETS = '''
def first(verb):
    return verb in {"GET", "POST", "x-y", "a b", "", 2 ** 70, 7, -0.5, None, b"raw"}

def second(verb):  # the same set: the compiler shares one object, marshal refers back
    return verb in {"GET", "POST", "x-y", "a b", "", 2 ** 70, 7, -0.5, None, b"raw"}

def third(name):
    return name in {"x-y", "only-here", "a b"} or name in {(1, 2)}
'''


@pytest.mark.parametrize("version", ["3.11", "3.12", pytest.param("3.13", marks=pytest.mark.slow)])
def test_set_constants_after_3_10_are_written_in_marshals_order(tmp_path, version):
    """From 3.11 marshal sorts a set by each element's own dump, whose FLAG_REF
    follows reference counts; the writer asks marshal for that order, so a set of
    leaves no longer sends its module to the fallback (a set of tuples still does)."""
    python = local_interpreter(version)
    script = MARSHAL_CANON.read_text() + r'''
import marshal, sys
source = sys.argv[1]
code = compile(source, "sets.py", "exec")
expected = canonical_marshal(marshal.dumps(code))
print(canonical_code(code) == expected)
leaves_only = compile(source.split("def third")[0], "sets.py", "exec")
expected = canonical_marshal(marshal.dumps(leaves_only))
print(canonical_code(leaves_only) == expected)
'''
    run = subprocess.run([python, "-c", script + "\n", SETS], capture_output=True, text=True)
    assert run.returncode != 0 and "Unsupported: a set of containers" in run.stderr
    script = script.replace("print(canonical_code(code) == expected)\n", "")
    out = subprocess.run([python, "-c", script, SETS], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["True"]


def test_the_writer_leaves_no_reference_cycles_behind():
    """The compile script runs with the cyclic collector off: the writer's garbage,
    on success and on a refusal, must go by reference counting alone."""
    # Without set constants: the interpreter running the tests may be 3.11 or later.
    code = compile("def f(a, b=('x', 2 ** 70, -0.0)):\n    return [lambda: a for _ in b]\n",
                   "m.py", "exec")
    odd = code.replace(co_consts=(*code.co_consts, bytearray(b"x")))
    gc.collect()
    gc.disable()
    try:
        for _ in range(3):
            assert canonical_code(code) == canonical_marshal(marshal.dumps(code))
            with pytest.raises(Unsupported):
                canonical_code(odd)
        assert gc.collect() == 0
    finally:
        gc.enable()
