"""Runtime layer: a trimmed, relocatable CPython prefix for ``.heroku/python``.

Runtime sources are small providers behind ``RuntimeSource``: each lists the
versions it offers (``available``) and puts one on disk as a CPython prefix
(``provide``). ``LocalInterpreterSource`` (here) finds local installations:
directories listed in ``SLUGBUILD_PYTHON_PATH``, pyenv's ``versions/``, and the
interpreter running slugbuild; ``downloads.DownloadSource`` fetches verified
archives. ``SOURCE_FACTORIES`` names them; adding a source is one module and
one entry there.

Whatever the source, the prefix goes through ``build_runtime_tree``: copied
without the host's third-party packages, test suites, static libpython,
IDLE/tkinter and bytecode, made relocatable, its stdlib compiled to
timestamp-free pycs, checked to start from a different path, and cached per
version, platform and source identity.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from . import errors, relocate
from .cache import Cache, Layer
from .log import Reporter
from .platform_info import Platform
from .proc import clean_env
from .versions import PythonRequest, is_supported, newer_patch, pick, sort_versions

# Bump when the way a runtime layer is made changes, so old layers are not reused.
RUNTIME_LAYER_FORMAT = 2

_PATCHLEVEL = re.compile(rb'#define\s+PY_VERSION\s+"(\d+\.\d+\.\d+)"')
_PYTHON_BIN = re.compile(r"^python(\d+\.\d+)$")

# Paths (relative to lib/pythonX.Y) left out of the slug's runtime.
_STDLIB_EXCLUDES = {"test", "idlelib", "tkinter", "turtledemo", "site-packages"}
# Prefixes shared with the rest of the system: never copied as a runtime.
_SHARED_PREFIXES = {"/", "/usr", "/usr/local", "/opt", "/bin"}
# Extension modules only the test suite (or tkinter, absent on servers) uses.
_DYNLOAD_EXCLUDES = ("_tkinter", "_test", "_xxtestfuzz", "xxlimited", "xxsubtype", "_ctypes_test")
_BIN_EXCLUDES = re.compile(r"^(idle|pip|2to3|easy_install|pydoc)|-gdb\.py$")


class _VersionNames:
    """``major_minor`` and the interpreter's name, from a ``version`` attribute."""

    version: str

    @property
    def major_minor(self) -> str:
        return ".".join(self.version.split(".")[:2])

    @property
    def python_name(self) -> str:
        return f"python{self.major_minor}"


@dataclass(frozen=True)
class LocalRuntime(_VersionNames):
    """One CPython installation found on this machine."""

    version: str  # "3.12.1"
    prefix: Path
    origin: str  # "pyenv", "SLUGBUILD_PYTHON_PATH", "running interpreter"


@dataclass(frozen=True)
class RuntimeOffer(_VersionNames):
    """One version a source can provide, and what identifies its bytes."""

    version: str  # "3.12.1"
    source: RuntimeSource = field(compare=False, repr=False)
    origin: str  # human-readable: "pyenv (/root/.pyenv/versions/3.12.1)", a URL…
    identity: dict[str, Any] = field(compare=False)  # keys the runtime layer
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)  # for slug.json
    detail: Any = field(default=None, compare=False, repr=False)  # source-private

    @property
    def source_name(self) -> str:
        return self.source.name

    @property
    def short_origin(self) -> str:
        """For the log: ``pyenv``, or the archive URL, without host paths."""
        return self.metadata.get("origin", self.origin)


class RuntimeSource(Protocol):
    """Somewhere runtimes come from."""

    name: str

    def available(self) -> list[RuntimeOffer]:
        """Every version offered; raise SourceUnavailable when the source cannot be read."""
        ...

    def provide(self, offer: RuntimeOffer, scratch: Path, reporter: Reporter) -> LocalRuntime:
        """A CPython prefix on disk for ``offer`` (may be placed inside ``scratch``)."""
        ...


class SourceUnavailable(Exception):
    """A source could not list its runtimes (e.g. its index is unreachable)."""


