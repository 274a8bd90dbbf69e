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
imports nothing of slugbuild. Its source runs after other lines (so no
``from __future__`` import) and on 3.8: a signature's annotation that needs 3.9
or later is quoted. A node's parts are raw bytes of the stream or child node ids.
"""

import collections
import marshal
import struct
import sys
from collections import defaultdict
from typing import Any

# The fields of a code object in the stream, in order: L a 4-byte integer, O an object.
CODE_LAYOUT_3_8 = "LLLLLLOOOOOOOOLO"  # 3.8-3.10: ... nlocals ..., lnotab/linetable
CODE_LAYOUT_3_11 = "LLLLLOOOOOOOOLOO"  # 3.11-3.13: ... qualname ..., exceptiontable
_SINGLETONS = frozenset(b"0NFTS.")  # NULL, None, False, True, StopIteration, Ellipsis
_FIXED_SIZE = {ord("i"): 4, ord("I"): 8, ord("g"): 8, ord("y"): 16}
_SIZED_32 = frozenset(b"stuaA")  # bytes, interned, unicode, ascii, ascii interned
_SIZED_8 = frozenset(b"zZ")  # short ascii (interned)
# A string kind -> (its plain kind, its interned kind).
_STRING_KINDS = {ord(k): (ord(plain), ord(interned))
                 for plain, interned in (("u", "t"), ("a", "A"), ("z", "Z"))
                 for k in (plain, interned)}
_NAME_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_SEQUENCES = frozenset(b"([<>")  # tuple, list, set, frozenset
_SETS = frozenset(b"<>")  # set, frozenset
_BY_IDENTITY = frozenset(b"c[{<")  # code, list, dict, set
_FLAG_REF = 0x80
# Counter.update's counting loop, in C: adds one per element to a dict.
_count_elements = collections._count_elements  # type: ignore[attr-defined]
_int32 = struct.Struct("<i")


def code_layout(version: "tuple[int, ...] | None" = None) -> str:
    """The code object layout of a CPython version (``sys.version_info`` by default)."""
    major_minor = tuple(version[:2]) if version else tuple(sys.version_info[:2])
    return CODE_LAYOUT_3_8 if major_minor < (3, 11) else CODE_LAYOUT_3_11


def canonical_marshal(data: bytes, layout: "str | None" = None) -> bytes:
    """``data`` (a marshal stream of format 3 or 4) in canonical form.

    Raises ValueError for a stream it does not understand (the caller keeps
    the original bytes then).
    """
    layout = layout or code_layout()
    try:
        return _Canonical(bytes(data), layout).result()
    except (IndexError, struct.error, RecursionError) as exc:
        raise ValueError(f"not a marshal stream this reads: {exc!r}") from None


class _Canonical:
    """One stream read into a graph of value-keyed nodes, then written back.

    The hot paths (``_read``, ``_write``) keep what they use in local names and
    test the common type codes first: every pyc of a build goes through them.
    """

    def __init__(self, data: bytes, layout: str) -> None:
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
        # (kind, parts) -> node id; equal values share one id
        self.ids: dict[tuple[object, ...], int] = {}
        # node id -> (kind, parts); parts: bytes or child node ids
        self.nodes: list[tuple[int, tuple[bytes | int, ...]]] = []
        # the stream's own reference index -> node id (None: not read yet)
        self.refs: list[int | None] = []

    def result(self) -> bytes:
        root = self._read_all()
        # Every node was read under the root, so each is entered once writing the
        # stream: a node is met once per place its (distinct) parents name it.
        counts = [0] * len(self.nodes)
        counts[root] = 1
        for _, parts in self.nodes:
            for part in parts:
                if type(part) is int:
                    counts[part] += 1
        return self._write(root, counts)

    def _read_all(self) -> int:
        """Read the stream into nodes; the root's id. One closure with the state in
        local cells: this runs once per object of every pyc."""
        data, layout, sort_sets = self.data, self.layout, self.sort_sets
        size = len(data)
        ids, nodes, refs = self.ids, self.nodes, self.refs
        get_id, add_node, add_ref = ids.get, nodes.append, refs.append
        unpack_from = _int32.unpack_from
        singletons, name_chars = _SINGLETONS, _NAME_CHARS
        sized_8, sized_32, string_kinds = _SIZED_8, _SIZED_32, _STRING_KINDS
        by_identity = _BY_IDENTITY
        pos = 0

        def read() -> int:
            nonlocal pos
            code = data[pos]
            kind = code & 0x7F
            if kind == 0x72:  # "r": a reference back
                index: int = unpack_from(data, pos + 1)[0]
                pos += 5
                referred = refs[index] if 0 <= index < len(refs) else None
                if referred is None:
                    raise ValueError("a reference to an object not read yet")
                return referred
            pos += 1
            parts: tuple[bytes | int, ...]
            if kind in singletons:
                key: tuple[object, ...] = (kind, ())
                found = get_id(key)
                if found is None:
                    found = ids[key] = len(nodes)
                    add_node((kind, ()))
                return found
            slot = None
            if code & 0x80:  # FLAG_REF: numbered in the order the objects start
                slot = len(refs)
                add_ref(None)
            if kind in sized_8 or kind == 0x66:  # short strings, "f" (an old float)
                end = pos + 1 + data[pos]
                if end > size:
                    raise ValueError("truncated stream")
                raw = data[pos:end]
                pos = end
                if kind != 0x66:
                    kinds = string_kinds[kind]
                    kind = kinds[1] if name_chars.issuperset(raw[1:]) else kinds[0]
                parts = (raw,)
            elif kind == 0x29:  # ")": a small tuple
                count = data[pos]
                pos += 1
                members: list[bytes | int] = [data[pos - 1:pos]]
                for _ in range(count):
                    child = data[pos]
                    if child == 0x72:  # a reference back, read here without a call
                        index = unpack_from(data, pos + 1)[0]
                        referred = refs[index] if 0 <= index < len(refs) else None
                        if referred is None:
                            raise ValueError("a reference to an object not read yet")
                        pos += 5
                        members.append(referred)
                    elif child == 0x7A or child == 0x5A:  # a short string, not referred to
                        end = pos + 2 + data[pos + 1]
                        if end > size:
                            raise ValueError("truncated stream")
                        raw = data[pos + 1:end]
                        pos = end
                        child = 0x5A if name_chars.issuperset(raw[1:]) else 0x7A
                        leaf = (child, (raw,))
                        found = get_id(leaf)
                        if found is None:
                            found = ids[leaf] = len(nodes)
                            add_node(leaf)
                        members.append(found)
                    else:
                        members.append(read())
                parts = tuple(members)
            elif kind in sized_32:
                end = pos + 4 + unpack_from(data, pos)[0]
                if end > size or end < pos + 4:
                    raise ValueError("truncated stream")
                raw = data[pos:end]
                pos = end
                if kind != 0x73:  # not bytes: a string
                    kinds = string_kinds[kind]
                    kind = kinds[1] if name_chars.issuperset(raw[4:]) else kinds[0]
                parts = (raw,)
            elif kind == 0x63:  # "c": a code object
                fields: list[bytes | int] = []
                for step in layout:
                    if step == "L":
                        pos += 4
                        fields.append(data[pos - 4:pos])
                    else:
                        fields.append(read())
                if pos > size:
                    raise ValueError("truncated stream")
                parts = tuple(fields)
            elif kind in _FIXED_SIZE:
                end = pos + _FIXED_SIZE[kind]
                if end > size:
                    raise ValueError("truncated stream")
                parts = (data[pos:end],)
                pos = end
            elif kind in _SEQUENCES:
                count = unpack_from(data, pos)[0]
                pos += 4
                head = data[pos - 4:pos]
                elements = [read() for _ in range(count)]
                if kind in _SETS and sort_sets:
                    elements.sort(key=self._sort_key)
                parts = (head, *elements)
            elif kind == 0x6C:  # "l": a long integer
                end = pos + 4 + 2 * abs(unpack_from(data, pos)[0])
                if end > size:
                    raise ValueError("truncated stream")
                parts = (data[pos:end],)
                pos = end
            elif kind == 0x78:  # "x": a complex number as two strings
                real = data[pos]
                end = pos + 2 + real + data[pos + 1 + real]
                if end > size:
                    raise ValueError("truncated stream")
                parts = (data[pos:end],)
                pos = end
            elif kind == 0x7B:  # "{": a dict
                items: list[bytes | int] = []
                while data[pos] != 0x30:  # "0" ends it
                    items.append(read())
                    items.append(read())
                pos += 1
                items.append(b"0")
                parts = tuple(items)
            else:
                raise ValueError(f"unknown type code {kind!r}")
            key = (kind, parts) if kind not in by_identity else (kind, parts, len(nodes))
            found = get_id(key)
            if found is None:
                found = ids[key] = len(nodes)
                add_node((kind, parts))
            if slot is not None:
                refs[slot] = found
            return found

        try:
            root = read()
        finally:
            # It names itself: a cycle holding every node, left to the GC otherwise.
            read = None  # type: ignore[assignment]
        if pos != size:
            raise ValueError("bytes after the marshalled object" if pos < size
                             else "truncated stream")
        return root

    def _sort_key(self, node: int) -> bytes:
        """What a set's element is ordered by: its canonical stream alone."""
        kind, parts = self.nodes[node]
        leaves = [part for part in parts if isinstance(part, bytes)]
        if len(leaves) == len(parts):  # a string, a number: no children
            return bytes((kind,)) + b"".join(leaves)
        counts: dict[int, int] = defaultdict(int)
        return self._write(node, self._occurrences(node, counts))

    def _occurrences(self, root: int, counts: "dict[int, int]") -> "dict[int, int]":
        """How often each node below ``root`` is met writing it alone (a repeat is
        not entered): a set's element, a small part of the stream."""
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

    def _write(self, root: int, counts: "list[int] | dict[int, int]") -> bytes:
        out = bytearray()
        append, extend = out.append, out.extend
        numbered: dict[int, int] = {}
        nodes = self.nodes
        pack_index = _int32.pack
        singletons = _SINGLETONS

        def emit(node: int) -> None:
            kind, parts = nodes[node]
            if kind in _SINGLETONS:
                append(kind)
                return
            index = numbered.get(node)
            if index is not None:
                append(0x72)  # "r"
                extend(pack_index(index))
                return
            if counts[node] > 1:
                numbered[node] = len(numbered)
                append(kind | _FLAG_REF)
            else:
                append(kind)
            for part in parts:
                if isinstance(part, bytes):
                    extend(part)
                    continue
                # A leaf, a singleton or a repeat is written here, without a call.
                child_kind, child_parts = nodes[part]
                if child_kind in singletons:
                    append(child_kind)
                    continue
                index = numbered.get(part)
                if index is not None:
                    append(0x72)  # "r"
                    extend(pack_index(index))
                elif len(child_parts) == 1 and isinstance(child_parts[0], bytes):
                    if counts[part] > 1:
                        numbered[part] = len(numbered)
                        append(child_kind | _FLAG_REF)
                    else:
                        append(child_kind)
                    extend(child_parts[0])
                else:
                    emit(part)

        try:
            emit(root)
        finally:
            emit = None  # type: ignore[assignment]  # it names itself (see _read_all)
        return bytes(out)


