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
from .versions import (
    DEFAULT_PYTHON,
    FROM_DEFAULT,
    FROM_STICKY,
    PythonRequest,
    allow_eol_from_env,
    check_supported,
    default_minors,
    is_supported,
    newer_patch,
    pick,
    policy_warnings,
    read_request,
    record_sticky,
    sort_versions,
    sticky_minor,
)

# Bump when the way a runtime layer is made changes, so old layers are not reused.
RUNTIME_LAYER_FORMAT = 3  # 3: files.json with digests (cache.INDEX_FORMAT 2)

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


def cached_runtime_layer(cache: Cache, offer: RuntimeOffer, platform: Platform,
                         reporter: Reporter | None = None) -> Layer | None:
    """The runtime layer for ``offer`` if the cache has it intact.

    A layer whose files no longer match its files.json (a truncated or edited
    stdlib file, a lost execute bit) is discarded, with a warning, so the caller
    builds it again instead of shipping or running it.
    """
    name, key, _ = runtime_key(offer, platform)
    layer, problems = cache.lookup_verified("runtimes", name, key)
    if problems and reporter is not None:
        reporter.warn(damaged_layer_warning(f"Python {offer.version} runtime layer", problems))
    return layer


def damaged_layer_warning(what: str, problems: list[str]) -> str:
    """The one warning for a cached layer found damaged (and discarded)."""
    shown = "; ".join(problems[:3]) + (f" (and {len(problems) - 3} more)"
                                       if len(problems) > 3 else "")
    return (f"The cached {what} was damaged ({shown}); it was discarded and is built "
            f"again.")


def runtime_manifest(offer: RuntimeOffer, platform: Platform) -> dict[str, Any]:
    """Name, key and inputs of the runtime layer for ``offer``, as its manifest
    records them, known before the layer exists (the dependency layer key uses them)."""
    name, key, inputs = runtime_key(offer, platform)
    return {"name": name, "key": key, "inputs": inputs}


def interpreter_before_layer(cache: Cache, offer: RuntimeOffer, platform: Platform,
                             reporter: Reporter | None = None) -> Path | None:
    """An interpreter of exactly this runtime, runnable before its layer is in the
    build: the cached layer's, else the local prefix the layer is copied from.
    None for a runtime still to be downloaded."""
    layer = cached_runtime_layer(cache, offer, platform, reporter)
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
    layer = cached_runtime_layer(cache, offer, platform, reporter)
    if layer:
        return layer, True
    name, key, inputs = runtime_key(offer, platform)
    with cache.lock("runtimes", name):
        layer = cached_runtime_layer(cache, offer, platform, reporter)
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
            variant="runpath", prefix=runtime.prefix, reason=exc) from exc
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
            variant="prefix-left", count=len(leftovers), prefix=old_prefix, files=listed)


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
            variant="does-not-start", prefix=runtime.prefix, stderr=result.stderr.strip()[-500:])
    # One value per line: a prefix may hold spaces (a cache under "My Documents").
    printed = result.stdout.splitlines()
    if len(printed) < 2:
        raise errors.RUNTIME_RELOCATION_FAILED.error(
            variant="not-cpython", prefix=runtime.prefix, printed=result.stdout.strip()[:200])
    prefix_line, version_line = printed[0], printed[1].strip()
    if Path(prefix_line).resolve() != python.parent.parent.resolve():
        raise errors.RUNTIME_RELOCATION_FAILED.error(
            variant="old-prefix", prefix=runtime.prefix, used=prefix_line)
    if version_line != runtime.version:
        raise errors.RUNTIME_RELOCATION_FAILED.error(
            variant="wrong-version", prefix=runtime.prefix, reported=version_line,
            expected=runtime.version)


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
PATCH_FALLBACK_ENV = "SLUGBUILD_PYTHON_PATCH_FALLBACK"


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