class LocalInterpreterSource:
    """CPython prefixes installed on this machine."""

    name = "local"

    def __init__(self, search_path: list[tuple[Path, str]] | None = None) -> None:
        self.search_path = search_path if search_path is not None else default_search_path()

    def runtimes(self) -> list[LocalRuntime]:
        """One runtime per version; earlier search path entries win."""
        found: dict[str, LocalRuntime] = {}
        for directory, origin in self.search_path:
            for prefix in _candidate_prefixes(directory):
                runtime = inspect_prefix(prefix, origin)
                if runtime and runtime.version not in found:
                    found[runtime.version] = runtime
        return list(found.values())

    def available(self) -> list[RuntimeOffer]:
        return [self.offer(runtime) for runtime in self.runtimes()]

    def offer(self, runtime: LocalRuntime) -> RuntimeOffer:
        return RuntimeOffer(
            version=runtime.version, source=self, origin=f"{runtime.origin} ({runtime.prefix})",
            identity={"source": runtime.origin, "prefix_fingerprint": _fingerprint(runtime)},
            metadata={"origin": runtime.origin}, detail=runtime,
        )

    def provide(self, offer: RuntimeOffer, scratch: Path, reporter: Reporter) -> LocalRuntime:
        return offer.detail


def default_search_path() -> list[tuple[Path, str]]:
    """SLUGBUILD_PYTHON_PATH entries, then pyenv versions, then the running interpreter."""
    entries = [
        (Path(p), "SLUGBUILD_PYTHON_PATH")
        for p in os.environ.get("SLUGBUILD_PYTHON_PATH", "").split(os.pathsep)
        if p
    ]
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    entries.append((pyenv_root / "versions", "pyenv"))
    entries.append((Path(sys.base_prefix), "running interpreter"))
    return entries


def _candidate_prefixes(directory: Path) -> list[Path]:
    """``directory`` itself if it is a prefix, else its sorted subdirectories."""
    if (directory / "bin").is_dir():
        return [directory]
    try:
        return sorted(p for p in directory.iterdir() if p.is_dir())
    except OSError:
        return []


def inspect_prefix(prefix: Path, origin: str) -> LocalRuntime | None:
    """A LocalRuntime if ``prefix`` holds a final-release CPython 3, else None."""
    prefix = prefix.resolve()
    if str(prefix) in _SHARED_PREFIXES:
        return None  # a distro's Python shares its prefix with everything else
    bin_dir = prefix / "bin"
    try:
        names = sorted(os.listdir(bin_dir))
    except OSError:
        return None
    for name in names:
        match = _PYTHON_BIN.match(name)
        if not match:
            continue
        major_minor = match.group(1)
        if not (prefix / "lib" / f"python{major_minor}" / "os.py").is_file():
            continue
        header = prefix / "include" / f"python{major_minor}" / "patchlevel.h"
        try:
            version_match = _PATCHLEVEL.search(header.read_bytes())
        except OSError:
            version_match = None
        if (
            version_match
            and major_minor.startswith("3.")
            and version_match.group(1).decode().startswith(major_minor + ".")
        ):
            return LocalRuntime(version_match.group(1).decode(), prefix, origin)
    return None


def _fingerprint(runtime: LocalRuntime) -> str:
    """Prefix path plus size and mtime of its interpreter and libpython."""
    fingerprint = []
    for rel in (f"bin/{runtime.python_name}", f"lib/lib{runtime.python_name}.so.1.0"):
        path = runtime.prefix / rel
        if path.exists():
            st = path.stat()
            fingerprint.append(f"{rel}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256(
        (str(runtime.prefix) + "|" + "|".join(fingerprint)).encode()
    ).hexdigest()


def runtime_key(offer: RuntimeOffer, platform: Platform) -> tuple[str, str, dict]:
    """Layer name, key and the inputs that keyed it."""
    inputs = {
        "implementation": "cpython",
        "version": offer.version,
        "platform": platform.key,
        "source": offer.source_name,
        **offer.identity,
        "layer_format": RUNTIME_LAYER_FORMAT,
    }
    key = hashlib.sha256(repr(sorted(inputs.items())).encode()).hexdigest()
    name = f"cpython-{offer.version}-{platform.key}-{key[:12]}"
    return name, key, inputs