class Unsupported(ValueError):
    """A code object ``canonical_code`` does not write itself (the caller takes
    ``canonical_marshal(marshal.dumps(code))`` instead)."""


_CO_OPTIMIZED = 0x1
_FAST_HIDDEN, _FAST_LOCAL, _FAST_CELL, _FAST_FREE = 0x10, 0x20, 0x40, 0x80
_pack_double = struct.Struct("<d").pack
_pack_complex = struct.Struct("<dd").pack
_pack_digit = struct.Struct("<H").pack


def _long_raw(value: int) -> bytes:
    """An integer outside 32 bits as marshal writes it: its 15-bit digits."""
    magnitude, digits = abs(value), []
    while magnitude:
        digits.append(_pack_digit(magnitude & 0x7FFF))
        magnitude >>= 15
    return _int32.pack(len(digits) if value > 0 else -len(digits)) + b"".join(digits)


_STRING_LEAVES: "dict[str, tuple[bytes, bytes]]" = {}  # a string -> its leaf, plain and FLAG_REF'd


def _string_leaf(text: str) -> "tuple[bytes, bytes]":
    """A string's canonical leaf (kind byte and raw bytes), and its FLAG_REF form:
    a short one kept for the life of the process (a worker's modules share most of
    their names; a docstring is met once, and kept it would only grow the worker)."""
    found = _string_leaf_unkept(text)
    if len(text) < 64:
        _STRING_LEAVES[text] = found
    return found


