"""Canonical marshal streams: the bytes of a pyc independent of the process that wrote it.

``marshal.dumps`` marks an object with FLAG_REF (so a later occurrence can be
written as a back-reference) when the object's reference count is above one
at that moment. The count includes references from anywhere in the process:
a string constant that an earlier compiled module still holds, a frozenset
kept in a temporary list while a set is sorted, an object made immortal. So
the same source compiled after other files can give other bytes (CPython
gh-78274 / bpo-34093, gh-98819; astral-sh/uv#10619; seen here on 3.8, 3.10,
3.12 and 3.13), which made two cold builds of one app differ. Fedora's
add-determinism rewrites pycs the same way.

``canonical_marshal`` rewrites a stream so that it depends on the objects'
values only: equal immutable objects (strings, bytes, numbers, tuples,
frozensets) are written once and referred back to, FLAG_REF marks exactly the
objects referred back to, and references are renumbered. Whether a string is
marked interned depends on the process too (an equal string interned by
earlier work); it is made the compiler's own rule: interned when it is all
ASCII letters, digits and underscores (CPython's ``all_name_chars``). Loading
interns names and such constants anyway, so ``marshal.loads`` gives equal code
from the canonical stream. Code objects (and mutable containers, which pycs
never hold) keep their identity: they are shared only where the stream
already shared them.

Before 3.11 marshal writes a set constant's elements in hash-table order, and
that order depends on the hash seed and on what the process interned before
(see ``_Canonical.sort_sets``): there the elements are sorted by their own
canonical streams. 3.11 and later sort them when writing, and that order is kept.

This module runs inside the slug's interpreter too (3.8 to 3.13), as part of
``relocate.compile_bytecode``'s script: it uses nothing newer than 3.8 and
imports nothing of slugbuild.
"""

import struct
import sys
from collections import defaultdict

# The fields of a code object in the stream, in order: L a 4-byte integer, O an object.
CODE_LAYOUT_3_8 = "LLLLLLOOOOOOOOLO"  # 3.8-3.10: ... nlocals ..., lnotab/linetable
CODE_LAYOUT_3_11 = "LLLLLOOOOOOOOLOO"  # 3.11-3.13: ... qualname ..., exceptiontable
_SINGLETONS = frozenset(b"0NFTS.")  # NULL, None, False, True, StopIteration, Ellipsis
_FIXED_SIZE = {ord("i"): 4, ord("I"): 8, ord("g"): 8, ord("y"): 16}
_SIZED_32 = frozenset(b"stuaA")  # bytes, interned, unicode, ascii, ascii interned
_SIZED_8 = frozenset(b"zZ")  # short ascii (interned)
# A string kind -> (its plain kind, its interned kind).
_STRING_KINDS = {ord(k): (ord(plain), ord(interned))
                 for plain, interned in ("ut", "aA", "zZ") for k in (plain, interned)}
_NAME_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_SEQUENCES = frozenset(b"([<>")  # tuple, list, set, frozenset
_SETS = frozenset(b"<>")  # set, frozenset
_BY_IDENTITY = frozenset(b"c[{<")  # code, list, dict, set
_FLAG_REF = 0x80
_int32 = struct.Struct("<i")


def code_layout(version=None):
    """The code object layout of a CPython version (``sys.version_info`` by default)."""
    version = version or sys.version_info
    return CODE_LAYOUT_3_8 if tuple(version[:2]) < (3, 11) else CODE_LAYOUT_3_11


def canonical_marshal(data, layout=None):
    """``data`` (a marshal stream of format 3 or 4) in canonical form.

    Raises ValueError for a stream it does not understand (the caller keeps
    the original bytes then).
    """
    layout = layout or code_layout()
    try:
        return _Canonical(bytes(data), layout).result()
    except (IndexError, struct.error, RecursionError) as exc:
        raise ValueError(f"not a marshal stream this reads: {exc!r}") from None


def _string_kind(kind, text):
    """The kind a string is written with: interned exactly when it is name-like."""
    plain, interned = _STRING_KINDS[kind]
    return interned if _NAME_CHARS.issuperset(text) else plain