def cached_runtime_layer(cache: Cache, offer: RuntimeOffer, platform: Platform) -> Layer | None:
    """The runtime layer for ``offer`` if the cache already has it."""
    name, key, _ = runtime_key(offer, platform)
    return cache.lookup("runtimes", name, key)


def runtime_manifest(offer: RuntimeOffer, platform: Platform) -> dict[str, Any]:
    """Name, key and inputs of the runtime layer for ``offer``, as its manifest
    records them, known before the layer exists (the dependency layer key uses them)."""
    name, key, inputs = runtime_key(offer, platform)
    return {"name": name, "key": key, "inputs": inputs}


def interpreter_before_layer(cache: Cache, offer: RuntimeOffer, platform: Platform
                             ) -> Path | None:
    """An interpreter of exactly this runtime, runnable before its layer is in the
    build: the cached layer's, else the local prefix the layer is copied from.
    None for a runtime still to be downloaded."""
    layer = cached_runtime_layer(cache, offer, platform)
    if layer is not None:
        return layer.tree / "bin" / offer.python_name
    if isinstance(offer.detail, LocalRuntime):
        python = offer.detail.prefix / "bin" / offer.python_name
        return python if python.is_file() else None
    return None


def ensure_runtime_layer(
    cache: Cache, offer: RuntimeOffer, platform: Platform, reporter: Reporter
) -> tuple[Layer, bool]:
    """The cached runtime layer for ``offer``, building it if needed.

    Returns the layer and whether it came from the cache.
    """
    layer = cached_runtime_layer(cache, offer, platform)
    if layer:
        return layer, True
    name, key, inputs = runtime_key(offer, platform)
    with cache.lock("runtimes", name):
        layer = cache.lookup("runtimes", name, key)
        if layer:
            return layer, True
        scratch = cache.scratch_dir("runtime-source")
        try:
            runtime = offer.source.provide(offer, scratch, reporter)
            with reporter.working(f"Preparing Python {offer.version}"):
                with cache.new_layer("runtimes", name, key, inputs) as tree:
                    build_runtime_tree(runtime, tree, _build_prefixes(runtime))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        layer = cache.lookup("runtimes", name, key)
        assert layer is not None
        return layer, False


def build_runtime_tree(
    runtime: LocalRuntime, tree: Path, build_prefixes: Sequence[str] = ()
) -> None:
    """Copy, trim, relocate, compile and check ``runtime`` into ``tree``.

    ``build_prefixes`` are prefixes the runtime was built for elsewhere (an
    unpacked archive's original ``--prefix``): ELF RUNPATHs naming them are
    made ``$ORIGIN``-relative too, so libpython is never loaded from them.
    """
    # Contents and modes only: times and extended attributes of the copies do
    # not matter (the slug sets its own), and copying them cost a third of the copy.
    shutil.copytree(runtime.prefix, tree, symlinks=True, dirs_exist_ok=True,
                    ignore=_trim_filter(runtime), copy_function=shutil.copy)
    (tree / "lib" / runtime.python_name / "site-packages").mkdir(exist_ok=True)
    old_prefix = str(runtime.prefix)
    try:
        for prefix in (old_prefix, *build_prefixes):
            relocate.fix_runpaths(tree, prefix)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise errors.RUNTIME_RELOCATION_FAILED.error(
            detail=f"patchelf could not rewrite the RUNPATH of {runtime.prefix}: {exc}"
        ) from exc
    relocate.strip_debug_info(tree)
    relocate.replace_prefix(tree, old_prefix, relocate.SLUG_PYTHON_HOME)
    _relink_absolute_symlinks(tree, old_prefix)
    relocate.make_scripts_relocatable(tree / "bin", runtime.python_name)
    python = tree / "bin" / runtime.python_name
    env = clean_env()
    relocate.compile_bytecode(
        python,
        tree / "lib" / runtime.python_name,
        f"{relocate.SLUG_PYTHON_HOME}/lib/{runtime.python_name}",
        env,
        reuse_from=runtime.prefix / "lib" / runtime.python_name,
    )
    _check_runtime_starts(python, runtime, env)
    leftovers = relocate.find_references(tree, [old_prefix])
    if leftovers:
        listed = ", ".join(str(p.relative_to(tree)) for p, _ in leftovers[:5])
        raise errors.RUNTIME_RELOCATION_FAILED.error(
            detail=f"{len(leftovers)} file(s) still name {old_prefix}: {listed}"
        )


