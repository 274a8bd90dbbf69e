"""Dependency layer: the app's packages installed into the slug's runtime.

The layer is what an install adds to ``.heroku/python`` (site-packages and
console scripts). It is cached under a key made of exactly what determines
it: runtime version and platform, installer and its version, the index
settings, and the content of every requirements file the install reads. A
warm build with the same key restores it; any change builds a fresh layer
from the bare runtime, so packages removed from the requirements are gone.
Installer download caches are kept across keys.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from . import errors, relocate
from .cache import Cache, Layer
from .log import Reporter
from .proc import ToolFailed, clean_env, exported_config, run_tool

DEFAULT_INDEX_URL = "https://pypi.org/simple"
# Config vars with this prefix steer the installer, so they are part of the
# key (hashed: index URLs may hold credentials).
INSTALLER_CONFIG_PREFIX = "PIP_"
DEPENDENCY_LAYER_FORMAT = 1

_INCLUDE = re.compile(
    r"^\s*(?:(?P<short>-[rc])\s*|(?P<long>--requirement|--constraint)(?:\s*=\s*|\s+))"
    r"(?P<path>[^\s#]+)"
)


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
    restored: bool
    packages: tuple[Package, ...]
    files: tuple[str, ...]  # requirements files the key covers, relative to the app
    lock_checksum: str


class Installer(Protocol):
    """Installs an app's requirements into a runtime prefix."""

    name: str

    def version(self) -> str: ...

    def install(self, python: Path, app_dir: Path, lock_file: str, config_vars: dict,
                reporter: Reporter, cache: Cache) -> None: ...


class PipInstaller:
    """pip from slugbuild's own environment, run against the slug's interpreter.

    pip's ``--python`` option runs pip's code under the target interpreter, so
    the slug never needs pip inside it. Machine configuration is shut out:
    PIP_CONFIG_FILE is os.devnull (no pip.conf is read), every PIP_* host
    variable is dropped, and the index is given explicitly.
    """

    name = "pip"

    def version(self) -> str:
        from importlib.metadata import version

        return version("pip")

    def command(self, python: Path, lock_file: str, config_vars: dict, cache: Cache) -> list[str]:
        index = config_vars.get("PIP_INDEX_URL") or DEFAULT_INDEX_URL
        argv = [
            sys.executable, "-m", "pip", "--python", str(python), "install",
            "--no-input", "--disable-pip-version-check", "--no-compile",
            "--no-warn-script-location", "--progress-bar", "off", "--root-user-action", "ignore",
            "--cache-dir", str(cache.pip_cache),
            "--index-url", index,
        ]
        for extra in (config_vars.get("PIP_EXTRA_INDEX_URL") or "").split():
            argv += ["--extra-index-url", extra]
        cert = trusted_ca_bundle()
        if cert:
            argv += ["--cert", cert]
        argv += ["-r", lock_file]
        return argv

    def install(self, python: Path, app_dir: Path, lock_file: str, config_vars: dict,
                reporter: Reporter, cache: Cache) -> None:
        argv = self.command(python, lock_file, config_vars, cache)
        # Build config vars reach pip (as on Heroku); the machine's pip config never does.
        env = clean_env({**exported_config(config_vars), "PIP_CONFIG_FILE": os.devnull})
        try:
            run_tool(argv, reporter, env, cwd=app_dir)
        except ToolFailed as failed:
            shown = ["pip", "install", "-r", lock_file]
            raise errors.DEPENDENCY_INSTALL_FAILED.error(
                command=shlex.join(shown),
                exit_code=failed.exit_code,
                lock_file=lock_file,
                index=_redact(config_vars.get("PIP_INDEX_URL") or DEFAULT_INDEX_URL),
                output=failed.tail,
            ) from failed


def trusted_ca_bundle() -> str | None:
    """The CA bundle installers should trust: SSL_CERT_FILE, else the system's."""
    for variable in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        explicit = os.environ.get(variable)
        if explicit and os.path.isfile(explicit):
            return explicit
    import ssl

    default = ssl.get_default_verify_paths().cafile
    system_bundles = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")
    for candidate in (default, *system_bundles):
        if candidate and os.path.isfile(candidate):
            return candidate
    return None


def _redact(url: str) -> str:
    return re.sub(r"//[^/@]+@", "//***@", url)


def requirements_files(app_dir: Path, lock_file: str) -> list[str]:
    """``lock_file`` and every file it reaches through -r/-c, relative to the app."""
    app_root = app_dir.resolve()
    seen: list[str] = []
    pending = [(lock_file, None, 0)]
    while pending:
        rel, referrer, line_no = pending.pop(0)
        path = (app_root / rel).resolve()
        if not path.is_relative_to(app_root):
            raise errors.REQUIREMENTS_OUTSIDE_APP.error(referrer=referrer, line=line_no, target=rel)
        if not path.is_file():
            raise errors.REQUIREMENTS_FILE_MISSING.error(
                referrer=referrer or "the build", line=line_no, target=rel
            )
        rel = path.relative_to(app_root).as_posix()
        if rel in seen:
            continue
        seen.append(rel)
        text = path.read_text(errors="replace")
        for number, line in enumerate(text.splitlines(), start=1):
            match = _INCLUDE.match(line)
            if match and "://" not in match.group("path"):
                target = (path.parent / match.group("path")).resolve()
                target_rel = os.path.relpath(target, app_root)
                pending.append((target_rel, rel, number))
    return seen


