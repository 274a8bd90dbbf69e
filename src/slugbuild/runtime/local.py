"""The local runtime source: CPython installations already on this machine.

Directories listed in ``SLUGBUILD_PYTHON_PATH``, pyenv's ``versions/``, and the
interpreter running slugbuild, in that order. Nothing is fetched: the offer's
prefix is copied into the runtime layer as it is (``layer.build_runtime_tree``).
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from pathlib import Path

from ..log import Reporter
from .sources import LocalRuntime, RuntimeOffer

_PATCHLEVEL = re.compile(rb'#define\s+PY_VERSION\s+"(\d+\.\d+\.\d+)"')
_PYTHON_BIN = re.compile(r"^python(\d+\.\d+)$")

# Prefixes shared with the rest of the system: never copied as a runtime.
_SHARED_PREFIXES = {"/", "/usr", "/usr/local", "/opt", "/bin"}


class LocalInterpreterSource:
    """CPython prefixes installed on this machine."""

    name = "local"
    downloads = False
    offline = False
    index_origin = None

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
            metadata={"origin": runtime.origin}, detail=runtime, host_prefix=runtime.prefix,
        )

    def refused(self) -> list[str]:
        """Pythons on this machine that are not offered, and why (refused_interpreters)."""
        return refused_interpreters(self.search_path)

    def find_exact(self, version: str) -> RuntimeOffer | None:
        """What is installed is all there is: ``available`` lists it."""
        return None

    def provide(self, offer: RuntimeOffer, scratch: Path, reporter: Reporter) -> LocalRuntime:
        assert isinstance(offer.detail, LocalRuntime), "an offer of another source"
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
    examined = examine_prefix(prefix, origin)
    return examined if isinstance(examined, LocalRuntime) else None


def examine_prefix(prefix: Path, origin: str) -> LocalRuntime | str:
    """A LocalRuntime if ``prefix`` holds a final-release CPython 3, else why not."""
    prefix = prefix.resolve()
    if str(prefix) in _SHARED_PREFIXES:
        # A distro's Python shares its prefix with everything else.
        return (f"its prefix {prefix} is shared with the rest of the system (a distribution's "
                f"Python), and a runtime is copied as a whole prefix")
    bin_dir = prefix / "bin"
    try:
        names = sorted(os.listdir(bin_dir))
    except OSError:
        return f"{bin_dir} cannot be listed"
    reason = f"no python3.N interpreter in {bin_dir}"
    for name in names:
        match = _PYTHON_BIN.match(name)
        if not match:
            continue
        major_minor = match.group(1)
        if not (prefix / "lib" / f"python{major_minor}" / "os.py").is_file():
            reason = f"no standard library at {prefix}/lib/python{major_minor}"
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
        reason = (f"not a final CPython 3 release with its headers ({header} is missing "
                  f"or names another version)")
    return reason


def refused_interpreters(search_path: list[tuple[Path, str]]) -> list[str]:
    """The Pythons on this machine a user may expect to be used, and why they are not.

    The interpreter running slugbuild and every ``python3``/``python3.N`` on PATH:
    each is named with the reason its prefix is refused (a distribution's
    Python in /usr, no headers...), or, when it would do but lies outside the
    search path, how to add it. For the ``python-version-unavailable`` error.
    """
    notes: dict[Path, str] = {}
    searched: set[Path] = set()  # prefixes the search path offers
    for directory, origin in search_path:
        for prefix in _candidate_prefixes(directory):
            examined = examine_prefix(prefix, origin)
            if isinstance(examined, LocalRuntime):
                searched.add(examined.prefix)
            elif origin != "pyenv":  # named explicitly (or running): say why not
                notes.setdefault(prefix.resolve(), f"{prefix} ({origin}) refused: {examined}")
    binaries = [Path(sys.executable)]
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        try:
            names = sorted(os.listdir(entry or "."))
        except OSError:
            continue
        binaries += [Path(entry) / n for n in names if n == "python3" or _PYTHON_BIN.match(n)]
    for binary in binaries:
        try:
            real = binary.resolve(strict=True)
        except (OSError, RuntimeError):
            continue
        prefix = real.parent.parent
        if prefix in searched or prefix in notes or "shims" in real.parts:
            continue  # offered (or refused) with the search path; pyenv's shims are not Pythons
        examined = examine_prefix(prefix, "PATH")
        if isinstance(examined, LocalRuntime):
            notes[prefix] = (f"{binary} (Python {examined.version}) is not searched: add "
                             f"{prefix} to SLUGBUILD_PYTHON_PATH")
        else:
            named = _PYTHON_BIN.match(real.name)
            version = f" (Python {named.group(1)})" if named else ""
            notes[prefix] = f"{binary}{version} refused: {examined}"
    return list(notes.values())


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
