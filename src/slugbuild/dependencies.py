"""Dependency layer: the app's packages, installed for the slug's runtime.

The layer is what an install adds to ``.heroku/python`` (site-packages and
console scripts). It is cached under a key made of exactly what determines
it: runtime version and platform, installer and its version, the index
settings, and the content of every requirements file the install reads. A
warm build with the same key hard-links it in; any change builds a fresh
layer, never on top of an older dependency layer, so packages removed from
the requirements are gone. Installer download caches are kept across keys.

A fresh layer is built one of two ways:
- apart (the usual way): installed with an interpreter of the runtime (the one
  its layer is copied from, or the cached layer's) into an empty tree that
  becomes the layer. It needs nothing of the build directory, so a cold build
  runs it while the runtime layer is being prepared.
- onto the build: when a pre_compile hook or an earlier buildpack runs first,
  the install goes onto the build's runtime prefix, so that it sees what they
  put there (and any requirements file they changed), and only the paths it
  added become the layer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

from . import errors, relocate
from .cache import Cache, Layer, file_sha256, link_or_copy, write_json_atomic
from .installers import Installer, InstallJob, installer_for
from .installers.pip import (
    DEFAULT_INDEX_URL,
    PipInstaller,
    requirements_files,
    trusted_ca_bundle,
)
from .log import Reporter
from .proc import clean_env, exported_config

__all__ = [
    "DEFAULT_INDEX_URL", "DependencyLayer", "Installer", "Package", "PipInstaller", "Prefetch",
    "installer_for", "link_dependency_layer", "prepare_dependency_layer", "requirements_files",
    "trusted_ca_bundle",
]

# Config vars with these prefixes steer the installers, so they are part of the
# key (hashed: index URLs may hold credentials).
INSTALLER_CONFIG_PREFIXES = ("PIP_", "UV_")
DEPENDENCY_LAYER_FORMAT = 2


@dataclass(frozen=True)
class Package:
    name: str
    version: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version}


@dataclass(frozen=True)
class DependencyLayer:
    """The outcome of the dependency stage."""

    key: str
    packages: tuple[Package, ...]
    files: tuple[str, ...]  # files the key covers, relative to the app
    lock_checksum: str
    installer: str = "pip"
    installer_version: str = ""
    layer: Layer | None = None  # the cached layer whose files are linked in
    restored: bool = False  # the layer was in the cache before this build
    built_apart_at: Path | None = None  # the tree a fresh layer was installed in, apart


def layer_key(
    app_dir: Path, files: list[str], runtime: dict, installer: Installer,
    config_vars: dict, constraints: str | None = None,
) -> tuple[str, dict]:
    """The dependency layer key and the (secret-free) inputs behind it.

    ``runtime`` is the runtime layer's manifest (or what it will be: name,
    key, inputs). Runtime (version, platform and the prefix it came from), package manager
    and the versions of every tool it runs, installer config vars, the content
    of every file the install reads, and the constraints of --constraints-from.
    """
    index_settings = json.dumps(
        {k: v for k, v in sorted(exported_config(config_vars).items())
         if k.startswith(INSTALLER_CONFIG_PREFIXES)}
    )
    inputs = {
        "runtime": runtime["name"],
        "runtime_key": runtime["key"],
        "installer": f"{installer.name} {installer.version()}",
        "installer_config_sha256": hashlib.sha256(index_settings.encode()).hexdigest(),
        "files": {rel: file_sha256(app_dir / rel) for rel in files},
        "layer_format": DEPENDENCY_LAYER_FORMAT,
    }
    if constraints is not None:
        inputs["constraints_sha256"] = hashlib.sha256(constraints.encode()).hexdigest()
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    return key, inputs


def rebuild_reasons(previous: dict, current: dict) -> list[str]:
    """Why a layer keyed by ``current`` cannot reuse the one keyed by ``previous``."""
    reasons = []
    old_files, new_files = previous.get("files", {}), current.get("files", {})
    for rel in sorted(set(old_files) | set(new_files)):
        if rel not in old_files:
            reasons.append(f"{rel} is new")
        elif rel not in new_files:
            reasons.append(f"{rel} is no longer read")
        elif old_files[rel] != new_files[rel]:
            reasons.append(f"The contents of {rel} changed")
    if previous.get("runtime") != current.get("runtime"):
        reasons.append(f"The Python runtime changed ({previous.get('runtime')} -> "
                       f"{current.get('runtime')})")
    elif previous.get("runtime_key") != current.get("runtime_key"):
        reasons.append("The Python runtime was rebuilt (its interpreter or platform changed)")
    if previous.get("installer") != current.get("installer"):
        reasons.append(f"The package manager changed ({previous.get('installer')} -> "
                       f"{current.get('installer')})")
    if previous.get("installer_config_sha256") != current.get("installer_config_sha256"):
        reasons.append("The installer config vars (PIP_*, UV_*) changed")
    if previous.get("constraints_sha256") != current.get("constraints_sha256"):
        reasons.append("The constraints from --constraints-from changed")
    if previous.get("layer_format") != current.get("layer_format"):
        reasons.append("slugbuild changed how dependency layers are made")
    return reasons


def _history_path(cache: Cache, source_dir: Path) -> Path:
    """Where the inputs of the last layer built for this app directory are kept."""
    digest = hashlib.sha256(str(Path(source_dir).absolute()).encode()).hexdigest()[:24]
    return cache.root / "history" / f"{digest}.json"


def _explain_rebuild(cache: Cache, source_dir: Path | None, inputs: dict,
                     reporter: Reporter) -> None:
    if source_dir is None:
        return
    try:
        previous = json.loads(_history_path(cache, source_dir).read_text())
    except (OSError, ValueError):
        return
    reasons = rebuild_reasons(previous, inputs)
    if reasons:
        reporter.step("Discarding cache since:")
        for reason in reasons:
            reporter.detail(f"- {reason}")


def _remember(cache: Cache, source_dir: Path | None, inputs: dict) -> None:
    if source_dir is None:
        return
    path = _history_path(cache, source_dir)
    path.parent.mkdir(exist_ok=True)
    write_json_atomic(path, inputs)


def constraints_from_slug_json(path: Path) -> str:
    """``name==version`` lines for every package an earlier slug.json records.

    slug.json is untrusted input (it may come with a slug from anywhere) and the
    result is a requirements file, where a line can also be an option
    (``--extra-index-url``, ``-r /etc/shadow``). So every name must be a PEP 508
    project name and every version a PEP 440 version, and nothing else is written.
    """
    path = Path(path)
    try:
        if path.is_char_device() or path.is_block_device():  # /dev/zero never ends
            raise errors.CONSTRAINTS_UNUSABLE.error(path=path, problem="a device, not a file")
        if path.stat().st_size > 16 * 1024 * 1024:
            raise errors.CONSTRAINTS_UNUSABLE.error(
                path=path, problem="it is larger than any slug.json (16 MB)")
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise errors.CONSTRAINTS_UNUSABLE.error(path=path, problem="no such file") from None
    except (OSError, ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else exc
        raise errors.CONSTRAINTS_UNUSABLE.error(
            path=path, problem=f"not a readable JSON file ({reason})") from None
    packages = data.get("packages") if isinstance(data, dict) else None
    if not isinstance(packages, list) or not all(
        isinstance(p, dict) and isinstance(p.get("name"), str)
        and isinstance(p.get("version"), str) for p in packages
    ):
        raise errors.CONSTRAINTS_UNUSABLE.error(
            path=path, problem="it has no \"packages\" list of {name, version} entries, "
                               "so it is not a slug.json")
    lines = sorted({_constraint_line(path, p["name"], p["version"]) for p in packages})
    return "".join(line + "\n" for line in lines)


_PROJECT_NAME = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)


def _constraint_line(path: Path, name: str, version: str) -> str:
    """``name==version``, or CONSTRAINTS_UNUSABLE when either is not what PEPs allow."""
    from packaging.version import InvalidVersion, Version

    if len(name) > 200 or not _PROJECT_NAME.match(name):
        raise errors.CONSTRAINTS_UNUSABLE.error(
            path=path, problem=f"the package name {name[:100]!r} is not a valid project "
                               f"name (PEP 508)")
    try:
        parsed = Version(version) if len(version) <= 100 else None
    except InvalidVersion:
        parsed = None
    if parsed is None or version.strip() != version or "\n" in version:
        raise errors.CONSTRAINTS_UNUSABLE.error(
            path=path, problem=f"the version {version[:100]!r} of {name} is not a valid "
                               f"version (PEP 440)")
    return f"{name}=={version}"


def prepare_dependency_layer(
    *,
    app_dir: Path,
    lock_file: str,
    python: Path,
    python_name: str,
    runtime: dict,
    installer: Installer,
    config_vars: dict,
    cache: Cache,
    reporter: Reporter,
    source_dir: Path | None = None,
    constraints: str | None = None,
    prefetch: Prefetch | None = None,
    onto: Path | None = None,
) -> DependencyLayer:
    """The cached dependency layer for this app and runtime, installed if missing.

    ``python`` is an interpreter of the runtime whose manifest is ``runtime``.
    A fresh layer is installed apart, into its own tree, unless ``onto`` (the
    build's runtime prefix) is given: then it is installed there and the paths
    the install added become the layer. The result's ``packages`` are left
    empty: ``link_dependency_layer`` lists them once the layer is in place.

    ``source_dir`` (the user's app directory) lets the log say why a cached
    layer was not reused; ``constraints`` (from an earlier slug.json) pins
    every package to the version that build installed. A ``prefetch`` still
    downloading is waited for only if there is something to install.
    """
    files = installer.key_files(app_dir, lock_file, config_vars)
    key, inputs = layer_key(app_dir, files, runtime, installer, config_vars, constraints)
    name = key[:24]
    outcome = functools.partial(
        DependencyLayer, key, (), tuple(files), "SHA256:" + file_sha256(app_dir / lock_file),
        installer.name, installer.version())

    layer = cache.lookup("layers", name, key)
    if layer is not None and cache.check_restored(layer) is None:
        # Its files are uv's (hard links), shared with every layer holding the same
        # package: another app's build may have edited one in place.
        reporter.warn(f"A file of the cached dependency layer {name[:12]} was changed in "
                      f"place since it was made; the layer was discarded and is installed "
                      f"again.")
        layer = None
    if layer is None:
        with cache.lock("layers", name):
            layer = cache.lookup("layers", name, key)
            if layer is None:
                _explain_rebuild(cache, source_dir, inputs, reporter)
                if prefetch is not None:
                    prefetch.wait()
                reporter.step(f"Installing requirements with {installer.name} "
                              f"({installer.version()})")
                scratch = cache.scratch_dir("install")
                try:
                    job = InstallJob(
                        python=python, python_version=runtime["inputs"]["version"],
                        app_dir=app_dir, lock_file=lock_file, config_vars=config_vars, cache=cache,
                        reporter=reporter, scratch=scratch,
                        constraints=_write_constraints(scratch, constraints),
                    )
                    layer, apart_at = _install_fresh(job, installer, python_name, key, name,
                                                     inputs, onto)
                finally:
                    shutil.rmtree(scratch, ignore_errors=True)
                _remember(cache, source_dir, inputs)
                return outcome(layer, False, apart_at)
    _remember(cache, source_dir, inputs)
    return outcome(layer, True)


def link_dependency_layer(deps: DependencyLayer, python_home: Path, python_name: str,
                          cache: Cache, reporter: Reporter, lock_file: str) -> DependencyLayer:
    """Put the layer's files into the build's runtime prefix (as hard links), unless
    it was installed there, and list the packages the prefix then holds."""
    assert deps.layer is not None
    name = deps.key[:24]
    if deps.restored:
        reporter.step(f"Restoring dependencies from cache (layer {name[:12]}, "
                      f"{lock_file} unchanged)")
    if deps.restored or deps.built_apart_at is not None:
        cache.restore(deps.layer, python_home)
    packages = tuple(installed_packages(python_home, python_name))
    if not deps.restored:
        reporter.detail(f"Installed {len(packages)} packages; cached as layer {name[:12]}")
    return dataclasses.replace(deps, packages=packages)


class Prefetch:
    """An installer downloading, in the background, what the install will need.

    Started before the runtime layer is prepared (a cold build), so the
    download overlaps that work; the install then reads the installer's cache.
    Only installers with a ``prefetch`` method take part (uv, for pinned
    requirements); anything going wrong here is left for the install to report.
    """

    def __init__(self, process: subprocess.Popen, scratch: Path) -> None:
        self.process = process
        self.scratch = scratch

    @classmethod
    def start(cls, *, app_dir: Path, lock_file: str, package_manager: str,
              config_vars: dict, cache: Cache, reporter: Reporter, python_version: str,
              scratch: Path, constraints: str | None = None) -> Prefetch | None:
        """Start it in ``scratch`` (a new directory, the caller's to remove)."""
        installer = installer_for(package_manager)
        prefetch = getattr(installer, "prefetch", None)
        if prefetch is None:
            return None
        scratch.mkdir()
        process = None
        try:
            installer.key_files(app_dir, lock_file, config_vars)  # picks the tool
            job = InstallJob(python=Path(sys.executable), python_version=python_version,
                             app_dir=app_dir, lock_file=lock_file,
                             config_vars=config_vars, cache=cache, reporter=reporter,
                             scratch=scratch,
                             constraints=_write_constraints(scratch, constraints))
            process = prefetch(job, python_version)
        except (OSError, errors.SlugbuildError):
            process = None
        return None if process is None else cls(process, scratch)

    def wait(self) -> None:
        """Let the download finish: the install is about to read its cache."""
        self.process.wait()

    def stop(self) -> None:
        """End it, killed with anything it started (a build backend) if still running."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _write_constraints(scratch: Path, constraints: str | None) -> Path | None:
    if constraints is None:
        return None
    path = scratch / "constraints.txt"
    path.write_text(constraints)
    return path


def _install_fresh(job: InstallJob, installer: Installer, python_name: str, key: str,
                   name: str, inputs: dict, onto: Path | None) -> tuple[Layer, Path | None]:
    """Install, make the result relocatable, compile it, and publish it as the layer.

    Apart (``onto`` None), the layer's own tree is the install's prefix; onto
    the build, what the install added there is hard-linked into the layer (the
    build directory keeps using the same files). Returns the layer and, when
    apart, the tree's path while it was being installed.
    """
    with job.cache.new_layer("layers", name, key, inputs) as tree:
        if onto is None:
            _install_and_compile(dataclasses.replace(job, prefix=tree), installer, tree,
                                 python_name)
            # uv's lock of an environment it installs into: not part of it.
            (tree / ".lock").unlink(missing_ok=True)
        else:
            # What is there before the install (the runtime, and anything a pre_compile
            # hook or an earlier buildpack put there) is not the installer's to cache.
            before = _relative_paths(onto)
            _install_and_compile(job, installer, onto, python_name)
            _link_added(onto, before, tree)
    layer = job.cache.lookup("layers", name, key)
    assert layer is not None
    return layer, (tree if onto is None else None)


def _install_and_compile(job: InstallJob, installer: Installer, home: Path,
                         python_name: str) -> None:
    """Install into ``home``, point its scripts and records at the slug, compile it."""
    installer.install(job)
    site_packages = home / "lib" / python_name / "site-packages"
    rewritten = []
    if (home / "bin").is_dir():
        rewritten += relocate.make_scripts_relocatable(home / "bin", python_name)
    rewritten += _point_direct_urls_at_slug(site_packages, job.app_dir)
    relocate.refresh_records(site_packages, rewritten)
    try:
        relocate.compile_bytecode(
            job.python, site_packages,
            f"{relocate.SLUG_PYTHON_HOME}/lib/{python_name}/site-packages",
            clean_env(),
        )
    except subprocess.CalledProcessError:
        pass  # A package shipping a file with bad syntax must not fail the build.


def _point_direct_urls_at_slug(site_packages: Path, app_dir: Path) -> list[Path]:
    """Local packages record where they were installed from (PEP 610 direct_url.json).

    That is the build directory; name the app's place in the slug (/app)
    instead, so the slug neither leaks nor depends on where it was built.
    """
    build_url = "file://" + str(app_dir)
    changed = []
    for path in sorted(site_packages.glob("*.dist-info/direct_url.json")):
        text = path.read_text()
        if build_url in text:
            fixed = text.replace(build_url, "file://" + relocate.SLUG_HOME)
            relocate.write_replacing(path, fixed.encode())
            changed.append(path)
    return changed


def _relative_paths(root: Path) -> set[str]:
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        found.update(os.path.normpath(os.path.join(rel_dir, n)) for n in dirnames + filenames)
    return found


def _link_added(built: Path, existing: set[str], layer_tree: Path) -> None:
    """Put into ``layer_tree`` every path of ``built`` not in ``existing``.

    Files are hard-linked (copied where a link is impossible), like a restore:
    the build's later steps are then checked against the layer the same way.
    """
    for dirpath, dirnames, filenames in os.walk(built):
        rel_dir = Path(dirpath).relative_to(built)
        dirnames.sort()
        for name in [*dirnames, *sorted(filenames)]:
            source = Path(dirpath) / name
            rel = rel_dir / name
            if str(rel) in existing:
                continue
            target = layer_tree / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_symlink():
                target.symlink_to(os.readlink(source))
            elif source.is_dir():
                shutil.copytree(source, target, symlinks=True, copy_function=link_or_copy)
                dirnames.remove(name)  # placed whole; do not walk into it
            else:
                link_or_copy(source, target)


def installed_packages(python_home: Path, python_name: str) -> list[Package]:
    """Name and version of every distribution in site-packages, sorted by name."""
    site_packages = python_home / "lib" / python_name / "site-packages"
    found = (package_from_metadata(meta.read_text(errors="replace"))
             for meta in sorted(site_packages.glob("*.dist-info/METADATA")))
    return sorted((p for p in found if p), key=lambda p: canonicalize_name(p.name))


def package_from_metadata(text: str) -> Package | None:
    """Name and version from the header of a METADATA file (None if either is missing)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break
        if ":" in line:
            key, value = line.split(":", 1)
            fields.setdefault(key.strip().lower(), value.strip())
    if "name" in fields and "version" in fields:
        return Package(fields["name"], fields["version"])
    return None


def has_package(packages: tuple[Package, ...], name: str) -> bool:
    wanted = canonicalize_name(name)
    return any(canonicalize_name(p.name) == wanted for p in packages)