def layer_key(
    app_dir: Path, files: list[str], runtime_layer: Layer, installer: Installer,
    config_vars: dict,
) -> tuple[str, dict]:
    """The dependency layer key and the (secret-free) inputs behind it."""
    index_settings = json.dumps(
        {k: v for k, v in sorted(exported_config(config_vars).items())
         if k.startswith(INSTALLER_CONFIG_PREFIX)}
    )
    inputs = {
        "runtime": runtime_layer.manifest["name"],
        "runtime_key": runtime_layer.manifest["key"],
        "installer": f"{installer.name} {installer.version()}",
        "installer_config_sha256": hashlib.sha256(index_settings.encode()).hexdigest(),
        "files": {rel: _sha256_file(app_dir / rel) for rel in files},
        "layer_format": DEPENDENCY_LAYER_FORMAT,
    }
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    return key, inputs


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def install_dependencies(
    *,
    app_dir: Path,
    lock_file: str,
    python_home: Path,
    python_name: str,
    runtime_layer: Layer,
    installer: Installer,
    config_vars: dict,
    cache: Cache,
    reporter: Reporter,
) -> DependencyLayer:
    """Fill ``python_home`` (a fresh copy of the runtime) with the app's packages."""
    files = requirements_files(app_dir, lock_file)
    key, inputs = layer_key(app_dir, files, runtime_layer, installer, config_vars)
    name = key[:24]
    lock_checksum = "SHA256:" + _sha256_file(app_dir / lock_file)
    layer = cache.lookup("layers", name, key)
    if layer is None:
        with cache.lock("layers", name):
            layer = cache.lookup("layers", name, key)
            if layer is None:
                reporter.step(f"Installing requirements with {installer.name} "
                              f"({installer.version()})")
                _install_fresh(app_dir, lock_file, python_home, python_name, runtime_layer,
                               installer, config_vars, cache, reporter, key, name, inputs)
                packages = installed_packages(python_home, python_name)
                reporter.detail(f"Installed {len(packages)} packages; cached as layer {name[:12]}")
                return DependencyLayer(key, False, tuple(packages), tuple(files), lock_checksum)
    reporter.step(f"Restoring dependencies from cache (layer {name[:12]}, "
                  f"{lock_file} unchanged)")
    shutil.copytree(layer.tree, python_home, symlinks=True, dirs_exist_ok=True)
    packages = installed_packages(python_home, python_name)
    return DependencyLayer(key, True, tuple(packages), tuple(files), lock_checksum)


def _install_fresh(app_dir, lock_file, python_home, python_name, runtime_layer, installer,
                   config_vars, cache, reporter, key, name, inputs) -> None:
    python = python_home / "bin" / python_name
    installer.install(python, app_dir, lock_file, config_vars, reporter, cache)
    site_packages = python_home / "lib" / python_name / "site-packages"
    rewritten = relocate.make_scripts_relocatable(python_home / "bin", python_name)
    relocate.refresh_records(site_packages, rewritten)
    try:
        relocate.compile_bytecode(
            python, site_packages,
            f"{relocate.SLUG_PYTHON_HOME}/lib/{python_name}/site-packages",
            clean_env(),
        )
    except subprocess.CalledProcessError:
        pass  # A package shipping a file with bad syntax must not fail the build.
    with cache.new_layer("layers", name, key, inputs) as tree:
        _copy_added(python_home, runtime_layer.tree, tree)


def _copy_added(built: Path, base: Path, layer_tree: Path) -> None:
    """Copy into ``layer_tree`` every path of ``built`` that ``base`` lacks."""
    for dirpath, dirnames, filenames in os.walk(built):
        rel_dir = Path(dirpath).relative_to(built)
        dirnames.sort()
        for name in [*dirnames, *sorted(filenames)]:
            source = Path(dirpath) / name
            rel = rel_dir / name
            if os.path.lexists(base / rel):
                continue
            target = layer_tree / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_symlink():
                target.symlink_to(os.readlink(source))
            elif source.is_dir():
                shutil.copytree(source, target, symlinks=True)
                dirnames.remove(name)  # copied whole; do not walk into it
            else:
                shutil.copy2(source, target)


def installed_packages(python_home: Path, python_name: str) -> list[Package]:
    """Name and version of every distribution in site-packages, sorted by name."""
    site_packages = python_home / "lib" / python_name / "site-packages"
    packages = []
    for meta in sorted(site_packages.glob("*.dist-info/METADATA")):
        fields = {}
        for line in meta.read_text(errors="replace").splitlines():
            if not line.strip():
                break
            if ":" in line:
                key, value = line.split(":", 1)
                fields.setdefault(key.strip().lower(), value.strip())
        if "name" in fields and "version" in fields:
            packages.append(Package(fields["name"], fields["version"]))
    return sorted(packages, key=lambda p: re.sub(r"[-_.]+", "-", p.name).lower())


def has_package(packages: tuple[Package, ...], name: str) -> bool:
    wanted = re.sub(r"[-_.]+", "-", name).lower()
    return any(re.sub(r"[-_.]+", "-", p.name).lower() == wanted for p in packages)