@dataclass(frozen=True)
class RuntimeOptions:
    """Where runtimes may come from, in order; ``offline`` forbids network access.

    ``allow_eol`` builds minors the version policy refuses; ``patch_fallback``
    accepts the newest patch of the same minor when an exact pin cannot be had.
    """

    sources: tuple[str, ...] = DEFAULT_SOURCES
    offline: bool = False
    download_url: str | None = None  # None: $SLUGBUILD_PYTHON_DOWNLOAD_URL or the default
    allow_eol: bool = False
    patch_fallback: bool = False
    heroku_url: str | None = None  # None: $SLUGBUILD_HEROKU_PYTHON_URL or Heroku's S3

    @classmethod
    def from_env(cls, sources: str | Sequence[str] | None = None, offline: bool | None = None,
                 download_url: str | None = None, allow_eol: bool | None = None,
                 patch_fallback: bool | None = None) -> RuntimeOptions:
        """Options given explicitly, else from SLUGBUILD_PYTHON_SOURCE, SLUGBUILD_OFFLINE,
        SLUGBUILD_ALLOW_EOL_PYTHON and SLUGBUILD_PYTHON_PATCH_FALLBACK."""
        if sources is None:
            sources = os.environ.get("SLUGBUILD_PYTHON_SOURCE") or ",".join(DEFAULT_SOURCES)
        if offline is None:
            offline = _flag("SLUGBUILD_OFFLINE")
        if allow_eol is None:
            allow_eol = allow_eol_from_env()
        if patch_fallback is None:
            patch_fallback = _flag(PATCH_FALLBACK_ENV)
        return cls(parse_sources(sources), offline, download_url, allow_eol, patch_fallback)


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


def _heroku_source(options: RuntimeOptions, cache: Cache, platform: Platform) -> RuntimeSource:
    from .downloads import HerokuSource

    return HerokuSource(cache, platform, base_url=options.heroku_url, offline=options.offline)


SourceFactory = Callable[[RuntimeOptions, Cache, Platform], RuntimeSource]
SOURCE_FACTORIES: dict[str, SourceFactory] = {
    "local": _local_source,
    "download": _download_source,
    "heroku": _heroku_source,
}


def make_sources(options: RuntimeOptions, cache: Cache, platform: Platform) -> list[RuntimeSource]:
    return [SOURCE_FACTORIES[name](options, cache, platform) for name in options.sources]


@dataclass
class Resolution:
    """The offer chosen for a request, why, and what else was seen on the way."""

    offer: RuntimeOffer
    known_versions: list[str]
    newer_patch: str | None
    reason: str = ""  # why this version, for the log (the default, a fallback)
    substituted_for: str | None = None  # the exact pin that could not be had
    warnings: list[str] = field(default_factory=list)
    requested_from: str = "file"  # versions.FROM_FILE, FROM_STICKY or FROM_DEFAULT
    unavailable: dict[str, str] = field(default_factory=dict)  # source name: why it failed

    def record(self) -> dict[str, Any]:
        """What slug.json's runtime object adds about the choice."""
        record: dict[str, Any] = {"requested_from": self.requested_from}
        if self.substituted_for:
            record["substituted_for"] = self.substituted_for
        if self.reason:
            record["reason"] = self.reason
        return record


def list_offers(sources: Sequence[RuntimeSource], allow_eol: bool = False
                ) -> tuple[list[RuntimeOffer], list[str]]:
    """Every supported offer of every source, and a note for each source that failed."""
    offers, notes = [], []
    for source in sources:
        try:
            offers += [o for o in source.available() if is_supported(o.version, allow_eol)]
        except SourceUnavailable as exc:
            notes.append(f"{source.name}: {exc}")
    return offers, notes


class _Survey:
    """Each source's offers, read once and in order; failures noted, never raised."""

    def __init__(self, sources: Sequence[RuntimeSource], allow_eol: bool) -> None:
        self.sources = list(sources)
        self.allow_eol = allow_eol
        self._offers: dict[int, list[RuntimeOffer]] = {}
        self.failed: dict[str, str] = {}
        self.refused: set[str] = set()  # versions offered but refused by the policy

    def offers(self, source: RuntimeSource) -> list[RuntimeOffer]:
        if id(source) not in self._offers:
            try:
                listed = source.available()
                found = [o for o in listed if is_supported(o.version, self.allow_eol)]
                self.refused.update(o.version for o in listed if o not in found)
            except SourceUnavailable as exc:
                self.failed[source.name] = str(exc)
                found = []
            self._offers[id(source)] = found
        return self._offers[id(source)]

    def seen(self) -> list[str]:
        return sort_versions([o.version for offers in self._offers.values() for o in offers])

    def tried(self) -> str:
        parts = []
        for source in self.sources:
            if source.name in self.failed:
                parts.append(f"{source.name} ({self.failed[source.name]})")
            elif id(source) in self._offers:
                parts.append(f"{source.name} ({len(self._offers[id(source)])} version(s))")
        return "; ".join(parts) or "none"

    def first_match(self, request: PythonRequest) -> RuntimeOffer | None:
        for source in self.sources:
            offers = self.offers(source)
            chosen = pick(request, [o.version for o in offers])
            if chosen is not None:
                return next(o for o in offers if o.version == chosen)
        return None

    def exact(self, version: str) -> RuntimeOffer | None:
        """Ask sources that can search beyond their listing (a whole release history)."""
        for source in self.sources:
            finder = getattr(source, "find_exact", None)
            if finder is None:
                continue
            try:
                offer = finder(version)
            except SourceUnavailable as exc:
                self.failed.setdefault(source.name, str(exc))
                continue
            if offer is not None:
                return offer
        return None


