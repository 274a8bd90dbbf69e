"""Packages built from source at install time, and the environment they were built in.

A wheel from an index is unpacked: no package code runs, and the layer key
(dependencies.layer_key) decides its bytes. An sdist, a local package or a version
control reference is BUILT: its setup.py or PEP 517 backend runs and may read any
variable of its environment (CFLAGS, a variable its setup.py reads, a config var of
the app, an export of an earlier buildpack). Such a build must never be reused by a
build whose environment differs, or one app's environment decides another's slug:

- the dependency layer records, when anything in it was built from source (or it
  was installed with an export that takes over the installer's processes:
  ``steers_processes``), the SHA-256 of what the app puts in the installers'
  environment (``build_env_sha256``);
  a layer recorded with another one is not reused (dependencies.find_or_install),
  and the layer built instead is keyed by the layer key plus this hash;
- the installers' caches of wheels they built (uv's ``sdists-v*`` bucket, pip's
  ``wheels``) are kept per build environment (``cache_view``); everything else in
  them (downloads, unpacked wheels, index pages) stays shared by every app.

What the hash covers and what it leaves out: docs/cache.md ("Packages built from
source").
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from ..proc import exported_config

# The layer key input a layer built from source records.
BUILD_ENV_INPUT = "build_env_sha256"
# Where the installers' caches of built wheels live, per build environment.
BUILT_WHEELS_DIR = "built-wheels"
# Cache buckets that hold wheels an installer built from source.
BUILT_BUCKETS = {"uv": re.compile(r"sdists-v\d+"), "pip": re.compile(r"wheels")}
# Variables that turn an installer's cache off (a config var or a buildpack export):
# a package built then leaves no wheel in the partition ``from_source`` reads.
CACHE_DISABLING = ("PIP_NO_CACHE_DIR", "UV_NO_CACHE")
# Lines pip ("Building wheel for x", "Created wheel for x") and uv ("Built x") print
# when they build a package from source.
_BUILD_LINE = re.compile(r"\s*(Building wheel for |Created wheel for |Built )")
# In an install's scratch directory: its output showed a build from source.
BUILT_MARKER = "built-from-source"
# In an install's scratch directory: its cache views (``job_cache_dir``).
JOB_VIEWS = "installer-caches"


def build_env_sha256(config_vars: Mapping[str, str], exports: Mapping[str, str],
                     build_dir: Path | None = None) -> str:
    """SHA-256 of what an app puts in the environment of the builds its install runs:
    its exported config vars and what earlier buildpacks exported, the build
    directory they name (a new one each build: the Aptfile's and buildpacks'
    ``$BUILD_DIR/...`` paths) written as ``$BUILD_DIR``. The host's own environment
    and slugbuild's per-build settings (temporary and cache paths) are left out: see
    docs/cache.md."""
    exported = dict(exports)
    if build_dir is not None:
        exported = {name: value.replace(str(build_dir), "$BUILD_DIR")
                    for name, value in exported.items()}
    seen = {"config": dict(exported_config(config_vars)), "exports": exported}
    return hashlib.sha256(json.dumps(seen, sort_keys=True).encode()).hexdigest()


# Exports that take over every process an install starts, a wheel's unpacking too (not
# only a build from source): the dynamic loader's variables (LD_PRELOAD, LD_AUDIT,
# LD_LIBRARY_PATH, ...) and the rest of what glibc ignores for setuid programs for that
# reason (its UNSECURE_ENVVARS; TMPDIR aside, which slugbuild sets for each install).
# PATH is not one: the installers and the interpreter they run are started by absolute
# path, and installing a wheel starts no program by name.
PROCESS_STEERING = frozenset({
    "GCONV_PATH", "GETCONF_DIR", "HOSTALIASES", "LOCALDOMAIN", "LOCPATH", "MALLOC_TRACE",
    "NIS_PATH", "NLSPATH", "RESOLV_HOST_CONF", "RES_OPTIONS", "TZDIR"})


def steers_processes(exports: Mapping[str, str]) -> bool:
    """Whether ``exports`` hold a variable that takes over the installer's processes,
    or chooses what they fetch (a ``UV_``/``PIP_`` setting: ``UV_FIND_LINKS``,
    ``UV_INDEX``, which the layer key's config vars do not name): a layer installed
    with one, even of wheels only, records its build environment
    (``build_env_sha256``), so no build without the same exports reuses it."""
    return any(name.startswith(("LD_", "UV_", "PIP_")) or name in PROCESS_STEERING
               for name in exports)


def built_elsewhere(manifest: Mapping[str, Any], env_sha256: str) -> bool:
    """Whether a dependency layer was built from source in another build environment
    (its reuse would hand this build another environment's build output)."""
    inputs = manifest.get("inputs")
    recorded = inputs.get(BUILD_ENV_INPUT) if isinstance(inputs, dict) else None
    return recorded is not None and recorded != env_sha256


def env_keyed(inputs: dict[str, Any], env_sha256: str) -> tuple[str, dict[str, Any]]:
    """The key and inputs of the layer an environment gets when the layer key's own
    holds one built from source in another environment: both layers stay cached."""
    keyed = {**inputs, BUILD_ENV_INPUT: env_sha256}
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest(), keyed


def env_scoped_key(key: str, manifest: Mapping[str, Any]) -> str:
    """``key`` for what is recorded about a dependency layer's contents (the entry-point
    check's passes, kept locally and in a cache registry): a layer built from source
    holds its build environment's output, so the same layer key names other files in
    another environment (another cache, another runner): the key plus that
    environment's hash. A wheel-only layer's key is its own (shared across apps)."""
    inputs = manifest.get("inputs")
    recorded = inputs.get(BUILD_ENV_INPUT) if isinstance(inputs, dict) else None
    if not isinstance(recorded, str):
        return key
    return hashlib.sha256(f"{key}\0{BUILD_ENV_INPUT}={recorded}".encode()).hexdigest()


def partition(cache_root: Path, tool: str, env_sha256: str) -> Path:
    """The directory of ``tool``'s built wheels for one build environment."""
    return cache_root / BUILT_WHEELS_DIR / tool / env_sha256


def cache_view(shared: Path, built: Path, view: Path, tool: str) -> Path:
    """A cache directory for one install: each bucket of the ``shared`` cache as a
    symlink, except the buckets of built wheels, which are those of ``built`` (the
    build environment's own). Made once per install; ``adopt`` after it."""
    pattern = BUILT_BUCKETS[tool]
    if view.is_dir():
        return view
    view.mkdir(parents=True)
    for source, wanted in ((shared, False), (built, True)):
        try:
            entries = os.listdir(source)
        except OSError:
            continue
        for entry in entries:
            if bool(pattern.fullmatch(entry)) == wanted and (source / entry).is_dir():
                os.symlink(source / entry, view / entry)
    return view


def built_buckets(cache: Path, tool: str) -> list[str]:
    """The buckets of built wheels in ``cache`` (a shared cache holds them when a run
    without a view filled it: ``slugbuild lock``'s, a resolution of version ranges)."""
    try:
        return sorted(entry for entry in os.listdir(cache) if BUILT_BUCKETS[tool].fullmatch(entry))
    except OSError:
        return []


def adopt(view: Path, shared: Path, built: Path, tool: str) -> None:
    """Move the buckets the installer created in ``view`` (the cache had none yet)
    to where the next install finds them; one another build moved first is kept."""
    pattern = BUILT_BUCKETS[tool]
    try:
        entries = os.listdir(view)
    except OSError:
        return
    for entry in entries:
        path = view / entry
        if path.is_symlink() or not path.is_dir() or entry.startswith("."):
            continue
        target = (built if pattern.fullmatch(entry) else shared) / entry
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(path, target)
        except OSError:
            pass  # there already: the installer made its copy for this install only


def built_projects(built: Path, tool: str) -> set[tuple[str, str]]:
    """(canonical name, version) of each wheel in a build environment's partition."""
    found: set[tuple[str, str]] = set()
    if tool == "pip":
        for wheel in built.glob("wheels/**/*.whl"):
            parts = wheel.name.split("-")
            if len(parts) >= 5:
                found.add((str(canonicalize_name(parts[0])), parts[1]))
        return found
    # uv: sdists-v*/pypi/<name>/<version>/ and sdists-v*/index/<index>/<name>/<version>/
    for pattern in ("sdists-v*/pypi/*/*", "sdists-v*/index/*/*/*"):
        for version in built.glob(pattern):
            found.add((str(canonicalize_name(version.parent.name)), version.name))
    return found


def installed_from_source(site_packages: Path, built: set[tuple[str, str]]) -> bool:
    """Whether a distribution in ``site_packages`` was built at install time: one
    from a direct reference that is not a wheel (a local directory, a version control
    checkout, an sdist URL), or one a built wheel of this environment matches."""
    for dist_info in site_packages.glob("*.dist-info"):
        name, _, version = dist_info.name[:-len(".dist-info")].partition("-")
        if (str(canonicalize_name(name)), version) in built:
            return True
        try:
            direct = json.loads((dist_info / "direct_url.json").read_text())
        except FileNotFoundError:
            continue
        except (OSError, ValueError, RecursionError):
            return True  # unreadable: counted as built, the safe side
        if not isinstance(direct, dict) or "archive_info" not in direct or not str(
                direct.get("url", "")).endswith(".whl"):
            return True
    return False


def shared_cache(cache_root: Path, tool: str) -> Path:
    """The installer's cache every app shares (Cache.pip_cache for pip)."""
    return cache_root / tool


def job_cache_dir(cache_root: Path, scratch: Path, tool: str, env_sha256: str) -> Path:
    """The cache directory an install in ``scratch`` gives ``tool`` (``cache_view``)."""
    return cache_view(shared_cache(cache_root, tool), partition(cache_root, tool, env_sha256),
                      scratch / JOB_VIEWS / tool, tool)


def adopt_job_caches(cache_root: Path, scratch: Path, env_sha256: str) -> None:
    """``adopt`` for each installer cache view an install in ``scratch`` made."""
    for tool in BUILT_BUCKETS:
        adopt(scratch / JOB_VIEWS / tool, shared_cache(cache_root, tool),
              partition(cache_root, tool, env_sha256), tool)


def cache_kept(env: Mapping[str, str]) -> dict[str, str]:
    """An install's environment without the variables that turn the installers' caches
    off: slugbuild's cache is its own (no app fills a user's disk), and a build from
    source that caches nothing would go unseen by ``from_source``."""
    return {k: v for k, v in env.items() if k not in CACHE_DISABLING}


def note_built(scratch: Path) -> None:
    """Mark an install in ``scratch`` as having built from source."""
    (scratch / BUILT_MARKER).touch()


def note_builds(scratch: Path, output: str | None) -> None:
    """Mark an install in ``scratch`` as having built from source when the installer's
    ``output`` says so: seen by ``from_source`` even when no built wheel was cached
    (pip's ephemeral cache for a wheel it does not keep, a cache turned off)."""
    if output and any(_BUILD_LINE.match(line) for line in output.splitlines()):
        note_built(scratch)


def from_source(scratch: Path, site_packages: Path) -> bool:
    """Whether the install into ``site_packages``, made with the cache views of an
    install in ``scratch`` (``job_cache_dir``), built anything from source: its
    output said so (``note_builds``), a built wheel of it is cached, or a
    distribution came from a direct reference that is not a wheel."""
    if (scratch / BUILT_MARKER).exists():
        return True
    built: set[tuple[str, str]] = set()
    for tool in BUILT_BUCKETS:
        built |= built_projects(scratch / JOB_VIEWS / tool, tool)
    return installed_from_source(site_packages, built)
