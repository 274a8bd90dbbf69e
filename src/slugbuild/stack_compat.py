"""What a slug needs from the run image it runs on, and whether a run image has it.

A slug ships its Python runtime and its packages, but their ELF files still load
shared libraries from the machine they run on (libssl, libsqlite3, libffi, libz,
glibc itself). At compile time ``slug_requirements`` lists those libraries (the
``DT_NEEDED`` entries of every ELF file the slug does not satisfy itself) and the
glibc floor (the highest ``GLIBC_x.y`` symbol version any of them needs), as
slug.json's ``stack_requirements``. At image time ``check_run_image`` compares them
with a run image's files, so an image that would fail at boot with "cannot open
shared object file" is refused when it is built.

The ELF reader is a small pure-Python one: it reads only the program headers, the
dynamic segment and the version-needs/definitions tables, which is all this needs.
pyelftools would do the same with a new dependency and more reading (it parses
sections, not segments, and stripped files may lack section headers).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno
import fnmatch
import gzip
import io
import json
import os
import posixpath
import re
import secrets
import shutil
import struct
import tarfile
import tempfile
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from . import errors

ELF_MAGIC = b"\x7fELF"
# e_machine -> the architecture name OCI image configs use (GOARCH spelling).
MACHINES = {3: "386", 8: "mips", 20: "ppc", 21: "ppc64", 22: "s390x", 40: "arm",
            62: "amd64", 183: "arm64", 243: "riscv64", 258: "loong64"}
# Where the dynamic loader looks without RPATH or LD_LIBRARY_PATH, for every
# multiarch triplet Debian and Ubuntu use (an image's own ld.so.conf.d adds more).
MULTIARCH = ("x86_64-linux-gnu", "aarch64-linux-gnu", "i386-linux-gnu", "arm-linux-gnueabihf",
             "powerpc64le-linux-gnu", "s390x-linux-gnu", "riscv64-linux-gnu")
LIBRARY_DIRS = ("/lib", "/usr/lib", "/lib64", "/usr/lib64", "/usr/local/lib",
                *(f"/lib/{triplet}" for triplet in MULTIARCH),
                *(f"/usr/lib/{triplet}" for triplet in MULTIARCH))
_GLIBC_VERSION = re.compile(r"GLIBC_(\d+(?:\.\d+)+)$")
_LOADER_CONFIG = re.compile(r"/etc/ld\.so\.conf(\.d/[^/]+)?")
_SHARED_LIBRARY = re.compile(r"\.so(\.[0-9.]+)?$|-[0-9.]+\.so$")
_LIBRARY_LIMIT = 256 << 20  # larger members are not libraries worth reading whole

PT_LOAD, PT_DYNAMIC, PT_INTERP = 1, 2, 3
DT_NULL, DT_NEEDED, DT_STRTAB, DT_SONAME, DT_RPATH, DT_RUNPATH = 0, 1, 5, 14, 15, 29
DT_VERDEF, DT_VERDEFNUM, DT_VERNEED, DT_VERNEEDNUM = 0x6FFFFFFC, 0x6FFFFFFD, 0x6FFFFFFE, 0x6FFFFFFF
_READ_LIMIT = 1 << 20  # no table this reads is near a MiB in a real file
# What one file may make the reader do at most (a crafted file from a slug, a package or a
# run image must not drive it to gigabytes or minutes): bytes of strings read, and
# version entries walked (real libraries have tens). Offsets past _MAX_OFFSET are refused.
_STRING_BUDGET = 4 << 20
_VERSION_ENTRY_LIMIT = 16384
_MAX_OFFSET = 1 << 48


class NotElf(ValueError):
    """The bytes are not an ELF file this reader understands (or are truncated)."""


@dataclass(frozen=True)
class ElfInfo:
    """The dynamic-linking facts of one ELF file."""

    machine: str
    needed: tuple[str, ...] = ()
    soname: str | None = None
    search_paths: tuple[str, ...] = ()  # RPATH then RUNPATH entries, as written
    interpreter: str | None = None
    version_needs: tuple[str, ...] = ()  # e.g. GLIBC_2.34, OPENSSL_3.0.0
    version_defs: tuple[str, ...] = ()  # what a library provides (libc: GLIBC_2.0...)
    # The versions needed from each library: (soname, (version, ...)), in file order.
    needs_by_library: tuple[tuple[str, tuple[str, ...]], ...] = ()


def read_elf(handle: IO[bytes]) -> ElfInfo:
    """Parse ``handle`` (seekable, positioned anywhere) as an ELF file; anything malformed,
    out of range or over the reader's budgets is NotElf, never another exception."""
    try:
        return _read_elf(handle)
    except (OverflowError, struct.error, IndexError) as exc:
        raise NotElf(f"malformed ELF file: {exc}") from exc


