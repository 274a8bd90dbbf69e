"""The runtime layer: a trimmed, relocatable CPython prefix for ``.heroku/python``.

Whatever the source (sources.py), the prefix it provides goes through
``build_runtime_tree``: copied without the host's third-party packages, test
suites, static libpython, IDLE/tkinter and bytecode, made relocatable, its
stdlib compiled to timestamp-free pycs, checked to start from a different
path, and cached per version, platform and source identity.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .. import errors, relocate
from ..cache import Cache, Layer
from ..cache_registry import pull_layer
from ..log import Reporter
from ..platform_info import Platform
from ..proc import clean_env
from ..tree import walk_sorted
from .sources import LocalRuntime, RuntimeOffer

# Bump when the way a runtime layer is made changes, so old layers are not reused.
RUNTIME_LAYER_FORMAT = 3  # 3: files.json with digests (cache.INDEX_FORMAT 2)

# Paths (relative to lib/pythonX.Y) left out of the slug's runtime.
_STDLIB_EXCLUDES = {"test", "idlelib", "tkinter", "turtledemo", "site-packages"}
# Extension modules only the test suite (or tkinter, absent on servers) uses.
_DYNLOAD_EXCLUDES = ("_tkinter", "_test", "_xxtestfuzz", "xxlimited", "xxsubtype", "_ctypes_test")
_BIN_EXCLUDES = re.compile(r"^(idle|pip|2to3|easy_install|pydoc)|-gdb\.py$")


def runtime_key(offer: RuntimeOffer, platform: Platform) -> tuple[str, str, dict[str, Any]]:
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
                         reporter: Reporter | None = None, lazy: bool = False
                         ) -> Layer | None:
    """The runtime layer for ``offer`` if the cache has it intact (``lazy``: part-only
    as it may be, see ``Cache.lookup``).

    A layer whose files no longer match its files.json (a truncated or edited
    stdlib file, a lost execute bit) is discarded, with a warning, so the caller
    builds it again instead of shipping or running it.
    """
    name, key, _ = runtime_key(offer, platform)
    layer, problems = cache.lookup_verified("runtimes", name, key, lazy=lazy)
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
    if offer.host_prefix is not None:
        python = offer.host_prefix / "bin" / offer.python_name
        return python if python.is_file() else None
    return None


def pull_runtime_layer(cache: Cache, offer: RuntimeOffer, platform: Platform,
                       reporter: Reporter) -> Layer | None:
    """On a local miss, the runtime layer from the build's cache registry (None: it
    has none, or there is no registry), so the log can say where it came from
    before the step starts."""
    if cache.remote is None:
        return None
    name, key, _ = runtime_key(offer, platform)
    with cache.lock("runtimes", name):
        return cached_runtime_layer(cache, offer, platform, reporter) or pull_layer(
            cache, "runtimes", name, key, f"Python {offer.version} runtime layer",
            reporter=reporter)


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
    settle = getattr(offer.source, "settle", None)
    if settle is not None:  # a published layer (published.py): pulled again, never made
        layer = cached_runtime_layer(cache, offer, platform, reporter) \
            if settle(offer, cache, reporter) is not None else None
        if layer is None:
            raise errors.CACHE_LAYER_GONE.error(layer=name)
        return layer, True
    with cache.lock("runtimes", name):
        layer = cached_runtime_layer(cache, offer, platform, reporter)
        if layer:
            return layer, True
        layer = pull_layer(cache, "runtimes", name, key, f"Python {offer.version} runtime layer",
                           reporter=reporter)
        if layer:
            return layer, True
        scratch = cache.scratch_dir("runtime-source")
        try:
            runtime = offer.source.provide(offer, scratch, reporter)
            with reporter.working(f"preparing Python {offer.version}"):
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
        if errors.disk_full(exc):  # the disk's fault, not the runtime's
            raise errors.out_of_space(exc) from exc
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


def _trim_filter(runtime: LocalRuntime) -> Callable[[str, list[str]], set[str]]:
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
    for directory, dirnames, filenames in walk_sorted(tree):
        for name in dirnames + filenames:
            link = directory / name
            if not link.is_symlink():
                continue
            target = os.readlink(link)
            if target.startswith(old_prefix + "/"):
                inside = tree / target[len(old_prefix) + 1:]
                link.unlink()
                link.symlink_to(os.path.relpath(inside, link.parent))


def _check_runtime_starts(python: Path, runtime: LocalRuntime, env: dict[str, str]) -> None:
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