def _string_leaf_unkept(text: str) -> "tuple[bytes, bytes]":
    """``_string_leaf`` without keeping the string (a reference marshal would count)."""
    if text.isascii():
        raw = text.encode("ascii")
        size = len(raw)
        named = _NAME_CHARS.issuperset(raw)
        if size < 256:
            kind = 0x5A if named else 0x7A  # "Z", "z"
            raw = bytes((size,)) + raw
        else:
            kind = 0x41 if named else 0x61  # "A", "a"
            raw = _int32.pack(size) + raw
    else:
        raw = text.encode("utf-8", "surrogatepass")
        kind = 0x75  # "u"
        raw = _int32.pack(len(raw)) + raw
    return bytes((kind,)) + raw, bytes((kind | _FLAG_REF,)) + raw


def canonical_code(code: object, version: "tuple[int, ...] | None" = None) -> bytes:
    """``canonical_marshal(marshal.dumps(code))``, written straight from the code
    object (no stream written and read back): the same bytes, faster.

    ``version`` is the running interpreter's (the only one whose code objects
    this sees). Raises ``Unsupported`` for what it does not write itself: a
    constant of a type it does not know, a set of containers. A set after 3.10
    takes the order marshal gives it (which depends on reference counts at the
    time of writing, and which the canonical form keeps) from marshal itself.
    """
    return _write_code(code, tuple(version or sys.version_info[:2])[:2])