def _read_elf(handle: IO[bytes]) -> ElfInfo:
    handle.seek(0)
    ident = handle.read(64)
    if len(ident) < 52 or ident[:4] != ELF_MAGIC or ident[4] not in (1, 2) \
            or ident[5] not in (1, 2):
        raise NotElf("not an ELF file")
    wide = ident[4] == 2
    order = "<" if ident[5] == 1 else ">"

    def unpack(fmt: str, data: bytes, offset: int = 0) -> tuple[Any, ...]:
        try:
            return struct.unpack_from(order + fmt, data, offset)
        except struct.error as exc:
            raise NotElf(f"truncated ELF file: {exc}") from exc

    def read_at(offset: int, size: int) -> bytes:
        if not 0 <= offset <= _MAX_OFFSET or size < 0 or size > _READ_LIMIT:
            raise NotElf("ELF table out of range")
        handle.seek(offset)
        data = handle.read(size)
        if len(data) < size:
            raise NotElf("truncated ELF file")
        return data

    machine: int = unpack("H", ident, 18)[0]
    if wide:
        phoff, phentsize, phnum = unpack("Q", ident, 32)[0], *unpack("HH", ident, 54)
    else:
        phoff, phentsize, phnum = unpack("I", ident, 28)[0], *unpack("HH", ident, 42)
    segments: list[tuple[int, int, int, int]] = []  # (type, offset, vaddr, filesz)
    table = read_at(phoff, phentsize * phnum) if phnum else b""
    for index in range(phnum):
        base = index * phentsize
        if wide:
            p_type, _, p_offset, p_vaddr, _, p_filesz = unpack("IIQQQQ", table, base)
        else:
            p_type, p_offset, p_vaddr, _, p_filesz = unpack("IIIII", table, base)
        segments.append((p_type, p_offset, p_vaddr, p_filesz))

    def file_offset(vaddr: int) -> int:
        for p_type, p_offset, p_vaddr, p_filesz in segments:
            if p_type == PT_LOAD and p_vaddr <= vaddr < p_vaddr + p_filesz:
                return vaddr - p_vaddr + p_offset
        raise NotElf("address outside every loaded segment")

    arch = MACHINES.get(machine, f"elf-machine-{machine}")
    interpreter = None
    for p_type, p_offset, _, p_filesz in segments:
        if p_type == PT_INTERP:
            interpreter = read_at(p_offset, min(p_filesz, 4096)).split(b"\0")[0].decode(
                "utf-8", "replace")
    dynamic = next(((o, s) for t, o, _, s in segments if t == PT_DYNAMIC), None)
    if dynamic is None:  # static executable, object file, core dump: needs nothing
        return ElfInfo(arch, interpreter=interpreter)
    entry_size = 16 if wide else 8
    data = read_at(dynamic[0], min(dynamic[1], _READ_LIMIT) // entry_size * entry_size)
    entries: list[tuple[int, int]] = []
    for base in range(0, len(data), entry_size):
        tag, value = unpack("qQ" if wide else "iI", data, base)
        if tag == DT_NULL:
            break
        entries.append((tag, value))
    tags: dict[int, int] = {}
    for tag, value in entries:
        tags.setdefault(tag, value)
    if DT_STRTAB not in tags:
        return ElfInfo(arch, interpreter=interpreter)
    strtab = file_offset(tags[DT_STRTAB])

    strings: dict[int, str] = {}
    budget = [_STRING_BUDGET]

    def string(offset: int) -> str:
        if offset in strings:
            return strings[offset]
        if not 0 <= strtab + offset <= _MAX_OFFSET:
            raise NotElf("string out of range")
        handle.seek(strtab + offset)
        raw = handle.read(4096).split(b"\0")[0]
        budget[0] -= len(raw) + 1
        if budget[0] < 0:
            raise NotElf("more string data than any real ELF file has")
        strings[offset] = raw.decode("utf-8", "replace")
        return strings[offset]

    walked = [0]

    def walk() -> None:
        walked[0] += 1
        if walked[0] > _VERSION_ENTRY_LIMIT:
            raise NotElf("more version entries than any real ELF file has")

    needed = tuple(string(v) for t, v in entries if t == DT_NEEDED)
    soname = next((string(v) for t, v in entries if t == DT_SONAME), None)
    paths: list[str] = []
    for kind in (DT_RPATH, DT_RUNPATH):
        for t, v in entries:
            if t == kind:
                paths += [p for p in string(v).split(":") if p]
    version_needs: list[str] = []
    by_library: dict[str, list[str]] = {}
    if DT_VERNEED in tags:
        offset = file_offset(tags[DT_VERNEED])
        for _ in range(min(tags.get(DT_VERNEEDNUM, 0), 4096)):
            walk()
            _, count, library, aux, following = unpack("HHIII", read_at(offset, 16))
            from_library = by_library.setdefault(string(library), [])
            aux_offset = offset + aux
            for _ in range(min(count, 4096)):
                walk()
                _, _, _, name, aux_next = unpack("IHHII", read_at(aux_offset, 16))
                version_needs.append(string(name))
                from_library.append(version_needs[-1])
                if not aux_next:
                    break
                aux_offset += aux_next
            if not following:
                break
            offset += following
    version_defs: list[str] = []
    if DT_VERDEF in tags:
        offset = file_offset(tags[DT_VERDEF])
        for _ in range(min(tags.get(DT_VERDEFNUM, 0), 4096)):
            walk()
            _, flags, _, count, _, aux, following = unpack("HHHHIII", read_at(offset, 20))
            if count and not flags & 1:  # VER_FLG_BASE names the file itself
                (name,) = unpack("I", read_at(offset + aux, 8))
                version_defs.append(string(name))
            if not following:
                break
            offset += following
    return ElfInfo(arch, needed, soname, tuple(paths), interpreter,
                   tuple(dict.fromkeys(version_needs)), tuple(version_defs),
                   tuple((lib, tuple(names)) for lib, names in by_library.items()))


def glibc_version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def highest_glibc(versions: Iterable[str]) -> str | None:
    """The highest x.y of ``GLIBC_x.y`` names (GLIBC_PRIVATE and others ignored)."""
    found = [match.group(1) for match in map(_GLIBC_VERSION.match, versions) if match]
    return max(found, key=glibc_version_key) if found else None


@dataclass
class StackRequirements:
    """slug.json's ``stack_requirements``: sonames the slug's ELF files load from the
    run image, its glibc floor, the architecture of its ELF files, and the symbol
    versions they need from each of those libraries other than glibc's own
    ``GLIBC_*`` (the floor covers those): ``{"libssl.so.3": ["OPENSSL_3.0.0"]}``."""

    needed: list[str] = field(default_factory=list)
    glibc: str | None = None
    architecture: str | None = None
    versions: dict[str, list[str]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"needed": self.needed, "glibc": self.glibc, "architecture": self.architecture,
                "versions": self.versions}

    @classmethod
    def from_dict(cls, data: Any) -> StackRequirements | None:
        """Read slug.json's field; ``None`` when it is absent or not in this shape (an
        older slug.json: compute it from the slug instead)."""
        if not isinstance(data, dict):
            return None
        needed, glibc, arch = data.get("needed"), data.get("glibc"), data.get("architecture")
        versions = data.get("versions", {})  # absent before the field was added
        if not (isinstance(needed, list) and all(isinstance(n, str) for n in needed)
                and isinstance(glibc, (str, type(None)))
                and isinstance(arch, (str, type(None))) and isinstance(versions, dict)
                and all(isinstance(v, list) and all(isinstance(x, str) for x in v)
                        for v in versions.values())):
            return None
        return cls(list(needed), glibc, arch, {str(k): list(v) for k, v in versions.items()})


def requirements_of(files: Iterable[tuple[str, ElfInfo]], present: Iterable[str]
                    ) -> StackRequirements:
    """What ``files`` (slug-relative path, parsed ELF) need beyond what the slug holds.

    A needed name is the slug's own when an ELF file of the slug declares it as its
    soname (found through LD_LIBRARY_PATH, as the runtime's .profile.d sets it), or
    when a file of that name lies in one of the needing file's ``$ORIGIN``-relative
    RPATH/RUNPATH directories (how wheels repaired by auditwheel ship theirs).
    ``present`` is every path in the slug (relative, ``/``-separated).
    """
    files = list(files)
    paths = set(present)
    sonames = {info.soname for _, info in files if info.soname}
    needed: set[str] = set()
    versions: list[str] = []
    machines: collections.Counter[str] = collections.Counter()
    by_library: dict[str, set[str]] = {}
    for path, info in files:
        machines[info.machine] += 1
        versions += info.version_needs
        origin = posixpath.dirname(path)
        for name in info.needed:
            if name in sonames or _in_origin_paths(name, origin, info.search_paths, paths):
                continue
            needed.add(name)
            for library, names in info.needs_by_library:
                if library == name:
                    by_library.setdefault(name, set()).update(
                        n for n in names if not n.startswith("GLIBC_"))
        if info.interpreter and info.needed:  # executables load through it
            needed.add(posixpath.basename(info.interpreter))
    # Mixed machines (a package shipping another architecture's binary as data) are
    # rare: the most common one is the slug's.
    architecture = machines.most_common(1)[0][0] if machines else None
    return StackRequirements(sorted(needed), highest_glibc(versions), architecture,
                             {lib: sorted(names) for lib, names in sorted(by_library.items())
                              if names})


def _in_origin_paths(name: str, origin: str, search: tuple[str, ...], paths: set[str]) -> bool:
    for entry in search:
        for prefix in ("$ORIGIN", "${ORIGIN}"):
            if entry == prefix or entry.startswith(prefix + "/"):
                where = posixpath.normpath(posixpath.join(origin, entry[len(prefix):].lstrip("/"),
                                                          name))
                if where in paths:
                    return True
    return False


def slug_requirements(tree: Path, layers: Iterable[tuple[str, Path, Path]] = ()
                      ) -> StackRequirements:
    """The stack requirements of a build directory (or an unpacked slug).

    ``layers``: (mount, tree, record) of cached layers shown in the build directory
    by a view (layer_view.py): its walk does not enter their links, so their files
    are read from the layer instead, as if placed at the mount; a layer's ELF facts
    are kept in ``record`` (beside the immutable layer) and read from there by later
    builds."""
    elves, present = _tree_elf_files(tree)
    for mount, layer_tree, record in layers:
        layer_elves, layer_present = _layer_elf_files(layer_tree, record)
        elves += [(f"{mount}/{rel}", info) for rel, info in layer_elves]
        present += [f"{mount}/{rel}" for rel in layer_present]
    return requirements_of(elves, present)


_LAYER_RECORD_FORMAT = 1
# A layer's ELF facts, kept in the directory the cache gives for what is derived from it.
STACK_RECORD = "stack-requirements.json"


def _layer_elf_files(tree: Path, record: Path, heads_read: Collection[str] | None = None
                     ) -> tuple[list[tuple[str, ElfInfo]], list[str]]:
    """A layer's ELF files and paths: its record when one is kept, else read now and kept
    (best effort: a read-only cache reads them each time). A missing tree (a part-only
    layer's, not written yet) is FileNotFoundError: read as empty, it would keep a
    record that drops the layer's needs for every later build. ``heads_read``: see
    ``_tree_elf_files``."""
    kept = _kept_record(record)
    if kept is not None:
        return kept
    if not tree.is_dir():
        raise FileNotFoundError(errno.ENOENT, "a layer's tree is not written", str(tree))
    elves, present = _tree_elf_files(tree, heads_read)
    with contextlib.suppress(OSError):
        record.parent.mkdir(exist_ok=True)
        temporary = record.with_name(f".{record.name}.{os.getpid()}.{secrets.token_hex(4)}")
        temporary.write_text(json.dumps({
            "format": _LAYER_RECORD_FORMAT, "present": present,
            "elves": [[rel, dataclasses.asdict(info)] for rel, info in elves]}))
        os.replace(temporary, record)
    return elves, present


def keep_stack_record(tree: Path, record: Path, heads_read: Collection[str] | None = None
                      ) -> None:
    """Read a layer's ELF facts into ``record`` now unless kept already: a build that
    shows the layer by a view does it in the background, so its stack_requirements
    stage reads the record instead of every file of a layer no build read before.
    ``heads_read``: the paths of the tree's files that begin as an ELF file does, when a
    pass that read every file's head found them (a new dependency layer's host-path
    scan, relocate.find_references): only those are opened again."""
    if not stack_record_kept(record):
        _layer_elf_files(tree, record, heads_read)


def stack_record_kept(record: Path) -> bool:
    """Whether ``record`` is a layer's ELF facts as ``_layer_elf_files`` reads them
    (then its tree is not read)."""
    return _kept_record(record) is not None


def _kept_record(record: Path) -> tuple[list[tuple[str, ElfInfo]], list[str]] | None:
    """``record``'s ELF files and paths, or None when it is unreadable, malformed or
    lists no path at all (what a tree read while missing gave before: reread, it heals;
    a truly empty layer costs nothing to reread)."""
    try:
        kept = json.loads(record.read_text())
        if kept.get("format") != _LAYER_RECORD_FORMAT or not isinstance(kept["present"], list) \
                or not kept["present"]:
            return None
        return ([(str(rel), _elf_from_json(info)) for rel, info in kept["elves"]],
                [str(rel) for rel in kept["present"]])
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None


def _elf_from_json(data: dict[str, Any]) -> ElfInfo:
    return ElfInfo(
        str(data["machine"]), tuple(data["needed"]), data["soname"], tuple(data["search_paths"]),
        data["interpreter"], tuple(data["version_needs"]), tuple(data["version_defs"]),
        tuple((str(library), tuple(names)) for library, names in data["needs_by_library"]))


def _tree_elf_files(tree: Path, heads_read: Collection[str] | None = None
                    ) -> tuple[list[tuple[str, ElfInfo]], list[str]]:
    """The ELF files (not symlinks) below ``tree`` and every file or symlink's path, as
    ``os.walk`` sees them (linked directories are not entered). ``heads_read``: the
    paths (``tree`` joined with the file's) of the only files that can be ELF files,
    their heads read already; the others are not opened."""
    candidates = None if heads_read is None else frozenset(heads_read)
    elves: list[tuple[str, ElfInfo]] = []
    present: list[str] = []
    for directory, dirnames, filenames in os.walk(tree):
        dirnames.sort()
        rel_dir = os.path.relpath(directory, tree)
        for name in sorted(filenames):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            present.append(rel)
            path = os.path.join(directory, name)
            if candidates is not None and path not in candidates or os.path.islink(path):
                continue
            info = _try_elf_file(path)
            if info is not None:
                elves.append((rel, info))
    return elves, present


def _try_elf_file(path: str) -> ElfInfo | None:
    try:
        with open(path, "rb") as handle:
            if handle.read(4) != ELF_MAGIC:
                return None
            return read_elf(handle)
    except (OSError, NotElf):
        return None


def slug_archive_requirements(slug: Path, layout_base: str) -> StackRequirements:
    """The stack requirements of a packed slug (for slugs whose slug.json predates the
    field): its members read in one pass, ELF ones parsed from memory."""
    elves: list[tuple[str, ElfInfo]] = []
    present: list[str] = []
    prefix = layout_base.strip("./")
    with tarfile.open(slug, "r:*") as archive:
        for member in archive:
            name = posixpath.normpath(member.name.lstrip("./") or ".")
            if prefix:
                if not name.startswith(prefix + "/"):
                    continue
                name = name[len(prefix) + 1:]
            if member.isdir():
                continue
            present.append(name)
            if not member.isfile() or member.size < 52:
                continue
            handle = archive.extractfile(member)
            if handle is None or handle.read(4) != ELF_MAGIC:
                continue
            # A large library goes through a temporary file, not memory.
            with tempfile.SpooledTemporaryFile(max_size=16 << 20) as spool:
                spool.write(ELF_MAGIC)
                shutil.copyfileobj(handle, spool)
                try:
                    elves.append((name, read_elf(cast(IO[bytes], spool))))
                except NotElf:
                    pass
    return requirements_of(elves, present)


def requirements_for_slug(slug: Path, metadata: Mapping[str, Any]) -> StackRequirements:
    """A slug's requirements: slug.json's ``stack_requirements``, or (a slug.json from
    before the field) computed from the slug itself."""
    recorded = StackRequirements.from_dict(metadata.get("stack_requirements"))
    if recorded is not None:
        return recorded
    layout = metadata.get("layout")
    return slug_archive_requirements(slug, "./app" if layout == "heroku" else ".")


# --- run images -------------------------------------------------------------------
@dataclass
class _Entry:
    layer: int
    kind: str  # "file", "dir", "link" (symlink), "hard"
    target: str = ""  # symlink or hard-link target
    # A shared library's symbol versions (``None``: not one, or not read)
    defs: tuple[str, ...] | None = None
    text: str | None = None  # the loader's configuration files (/etc/ld.so.conf*)


def _whited_out(path: str, hidden: set[str], emptied: set[str]) -> bool:
    """Whether a whiteout hides ``path``: it, or a directory above it, is hidden, or a
    directory above it is opaque."""
    if path in hidden:
        return True
    current = path
    while current not in ("/", ""):
        current = posixpath.dirname(current)
        if current in hidden or current in emptied:
            return True
    return False


class RunImageFiles:
    """The merged file tree of a run image's layers (whiteouts applied), as far as the
    compatibility check needs it: every path and link, and the symbol versions each
    shared library defines."""

    def __init__(self, architecture: str | None = None) -> None:
        self.architecture = architecture
        self.entries: dict[str, _Entry] = {}
        self.layers = 0

    @classmethod
    def from_layers(cls, layers: Iterable[IO[bytes]], architecture: str | None = None
                    ) -> RunImageFiles:
        """Read layer tar streams, bottom first (gzip or plain, detected)."""
        files = cls(architecture)
        for stream in layers:
            files.add_layer(stream)
        return files

    def add_layer(self, stream: IO[bytes]) -> None:
        index = self.layers
        self.layers += 1
        # Whiteouts hide lower layers' paths only: applied once the layer is read, in
        # one pass over the tree (a layer of many whiteouts, each scanning every
        # path, took time quadratic in a hostile image's size).
        hidden: set[str] = set()  # a path and everything below it
        emptied: set[str] = set()  # everything below an opaque directory
        with _tar_stream(stream) as archive:
            for member in archive:
                self._add_member(index, member, archive, hidden, emptied)
        if hidden or emptied:
            for key in [k for k, e in self.entries.items()
                        if e.layer < index and _whited_out(k, hidden, emptied)]:
                del self.entries[key]

    def _add_member(self, index: int, member: tarfile.TarInfo, archive: tarfile.TarFile,
                    hidden: set[str], emptied: set[str]) -> None:
        path = "/" + posixpath.normpath(member.name.lstrip("/")).lstrip("./")
        path = posixpath.normpath(path)
        directory, name = posixpath.split(path)
        if name == ".wh..wh..opq":
            emptied.add(directory)
            return
        if name.startswith(".wh."):
            hidden.add(posixpath.join(directory, name[4:]))
            return
        if member.isdir():
            self.entries[path] = _Entry(index, "dir")
        elif member.issym():
            self.entries[path] = _Entry(index, "link", member.linkname)
        elif member.islnk():
            target = "/" + posixpath.normpath(member.linkname.lstrip("/")).lstrip("./")
            self.entries[path] = _Entry(index, "hard", posixpath.normpath(target))
        else:
            defs = text = None
            if member.isfile() and _LOADER_CONFIG.fullmatch(path) and member.size < 1 << 16:
                handle = archive.extractfile(member)
                text = handle.read().decode("utf-8", "replace") if handle else None
            elif member.isfile() and _SHARED_LIBRARY.search(name) and member.size < _LIBRARY_LIMIT:
                handle = archive.extractfile(member)
                if handle is not None:
                    try:
                        defs = read_elf(io.BytesIO(handle.read())).version_defs
                    except NotElf:
                        pass
            self.entries[path] = _Entry(index, "file", defs=defs, text=text)

    def resolve(self, path: str, depth: int = 0) -> str | None:
        """``path`` with every symlink followed (as the kernel would in the image's
        root), or None when it leads nowhere."""
        if depth > 40:
            return None
        current = "/"
        parts = [p for p in path.split("/") if p and p != "."]
        for position, part in enumerate(parts):
            candidate = posixpath.normpath(posixpath.join(current, part)) if part != ".." \
                else posixpath.dirname(current) or "/"
            entry = self.entries.get(candidate)
            if entry is None and candidate != "/":
                return None
            if entry is not None and entry.kind == "link":
                base = "/" if entry.target.startswith("/") else current
                rest = "/".join(parts[position + 1:])
                return self.resolve(posixpath.join(base, entry.target, rest), depth + 1)
            current = candidate
        return current

    def library_versions(self, path: str) -> tuple[str, ...] | None:
        """The symbol versions the library at ``path`` defines (links followed)."""
        resolved = self.resolve(path)
        entry = self.entries.get(resolved) if resolved else None
        if entry is not None and entry.kind == "hard":
            entry = self.entries.get(entry.target)
        return entry.defs if entry is not None else None

    def find_library(self, soname: str) -> str | None:
        """Where the loader would find ``soname`` in the standard directories."""
        for directory in self.library_dirs():
            resolved = self.resolve(posixpath.join(directory, soname))
            if resolved is not None and self.entries[resolved].kind in ("file", "hard"):
                return resolved
        return None

    def library_dirs(self) -> list[str]:
        """Where the image's loader looks: the directories of its /etc/ld.so.conf (and
        the files that includes, e.g. /etc/ld.so.conf.d/*.conf), then the standard
        ones; those the image has."""
        configured: list[str] = []
        pending = ["/etc/ld.so.conf"]
        seen: set[str] = set()
        while pending:
            config = pending.pop(0)
            if config in seen or len(seen) > 256:
                continue
            seen.add(config)
            resolved = self.resolve(config)
            entry = self.entries.get(resolved) if resolved else None
            for line in (entry.text or "").splitlines() if entry is not None else []:
                line = line.split("#", 1)[0].strip()
                if line.startswith("include"):
                    pattern = line[len("include"):].strip()
                    pattern = pattern if pattern.startswith("/") else f"/etc/{pattern}"
                    pending += sorted(p for p, e in self.entries.items() if e.text is not None
                                      and fnmatch.fnmatchcase(p, pattern))
                elif line.startswith("/"):
                    configured.append(posixpath.normpath(line))
        candidates = list(dict.fromkeys([*configured, *LIBRARY_DIRS]))
        return [d for d in candidates if (r := self.resolve(d)) is not None
                and self.entries.get(r, _Entry(0, "dir")).kind == "dir"]

    def has_library(self, soname: str) -> bool:
        return self.find_library(soname) is not None

    def glibc_version(self) -> str | None:
        """The highest GLIBC_x.y libc.so.6 defines (what it can satisfy), or the
        version in an old-style ``libc-2.31.so`` name."""
        for directory in self.library_dirs():
            defs = self.library_versions(posixpath.join(directory, "libc.so.6"))
            if defs is None:
                continue
            version = highest_glibc(defs)
            if version:
                return version
            resolved = self.resolve(posixpath.join(directory, "libc.so.6")) or ""
            match = re.search(r"libc-(\d+(?:\.\d+)+)\.so$", resolved)
            if match:
                return match.group(1)
        return None


@contextlib.contextmanager
def _tar_stream(stream: IO[bytes]) -> Iterator[tarfile.TarFile]:
    """A tar stream over a layer blob: gzip (every member read, not only the first
    as tarfile's ``r|gz`` would) or plain tar, told apart by the first bytes."""
    buffered = io.BufferedReader(_Raw(stream))
    source: IO[bytes] = buffered
    if buffered.peek(2)[:2] == b"\x1f\x8b":
        source = cast(IO[bytes], gzip.GzipFile(fileobj=buffered, mode="rb"))
    with tarfile.open(fileobj=source, mode="r|") as archive:
        yield archive


class _Raw(io.RawIOBase):
    """Any readable byte stream as a raw stream (to buffer and peek at it)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.stream.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def check_run_image(requirements: StackRequirements, image: RunImageFiles) -> list[str]:
    """What ``image`` lacks for a slug with ``requirements``: missing sonames, and a
    glibc older than the slug's floor (empty: compatible). The architecture is
    checked by ``require_compatible`` (it is not something to add to the image)."""
    missing = [name for name in requirements.needed if not image.has_library(name)]
    for name, wanted in requirements.versions.items():
        where = image.find_library(name)
        defined = image.library_versions(where) if where is not None else None
        if defined is not None:
            lacking = [version for version in wanted if version not in defined]
            if lacking:
                missing.append(f"{name} with {', '.join(lacking)} (the image's is older)")
    if requirements.glibc:
        have = image.glibc_version()
        if have is None:
            if "libc.so.6" not in missing:
                missing.append(f"glibc {requirements.glibc} (no libc.so.6 found)")
        elif glibc_version_key(have) < glibc_version_key(requirements.glibc):
            missing.append(f"glibc {requirements.glibc} (the image has {have})")
    return missing


def require_compatible(requirements: StackRequirements, image: RunImageFiles,
                       run_image: str) -> None:
    """Raise the catalogue's ``run-image-incompatible`` when a slug with
    ``requirements`` could not start on ``image`` (named ``run_image`` in messages)."""
    wanted, have = requirements.architecture, image.architecture
    if wanted and have and wanted != have:
        raise errors.RUN_IMAGE_INCOMPATIBLE.error(
            variant="architecture", run_image=run_image, image_architecture=have,
            slug_architecture=wanted)
    missing = check_run_image(requirements, image)
    if missing:
        raise errors.RUN_IMAGE_INCOMPATIBLE.error(
            run_image=run_image, missing="\n".join(f"  - {item}" for item in missing),
            packages=debian_packages_phrase(missing))


# The Debian (bookworm) packages that provide the sonames a slug built here needs:
# named in messages so a user knows what to add to their run image.
DEBIAN_PACKAGES = {
    "libc.so.6": "libc6", "libm.so.6": "libc6", "libpthread.so.0": "libc6",
    "libdl.so.2": "libc6", "librt.so.1": "libc6", "libutil.so.1": "libc6",
    "ld-linux-x86-64.so.2": "libc6", "ld-linux-aarch64.so.1": "libc6",
    "libz.so.1": "zlib1g", "liblzma.so.5": "liblzma5", "libbz2.so.1.0": "libbz2-1.0",
    "libuuid.so.1": "libuuid1", "libcrypt.so.1": "libcrypt1", "libtinfo.so.6": "libtinfo6",
    "libssl.so.3": "libssl3", "libcrypto.so.3": "libssl3", "libsqlite3.so.0": "libsqlite3-0",
    "libffi.so.8": "libffi8", "libncursesw.so.6": "libncursesw6",
    "libreadline.so.8": "libreadline8", "libnsl.so.2": "libnsl2", "libtirpc.so.3": "libtirpc3",
    "libexpat.so.1": "libexpat1", "libgdbm.so.6": "libgdbm6", "libgdbm_compat.so.4":
    "libgdbm-compat4", "libpanelw.so.6": "libncursesw6", "libformw.so.6": "libncursesw6",
    "libmpdec.so.3": "libmpdec3", "libstdc++.so.6": "libstdc++6", "libgcc_s.so.1": "libgcc-s1",
    "libpq.so.5": "libpq5", "libjpeg.so.62": "libjpeg62-turbo",
}


def debian_packages_phrase(missing: list[str]) -> str:
    """The Debian packages that provide ``missing``, as a message names them."""
    known = debian_packages(missing)
    unknown = list(dict.fromkeys(
        first for first in (item.split(" ", 1)[0] for item in missing)
        if first != "glibc" and first not in DEBIAN_PACKAGES))
    if unknown:
        known.append("the package(s) providing " + ", ".join(unknown))
    return ", ".join(known)


def debian_packages(missing: Iterable[str]) -> list[str]:
    """The Debian packages to install (or upgrade) for ``missing`` (those known)."""
    packages = []
    for item in missing:
        first = item.split(" ", 1)[0]  # "glibc 2.38 (...)", "libssl.so.3 with ..."
        if first == "glibc":
            packages.append("libc6")
        elif first in DEBIAN_PACKAGES:
            packages.append(DEBIAN_PACKAGES[first])
    return list(dict.fromkeys(packages))