class _Canonical:
    def __init__(self, data, layout):
        self.data = data
        self.layout = layout
        # Before 3.11 marshal writes a set in its hash table's order, which the
        # hash seed decides, and also what the process interned before: the
        # compiler rebuilds a set constant when interning swaps one of its
        # strings for an equal one already interned, and a rebuilt table can
        # iterate in another order. 3.11 and later write sets sorted (by each
        # element's marshal dump), so their order is kept as it is.
        self.sort_sets = layout == CODE_LAYOUT_3_8
        self.pos = 0
        self.ids = {}  # (kind, parts) -> node id; equal values share one id
        self.nodes = []  # node id -> (kind, parts); parts: bytes or child node ids
        self.refs = []  # the stream's own reference index -> node id (None: not read yet)

    def result(self):
        root = self._read()
        if self.pos != len(self.data):
            raise ValueError("bytes after the marshalled object")
        return self._write(root, self._occurrences(root))

    def _node(self, kind, parts):
        key = (kind, parts) if kind not in _BY_IDENTITY else (kind, parts, len(self.nodes))
        found = self.ids.get(key)
        if found is None:
            found = self.ids[key] = len(self.nodes)
            self.nodes.append((kind, parts))
        return found

    def _take(self, size):
        start = self.pos
        self.pos += size
        if self.pos > len(self.data):
            raise ValueError("truncated stream")
        return self.data[start:self.pos]

    def _read(self):
        data = self.data
        code = data[self.pos]
        self.pos += 1
        kind = code & ~_FLAG_REF
        if kind in _SINGLETONS:
            return self._node(kind, ())
        if kind == ord("r"):
            index = _int32.unpack(self._take(4))[0]
            if not 0 <= index < len(self.refs) or self.refs[index] is None:
                raise ValueError("a reference to an object not read yet")
            return self.refs[index]
        slot = None
        if code & _FLAG_REF:  # numbered in the order the objects start, as marshal does
            slot = len(self.refs)
            self.refs.append(None)
        if kind in _FIXED_SIZE:
            parts = (self._take(_FIXED_SIZE[kind]),)
        elif kind in _SIZED_32:
            size = _int32.unpack_from(data, self.pos)[0]
            parts = (self._take(4 + size),)
            if kind in _STRING_KINDS:
                kind = _string_kind(kind, parts[0][4:])
        elif kind in _SIZED_8 or kind == ord("f"):
            parts = (self._take(1 + data[self.pos]),)
            if kind in _STRING_KINDS:
                kind = _string_kind(kind, parts[0][1:])
        elif kind == ord("l"):
            digits = abs(_int32.unpack_from(data, self.pos)[0])
            parts = (self._take(4 + 2 * digits),)
        elif kind == ord("x"):
            real = data[self.pos]
            parts = (self._take(2 + real + data[self.pos + 1 + real]),)
        elif kind in _SEQUENCES:
            count = _int32.unpack_from(data, self.pos)[0]
            size = self._take(4)
            items = [self._read() for _ in range(count)]
            if kind in _SETS and self.sort_sets:
                items.sort(key=self._sort_key)
            parts = (size, *items)
        elif kind == ord(")"):
            count = data[self.pos]
            parts = (self._take(1), *[self._read() for _ in range(count)])
        elif kind == ord("{"):
            items = []
            while data[self.pos] != ord("0"):
                items.append(self._read())
                items.append(self._read())
            parts = (*items, self._take(1))
        elif kind == ord("c"):
            parts = tuple(self._take(4) if step == "L" else self._read()
                          for step in self.layout)
        else:
            raise ValueError(f"unknown type code {kind!r}")
        found = self._node(kind, parts)
        if slot is not None:
            self.refs[slot] = found
        return found

    def _sort_key(self, node):
        """What a set's element is ordered by: its canonical stream alone."""
        kind, parts = self.nodes[node]
        if not any(type(part) is int for part in parts):  # a string, a number: no children
            return bytes((kind,)) + b"".join(parts)
        return self._write(node, self._occurrences(node, defaultdict(int)))

    def _occurrences(self, root, counts=None):
        """How often each node is met writing the stream (a repeat is not entered).

        ``counts`` is a list over all nodes by default; a set's element, a
        small part of the stream, counts into a dict instead.
        """
        if counts is None:
            counts = [0] * len(self.nodes)
        pending = [root]
        while pending:
            node = pending.pop()
            kind, parts = self.nodes[node]
            if kind in _SINGLETONS:
                continue
            counts[node] += 1
            if counts[node] == 1:
                pending.extend(part for part in parts if type(part) is int)
        return counts

    def _write(self, root, counts):
        out = bytearray()
        numbered = {}
        nodes = self.nodes

        def emit(node):
            kind, parts = nodes[node]
            if kind in _SINGLETONS:
                out.append(kind)
                return
            index = numbered.get(node)
            if index is not None:
                out.append(ord("r"))
                out.extend(_int32.pack(index))
                return
            if counts[node] > 1:
                numbered[node] = len(numbered)
                out.append(kind | _FLAG_REF)
            else:
                out.append(kind)
            for part in parts:
                if type(part) is int:
                    emit(part)
                else:
                    out.extend(part)

        emit(root)
        return bytes(out)