def _trim_filter(runtime: LocalRuntime):
    stdlib = runtime.prefix / "lib" / runtime.python_name

    def ignore(directory: str, names: list[str]) -> set[str]:
        here = Path(directory)
        dropped = {n for n in names if n == "__pycache__" or n.endswith((".pyc", ".pyo"))}
        if here == stdlib:
            dropped |= _STDLIB_EXCLUDES & set(names)
        elif here.parent == stdlib and here.name.startswith("config-"):
            dropped |= {n for n in names if n.endswith(".a")}
        elif here == stdlib / "lib-dynload":
            dropped |= {n for n in names if n.startswith(_DYNLOAD_EXCLUDES)}
        elif here == runtime.prefix / "bin":
            dropped |= {n for n in names if _BIN_EXCLUDES.search(n)}
        elif here == runtime.prefix:
            dropped |= {"share"} & set(names)
        elif here == runtime.prefix / "lib":
            dropped |= {n for n in names if n.endswith(".a") or n.startswith(("tcl", "tk", "itcl"))}
        return dropped

    return ignore


def _relink_absolute_symlinks(tree: Path, old_prefix: str) -> None:
    """Turn links into the old prefix into relative links within the tree."""
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in dirnames + filenames:
            link = Path(dirpath) / name
            if not link.is_symlink():
                continue
            target = os.readlink(link)
            if target.startswith(old_prefix + "/"):
                inside = tree / target[len(old_prefix) + 1:]
                link.unlink()
                link.symlink_to(os.path.relpath(inside, link.parent))


def _check_runtime_starts(python: Path, runtime: LocalRuntime, env: dict) -> None:
    """Run the copied interpreter from its new place: it must not need the old prefix."""
    probe = (
        "import sys, ssl, sqlite3, json, ctypes; "
        "print(sys.prefix); print('.'.join(map(str, sys.version_info[:3])))"
    )
    result = subprocess.run(
        [str(python), "-I", "-c", probe], capture_output=True, text=True, env=env
    )
    if result.returncode != 0:
        raise errors.RUNTIME_RELOCATION_FAILED.error(
            detail=f"The copy of {runtime.prefix} does not start: "
            f"{result.stderr.strip()[-500:]}"
        )
    # One value per line: a prefix may hold spaces (a cache under "My Documents").
    lines = result.stdout.splitlines()
    if len(lines) < 2:
        raise errors.RUNTIME_RELOCATION_FAILED.error(
            detail=f"The copy of {runtime.prefix} printed {result.stdout[-200:]!r}, "
            "not its prefix and version.")
    prefix_line, version_line = lines[0], lines[1].strip()
    if Path(prefix_line).resolve() != python.parent.parent.resolve():
        raise errors.RUNTIME_RELOCATION_FAILED.error(
            detail=f"The copy of {runtime.prefix} still uses {prefix_line} as its prefix."
        )
    if version_line != runtime.version:
        raise errors.RUNTIME_RELOCATION_FAILED.error(
            detail=f"{runtime.prefix} reports Python {version_line}, expected {runtime.version}."
        )


_SYSCONFIG_PREFIX = re.compile(r"""['"]prefix['"]:\s*['"]([^'"]+)['"]""")


def _build_prefixes(runtime: LocalRuntime) -> list[str]:
    """The ``--prefix`` the runtime was configured with, when it is not where it lies now."""
    stdlib = runtime.prefix / "lib" / runtime.python_name
    found = []
    for path in sorted(stdlib.glob("_sysconfigdata_*.py")):
        match = _SYSCONFIG_PREFIX.search(path.read_text(errors="replace"))
        if match and match.group(1) not in (str(runtime.prefix), "/") and \
                match.group(1) not in found:
            found.append(match.group(1))
    return found