def _write_code(root: object, version: "tuple[int, ...]") -> bytes:
    """The value graph ``_Canonical`` reads from a stream, built from the objects,
    then written as ``_Canonical._write`` writes it.

    Equal immutable values share a node (keyed as there), code objects are
    nodes by identity, a singleton is a one-byte part of its parent. A string's
    node is the string itself; any other node is a number, an index into
    ``nodes``: ``(kind, parts)``, or for a leaf ``(0, (its bytes, FLAG_REF'd))``.
    A node's children are counted once per distinct parent node, as
    ``_Canonical.result`` counts them (the raw bytes among the parts are counted
    too, and never asked for).
    """
    nodes: list[tuple[int, Any]] = []
    add_node = nodes.append
    counts: dict[Any, Any] = {}
    values: dict[object, int] = {}
    values_get = values.get
    seen: dict[int, int] = {}  # id of a code object (or a set, 3.11 on) -> its node
    keep_alive: list[object] = []  # the ids above stay valid while this runs
    legacy = version < (3, 11)
    lnotab = version < (3, 10)
    hidden = _FAST_HIDDEN if version >= (3, 12) else 0
    code_type = type(root)
    pack = _int32.pack
    singleton_parts: dict[Any, bytes] = {None: b"N", True: b"T", False: b"F", Ellipsis: b"."}

    def leaf(kind: int, raw: bytes) -> int:
        key = (kind, raw)
        found = values_get(key)
        if found is None:
            found = values[key] = len(nodes)
            add_node((0, (bytes((kind,)) + raw, bytes((kind | _FLAG_REF,)) + raw)))
        return found

    def container(key: object, kind: int, parts: "list[object]") -> int:
        found = values[key] = len(nodes)
        add_node((kind, parts))
        _count_elements(counts, parts)
        return found

    def value(obj: Any) -> Any:
        kind = type(obj)
        if kind is str:
            return obj
        if kind is tuple:
            return sequence(obj)
        if kind is code_type:
            return code(obj)
        if kind is bytes:
            return leaf(0x73, pack(len(obj)) + obj)
        if kind is int:
            if -0x80000000 <= obj < 0x80000000:
                return leaf(0x69, pack(obj))
            return leaf(0x6C, _long_raw(obj))
        if kind is bool or obj is None or obj is Ellipsis:
            return singleton_parts[obj]
        if kind is float:
            return leaf(0x67, _pack_double(obj))
        if kind is complex:
            return leaf(0x79, _pack_complex(obj.real, obj.imag))
        if kind is frozenset:
            return frozen(obj) if legacy else marshal_ordered(obj)
        raise Unsupported(f"a constant of type {kind.__name__}")

    def sequence(items: Any) -> int:
        size = len(items)
        parts: list[object] = [bytes((size,)) if size < 256 else pack(size)]
        add = parts.append
        for item in items:
            add(item if type(item) is str else value(item))
        kind = 0x29 if size < 256 else 0x28  # ")", "("
        key = (kind, *parts)
        found = values_get(key)
        return found if found is not None else container(key, kind, parts)

    def set_elements(items: Any, string_leaf: Any) -> "dict[bytes, object]":
        # A set's elements, each under its canonical stream (a leaf: sets of
        # containers go to the fallback); ``string_leaf`` writes a string's.
        elements: dict[bytes, object] = {}
        for item in items:
            part = value(item)
            if type(part) is bytes:
                elements[part] = part
            elif type(part) is str:
                elements[(_STRING_LEAVES.get(part) or string_leaf(part))[0]] = part
            elif nodes[part][0]:
                raise Unsupported("a set of containers")
            else:
                elements[nodes[part][1][0]] = part
        return elements

    def set_node(items: Any, ordered: "list[object]") -> int:
        parts: list[object] = [pack(len(items)), *ordered]
        key = (0x3E, *parts)
        found = values_get(key)
        return found if found is not None else container(key, 0x3E, parts)

    def frozen(items: Any) -> int:
        # Before 3.11: ordered by each element's canonical stream, as _Canonical sorts.
        elements = set_elements(items, _string_leaf)
        return set_node(items, [elements[stream] for stream in sorted(elements)])

    def marshal_ordered(items: Any) -> int:
        # 3.11 on: in the order marshal writes it, which the canonical form keeps.
        # That order sorts each element's own dump, whose FLAG_REF depends on the
        # element's reference count: so marshal itself is asked, before this walk
        # holds any element (it holds only what the code holds elsewhere, which
        # already counts), and once per set (marshal writes a repeat as a reference
        # back); no element is kept past the call. A set of containers goes to the
        # fallback.
        found = seen.get(id(items))
        if found is not None:
            return found
        keep_alive.append(items)
        written = _Canonical(marshal.dumps(items), CODE_LAYOUT_3_11)
        _, written_parts = written.nodes[written._read_all()]
        ordered: list[bytes] = []
        for element in written_parts[1:]:
            element_kind, element_parts = written.nodes[element]  # type: ignore[index]
            raw = element_parts[0] if element_parts else b""
            if len(element_parts) > 1 or type(raw) is not bytes:
                raise Unsupported("a set of containers")
            ordered.append(bytes((element_kind,)) + raw)
        by_stream = set_elements(items, _string_leaf_unkept)
        found = set_node(items, [by_stream[stream] for stream in ordered])
        seen[id(items)] = found
        return found

    def code(c: "Any") -> int:
        found = seen.get(id(c))
        if found is not None:
            return found
        keep_alive.append(c)
        parts: list[object]
        if legacy:
            parts = [
                pack(c.co_argcount) + pack(c.co_posonlyargcount) + pack(c.co_kwonlyargcount)
                + pack(c.co_nlocals) + pack(c.co_stacksize) + pack(c.co_flags),
                value(c.co_code), value(c.co_consts), value(c.co_names),
                value(c.co_varnames), value(c.co_freevars), value(c.co_cellvars),
                c.co_filename, c.co_name, pack(c.co_firstlineno),
                value(c.co_lnotab if lnotab else c.co_linetable),
            ]
        else:
            # co_localsplusnames and co_localspluskinds, which Python does not show:
            # the locals, then the cells that are not locals, then the free
            # variables; a local of a module or class body (an inlined
            # comprehension's, 3.12 on) is hidden.
            varnames, cells, frees = c.co_varnames, c.co_cellvars, c.co_freevars
            local = _FAST_LOCAL | (0 if c.co_flags & _CO_OPTIMIZED else hidden)
            if cells:
                cell_set = set(cells)
                kinds = bytearray(local | _FAST_CELL if name in cell_set else local
                                  for name in varnames)
                local_set = set(varnames)
                extra = [name for name in cells if name not in local_set]
                names = varnames + tuple(extra) + frees
                kinds += bytes((_FAST_CELL,)) * len(extra)
            else:
                kinds = bytearray((local,)) * len(varnames)
                names = varnames + frees if frees else varnames
            kinds += bytes((_FAST_FREE,)) * len(frees)
            parts = [
                pack(c.co_argcount) + pack(c.co_posonlyargcount) + pack(c.co_kwonlyargcount)
                + pack(c.co_stacksize) + pack(c.co_flags),
                value(c.co_code), value(c.co_consts), value(c.co_names),
                sequence(names), value(bytes(kinds)),
                c.co_filename, c.co_name, c.co_qualname,
                pack(c.co_firstlineno), value(c.co_linetable), value(c.co_exceptiontable),
            ]
        found = seen[id(c)] = container(("code", id(c)), 0x63, parts)
        return found

    try:
        top = value(root)
    finally:
        # they name each other
        value = sequence = set_elements = code = None  # type: ignore[assignment]
    if type(top) is not int or nodes[top][0] != 0x63:
        raise Unsupported("not a code object")
    counts[top] = 1
    return _write_nodes(top, nodes, counts)


