"""Runtime layer: a trimmed, relocatable CPython prefix for ``.heroku/python``.

Runtime sources are small providers behind ``RuntimeSource``. The one here
finds local CPython installations: directories listed in
``SLUGBUILD_PYTHON_PATH``, pyenv's ``versions/``, and the interpreter running
slugbuild. A prefix is copied without the host's third-party packages, test
suites, static libpython, IDLE/tkinter and bytecode, made relocatable, its
stdlib compiled to timestamp-free pycs, checked to start from a different
path, and cached per version and platform.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from . import errors, relocate
from .cache import Cache, Layer
from .log import Reporter
from .platform_info import Platform
from .proc import clean_env

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


@dataclass(frozen=True)
class LocalRuntime:
    """One CPython installation found on this machine."""

    version: str  # "3.12.1"
    prefix: Path
    origin: str  # "pyenv", "SLUGBUILD_PYTHON_PATH", "running interpreter"

    @property
    def major_minor(self) -> str:
        return ".".join(self.version.split(".")[:2])

    @property
    def python_name(self) -> str:
        return f"python{self.major_minor}"


class RuntimeSource(Protocol):
    """Somewhere runtimes come from."""

    name: str

    def available(self) -> list[LocalRuntime]: ...


class LocalInterpreterSource:
    """CPython prefixes installed on this machine."""

    name = "local"

    def __init__(self, search_path: list[tuple[Path, str]] | None = None) -> None:
        self.search_path = search_path if search_path is not None else default_search_path()

    def available(self) -> list[LocalRuntime]:
        """One runtime per version; earlier search path entries win."""
        found: dict[str, LocalRuntime] = {}
        for directory, origin in self.search_path:
            for prefix in _candidate_prefixes(directory):
                runtime = inspect_prefix(prefix, origin)
                if runtime and runtime.version not in found:
                    found[runtime.version] = runtime
        return list(found.values())


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


def runtime_key(runtime: LocalRuntime, platform: Platform) -> tuple[str, str, dict]:
    """Layer name, key and the inputs that keyed it."""
    fingerprint = []
    for rel in (f"bin/{runtime.python_name}", f"lib/lib{runtime.python_name}.so.1.0"):
        path = runtime.prefix / rel
        if path.exists():
            st = path.stat()
            fingerprint.append(f"{rel}:{st.st_size}:{st.st_mtime_ns}")
    inputs = {
        "implementation": "cpython",
        "version": runtime.version,
        "platform": platform.key,
        "source": runtime.origin,
        "prefix_fingerprint": hashlib.sha256(
            (str(runtime.prefix) + "|" + "|".join(fingerprint)).encode()
        ).hexdigest(),
        "layer_format": RUNTIME_LAYER_FORMAT,
    }
    key = hashlib.sha256(repr(sorted(inputs.items())).encode()).hexdigest()
    name = f"cpython-{runtime.version}-{platform.key}-{key[:12]}"
    return name, key, inputs


def ensure_runtime_layer(
    cache: Cache, runtime: LocalRuntime, platform: Platform, reporter: Reporter
) -> tuple[Layer, bool]:
    """The cached runtime layer for ``runtime``, building it if needed.

    Returns the layer and whether it came from the cache.
    """
    name, key, inputs = runtime_key(runtime, platform)
    layer = cache.lookup("runtimes", name, key)
    if layer:
        return layer, True
    with cache.lock("runtimes", name):
        layer = cache.lookup("runtimes", name, key)
        if layer:
            return layer, True
        with reporter.working(f"Preparing Python {runtime.version}"):
            with cache.new_layer("runtimes", name, key, inputs) as tree:
                build_runtime_tree(runtime, tree)
        layer = cache.lookup("runtimes", name, key)
        assert layer is not None
        return layer, False


def build_runtime_tree(runtime: LocalRuntime, tree: Path) -> None:
    """Copy, trim, relocate, compile and check ``runtime`` into ``tree``."""
    shutil.copytree(runtime.prefix, tree, symlinks=True, dirs_exist_ok=True,
                    ignore=_trim_filter(runtime))
    (tree / "lib" / runtime.python_name / "site-packages").mkdir(exist_ok=True)
    old_prefix = str(runtime.prefix)
    try:
        relocate.fix_runpaths(tree, old_prefix)
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
    prefix_line, version_line = result.stdout.split()[:2]
    if Path(prefix_line).resolve() != python.parent.parent.resolve():
        raise errors.RUNTIME_RELOCATION_FAILED.error(
            detail=f"The copy of {runtime.prefix} still uses {prefix_line} as its prefix."
        )
    if version_line != runtime.version:
        raise errors.RUNTIME_RELOCATION_FAILED.error(
            detail=f"{runtime.prefix} reports Python {version_line}, expected {runtime.version}."
        )