# --- choosing a runtime ---------------------------------------------------------------

DEFAULT_SOURCES = ("local", "download")


@dataclass(frozen=True)
class RuntimeOptions:
    """Where runtimes may come from, in order; ``offline`` forbids network access."""

    sources: tuple[str, ...] = DEFAULT_SOURCES
    offline: bool = False
    download_url: str | None = None  # None: $SLUGBUILD_PYTHON_DOWNLOAD_URL or the default

    @classmethod
    def from_env(cls, sources: str | Sequence[str] | None = None, offline: bool | None = None,
                 download_url: str | None = None) -> RuntimeOptions:
        """Options given explicitly, else from SLUGBUILD_PYTHON_SOURCE / SLUGBUILD_OFFLINE."""
        if sources is None:
            sources = os.environ.get("SLUGBUILD_PYTHON_SOURCE") or ",".join(DEFAULT_SOURCES)
        if offline is None:
            offline = os.environ.get("SLUGBUILD_OFFLINE", "") not in ("", "0")
        return cls(parse_sources(sources), offline, download_url)


def parse_sources(value: str | Sequence[str]) -> tuple[str, ...]:
    """``"local,download"`` (or a sequence) as a checked tuple of source names."""
    names = value.split(",") if isinstance(value, str) else list(value)
    cleaned = tuple(dict.fromkeys(n.strip() for n in names if n.strip()))
    unknown = [n for n in cleaned if n not in SOURCE_FACTORIES]
    if unknown or not cleaned:
        raise errors.PYTHON_SOURCE_UNKNOWN.error(
            value=",".join(unknown) or str(value), known=", ".join(SOURCE_FACTORIES))
    return cleaned


def _local_source(options: RuntimeOptions, cache: Cache, platform: Platform) -> RuntimeSource:
    return LocalInterpreterSource()


def _download_source(options: RuntimeOptions, cache: Cache, platform: Platform) -> RuntimeSource:
    from .downloads import DownloadSource

    return DownloadSource(cache, platform, base_url=options.download_url, offline=options.offline)


SourceFactory = Callable[[RuntimeOptions, Cache, Platform], RuntimeSource]
SOURCE_FACTORIES: dict[str, SourceFactory] = {
    "local": _local_source,
    "download": _download_source,
}


def make_sources(options: RuntimeOptions, cache: Cache, platform: Platform) -> list[RuntimeSource]:
    return [SOURCE_FACTORIES[name](options, cache, platform) for name in options.sources]


@dataclass
class Resolution:
    """The offer chosen for a request, and what else was seen on the way."""

    offer: RuntimeOffer
    known_versions: list[str]
    newer_patch: str | None


def list_offers(sources: Sequence[RuntimeSource]) -> tuple[list[RuntimeOffer], list[str]]:
    """Every supported offer of every source, and a note for each source that failed."""
    offers, notes = [], []
    for source in sources:
        try:
            offers += [o for o in source.available() if is_supported(o.version)]
        except SourceUnavailable as exc:
            notes.append(f"{source.name}: {exc}")
    return offers, notes


def resolve(request: PythonRequest, sources: Sequence[RuntimeSource]) -> Resolution:
    """The first source (in order) that offers a match wins; its newest match is used."""
    seen: list[str] = []
    tried: list[str] = []
    for source in sources:
        try:
            offers = [o for o in source.available() if is_supported(o.version)]
        except SourceUnavailable as exc:
            tried.append(f"{source.name} ({exc})")
            continue
        tried.append(f"{source.name} ({len(offers)} version(s))")
        seen += [o.version for o in offers]
        chosen = pick(request, [o.version for o in offers])
        if chosen is not None:
            offer = next(o for o in offers if o.version == chosen)
            newer = None if request.is_specifier else newer_patch(chosen, seen)
            return Resolution(offer, sort_versions(seen), newer)
    raise errors.PYTHON_VERSION_UNAVAILABLE.error(
        source_file=request.source_file or "The default",
        requested=request.requested,
        available=", ".join(sort_versions(seen)) or "none",
        sources="; ".join(tried) or "none",
    )