def _write_nodes(root: int, nodes: "list[tuple[int, Any]]", counts: "dict[Any, Any]") -> bytes:
    """The stream of ``_write_code``'s graph: ``_Canonical._write``'s order and numbering.

    A node met more than once is numbered when first written: its entry in
    ``counts`` then becomes the reference back to it (one lookup per part).
    """
    out = bytearray()
    append, extend = out.append, out.extend
    pack_index = _int32.pack
    string_leaf = _STRING_LEAVES.get
    numbered = 0

    def emit(node: int) -> None:
        nonlocal numbered
        kind, parts = nodes[node]
        if counts[node] > 1:
            counts[node] = b"r" + pack_index(numbered)
            numbered += 1
            append(kind | _FLAG_REF)
        else:
            append(kind)
        part: Any
        for part in parts:
            part_type = type(part)
            if part_type is bytes:
                extend(part)
                continue
            seen = counts[part]
            if type(seen) is bytes:  # a reference back
                extend(seen)
                continue
            if part_type is str:
                leaf = string_leaf(part) or _string_leaf(part)
            else:
                child_kind, leaf = nodes[part]
                if child_kind:
                    emit(part)
                    continue
            # A leaf: its bytes, with FLAG_REF where it is met again.
            if seen > 1:
                counts[part] = b"r" + pack_index(numbered)
                numbered += 1
                extend(leaf[1])
            else:
                extend(leaf[0])

    try:
        emit(root)
    finally:
        emit = None  # type: ignore[assignment]  # it names itself
    return bytes(out)