def resolve(request: PythonRequest, sources: Sequence[RuntimeSource], *,
            allow_eol: bool = False, patch_fallback: bool = False) -> Resolution:
    """The runtime for ``request``.

    A file's request: the first source (in order) that offers a match wins, its
    newest match is used; an exact pin no listing has is searched for in the
    sources' whole history (``find_exact``), then, with ``patch_fallback``,
    replaced by the newest patch of its minor. The default: the newest supported
    minor (never past DEFAULT_PYTHON) that any source offers.
    """
    survey = _Survey(sources, allow_eol)
    reason, substituted = "", None
    if request.is_default:
        offer = None
        for minor in default_minors():
            offer = survey.first_match(PythonRequest(minor, None))
            if offer is not None:
                break
        if offer is not None:
            reason = (f"the newest supported Python a source offers (Heroku's default is "
                      f"{DEFAULT_PYTHON})" if offer.major_minor != DEFAULT_PYTHON
                      else "Heroku's default")
    else:
        offer = survey.first_match(request)
        if offer is None and request.is_exact:
            offer = survey.exact(request.requested)
            if offer is None and patch_fallback:
                offer = survey.first_match(PythonRequest(request.major_minor, None))
                if offer is not None:
                    substituted = request.requested
                    reason = (f"Python {request.requested} is not available; "
                              f"--python-patch-fallback took the newest {request.major_minor} "
                              f"patch instead")
    if offer is None:
        raise _unavailable(request, survey, sources, patch_fallback)
    seen = survey.seen()
    newer = newer_patch(offer.version, seen)
    resolution = Resolution(offer, seen, newer, reason, substituted)
    resolution.unavailable = dict(survey.failed)
    resolution.warnings = policy_warnings(offer.version, request)
    if substituted:
        resolution.warnings.append(
            f"Python {substituted} ({request.describe_source()}) could not be found in any "
            f"source; building with Python {offer.version}, the newest {request.major_minor} "
            f"patch available, because the patch fallback is on. slug.json records it as "
            f"runtime.substituted_for.")
    if newer:
        resolution.warnings.append(_newer_patch_warning(request, offer, newer, sources, survey))
    return resolution


def _newer_patch_warning(request: PythonRequest, offer: RuntimeOffer, newer: str,
                         sources: Sequence[RuntimeSource], survey: _Survey) -> str:
    if request.is_exact and not request.is_default:
        return (f"A Python security update is available: Python {newer} (the app pins "
                f"{request.requested}). Update {request.where} to it, or better, to "
                f"`{request.major_minor}` to get every patch release.")
    text = (f"Python {offer.version} is not the newest {offer.major_minor} patch: {newer} is "
            f"out, with security fixes, but {offer.source_name} (the first source offering "
            f"{offer.major_minor}) does not have it. Install it (`pyenv install {newer}`)")
    downloaders = [s for s in sources if getattr(s, "downloads", False)]
    if not downloaders:
        return text + " or allow downloads (`--python-source download,local`)."
    if all(getattr(s, "offline", False) for s in downloaders):
        return text + " or build online once with `--python-source download,local`."
    if all(s.name in survey.failed for s in downloaders):
        return text + (" or let the download source reach its index (it could not be read; "
                       "`--python-download-url` names a mirror or a local index).")
    return text + (" or put a download source first (`--python-source download,local`; "
                   "`--python-download-url` names another index).")


def _unavailable(request: PythonRequest, survey: _Survey, sources: Sequence[RuntimeSource],
                 patch_fallback: bool) -> errors.SlugbuildError:
    """The "version unavailable" error, with advice fitting what was tried and why it failed."""
    downloaders = [s for s in sources if getattr(s, "downloads", False)]
    requested = request.requested
    if request.is_default:
        requested = f"{DEFAULT_PYTHON} (or any of {', '.join(default_minors()[1:])})"
    advice = [f"Ask for one of the available versions in {request.where}, or make "
              f"Python {request.requested} available: install it (e.g. `pyenv install "
              f"{request.requested}`) or add its prefix to SLUGBUILD_PYTHON_PATH."]
    if not downloaders:
        advice.append("Or allow downloads: `--python-source local,download` "
                      "(`--python-download-url URL` names another index or mirror).")
    elif all(getattr(s, "offline", False) for s in downloaders):
        advice.append("Downloads are configured but --offline (SLUGBUILD_OFFLINE) forbids "
                      "them: build once online so the runtime is cached, or drop --offline.")
    else:
        failed = [s.name for s in downloaders if s.name in survey.failed]
        if failed:
            advice.append("The runtime index could not be read (see Sources tried). Check the "
                          "network, or point `--python-download-url` (SLUGBUILD_PYTHON_DOWNLOAD_"
                          "URL) at a reachable mirror or a local index file.")
        else:
            advice.append(f"The runtime index has no Python {request.requested} for this "
                          f"platform: point `--python-download-url` at an index or release "
                          f"that has it.")
    eol = sorted(v for v in survey.refused if request.matches(v))
    if eol:
        advice.append(f"{', '.join(eol)} would match but reached end of life (see "
                      f"docs/python-versions.md); --allow-eol-python builds it anyway.")
    if request.is_exact and not patch_fallback:
        advice.append(f"To accept the newest available {request.major_minor} patch instead, "
                      f"build with `--python-patch-fallback` (SLUGBUILD_PYTHON_PATCH_FALLBACK=1).")
    asker = request.source_file or ("The version this app's previous build used (sticky; "
                                     "no version file)" if request.origin == FROM_STICKY
                                     else "The default")
    return errors.PYTHON_VERSION_UNAVAILABLE.error(
        source_file=asker,
        requested=requested,
        available=", ".join(survey.seen()) or "none",
        sources=survey.tried(),
        advice="\n".join(advice),
    )


def choose_runtime(app_dir: Path, cache: Cache, platform: Platform, options: RuntimeOptions,
                   reporter: Reporter, sticky_key: Path) -> tuple[PythonRequest, Resolution]:
    """Read the app's request, resolve it against the configured sources, and say
    in the log what was picked and why. ``sticky_key`` is the app's own directory:
    an app without a version file stays on the minor its previous build used."""
    request = read_request(app_dir, sticky_minor(cache.root, sticky_key))
    if request.source_file:
        reporter.step(f"Using Python {request.requested} {request.describe_source()}")
    elif request.origin == FROM_STICKY:
        reporter.step(f"Using Python {request.requested} {request.describe_source()}")
    else:
        reporter.step("No Python version was specified. Choosing the default: the newest "
                      f"supported Python (at most {DEFAULT_PYTHON}, Heroku's default) a "
                      f"runtime source offers")
    for warning in request.warnings:
        reporter.warn(warning)
    check_supported(request, options.allow_eol)
    sources = make_sources(options, cache, platform)
    resolution = resolve(request, sources, allow_eol=options.allow_eol,
                         patch_fallback=options.patch_fallback)
    resolution.requested_from = request.origin
    for source in sources:
        origin = getattr(source, "index_origin", None)
        if origin:
            reporter.detail(f"Runtime index ({source.name}): {origin}")
    for name, reason in resolution.unavailable.items():
        reporter.detail(f"Runtime source {name} unavailable: {reason}")
    if request.is_default:
        reporter.step(f"Picked Python {resolution.offer.major_minor} "
                      f"({resolution.offer.version} from {resolution.offer.source_name}): "
                      f"{resolution.reason}. Later builds of this app stay on "
                      f"{resolution.offer.major_minor} until it has a .python-version.")
    for warning in resolution.warnings:
        reporter.warn(warning)
    _check_project_allows(app_dir, resolution.offer.version)
    if request.origin in (FROM_DEFAULT, FROM_STICKY):
        record_sticky(cache.root, sticky_key, resolution.offer.version)
    return request, resolution


def _check_project_allows(app_dir: Path, version: str) -> None:
    """Refuse, before any runtime is prepared, a Python the project's lock tool
    would refuse (uv, Poetry): the installers check again, this only saves the wait."""
    if (app_dir / "uv.lock").is_file():
        from .installers.uv_project import check_python_allowed
    elif (app_dir / "poetry.lock").is_file():
        from .installers.poetry import check_python_allowed
    else:
        return
    check_python_allowed(app_dir, version)
