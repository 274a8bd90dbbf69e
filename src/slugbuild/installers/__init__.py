"""Installers: one small protocol, one implementation per package manager.

Every installer puts the packages an app's lock file names into the slug's
runtime prefix without putting itself there: pip and uv run from slugbuild's
own environment against the slug's interpreter, Pipenv and Poetry only export
their lock (from a tool cache) and uv installs the export. Adding a package
manager means adding one module here and one row to
``package_managers.PACKAGE_MANAGERS``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Protocol

from ..cache import Cache
from ..log import Reporter
from ..package_managers import package_manager as package_manager_row
from ..step_jail import CacheSeal


@dataclass(frozen=True)
class InstallJob:
    """Everything an installer needs for one install."""

    python: Path  # an interpreter of the slug's runtime (see prefix)
    python_version: str  # its version ("3.12.7"), which a project may constrain
    app_dir: Path  # the staged app (the build directory)
    lock_file: str  # relative to app_dir
    config_vars: dict[str, str]
    cache: Cache
    reporter: Reporter
    scratch: Path  # for exported requirements; never packed into the slug
    constraints: Path | None = None  # pins from an earlier slug (--constraints-from)
    # Install into this empty prefix (lib/pythonX.Y/site-packages, bin) instead
    # of python's own: how a dependency layer is built apart from the build.
    prefix: Path | None = None
    # The app directory the user gave (job.app_dir is the build's copy of it):
    # what error messages name.
    source_dir: Path | None = None
    # Requirement lines the app declares, as the installer read them (markers
    # included): filled by ``install``, checked afterwards (dependencies.py).
    declared: list[str] = field(default_factory=list)
    # How uv places files from its cache: "copy" when they land in a build
    # directory whose build steps may write them (dependencies._install_fresh).
    link_mode: str = "hardlink"
    # What earlier buildpacks exported (and the Aptfile's variables): in every
    # tool's environment (proc.clean_env).
    exports: Mapping[str, str] = field(default_factory=dict)
    # Installing into the build's prefix (``prefix`` None): its runtime's files as placed
    # (dependencies.snapshot), to tell whether code was put in the interpreter since.
    runtime_baseline: Mapping[str, tuple[int, ...]] | None = None
    # The build directory the exports' paths name (None: app_dir, which is it unless
    # local packages are built from a copy).
    build_dir: Path | None = None
    # The build's seal of the cache (step_jail.py): the installer's runs, which may
    # build packages from source, get the cache's layers and stores read-only.
    seal: CacheSeal | None = None

    @property
    def env_sha256(self) -> str:
        """The hash of this install's build environment (built_wheels.build_env_sha256)."""
        from .built_wheels import build_env_sha256

        return build_env_sha256(self.config_vars, self.exports, self.build_dir or self.app_dir)


@dataclass(frozen=True)
class InstallPlan:
    """What an installer will do for one app, decided once before any work.

    Made by ``Installer.plan`` from the app's files alone: the layer key is
    computed from it, and the same plan is handed back to ``install``, so the
    tool that keys the layer is the tool that installs it.
    """

    name: str  # the package manager, as slug.json names it
    tool: str  # the backend that installs ("pip" or "uv" for requirements.txt)
    version: str  # versions of every tool the install runs (part of the layer key)
    key_files: tuple[str, ...]  # every app file whose content determines what is installed
    # The pip the install runs (pip apps), else None: what SLUGBUILD_KEEP_PIP keeps.
    pip_version: str | None = None
    # Facts for slug.json (not in the layer key, which ``version`` covers): the tool
    # that installs the packages and its bare version, and why it was chosen.
    installer_version: str = ""
    installer_reason: str = ""
    # Version ranges for uv to resolve before the layer is keyed (``ranges.resolve_plan``),
    # and what they resolved to: ``name==version`` lines, the install's constraints.
    resolves: bool = False
    resolved: str = ""


class Installer(Protocol):
    """Installs an app's locked dependencies into a runtime prefix.

    Stateless: everything that depends on the app is in the ``InstallPlan``.
    """

    name: str  # the package manager, as slug.json names it

    def plan(self, app_dir: Path, lock_file: str,
             config_vars: Mapping[str, str]) -> InstallPlan:
        """Read the app's files and decide what to run (no tool runs here)."""
        ...

    def install(self, job: InstallJob, plan: InstallPlan) -> None: ...

    def install_baseline(self, job: InstallJob, plan: InstallPlan,
                         requirements: tuple[str, ...]) -> None:
        """Install Heroku's baseline (``baseline.py``) before the app's packages."""
        ...

    def prefetch(self, job: InstallJob, plan: InstallPlan) -> subprocess.Popen[bytes] | None:
        """Start downloading what ``install`` will need, before the runtime is ready
        (``job.python`` is then slugbuild's own interpreter), or None when this
        plan cannot (see dependencies.Prefetch)."""
        ...


class LockExporter(Protocol):
    """An installer whose install is its lock exported to hashed pins and installed
    exactly by uv (``uv.install_exported``): Pipenv, Poetry and uv projects. The
    export alone lets a layer be built from the previous one (incremental.py)."""

    name: str

    def export(self, job: InstallJob, plan: InstallPlan) -> Path:
        """Write the pins ``install`` would install into the job's scratch."""
        ...


class RequirementsBackend(Protocol):
    """A tool that installs a requirements.txt (pip or uv): ``pip.PipInstaller``
    picks one per plan."""

    name: str  # "pip" or "uv": InstallPlan.tool

    @property
    def version(self) -> str: ...

    def install(self, job: InstallJob) -> None: ...

    def install_baseline(self, job: InstallJob, requirements: tuple[str, ...]) -> None: ...

    def prefetch(self, job: InstallJob) -> subprocess.Popen[bytes] | None: ...


def installer_for(package_manager: str, python_version: str | None = None) -> Installer:
    """The installer for a package manager chosen by detection (package_managers.py).

    With ``python_version`` (the runtime's), an installer that cannot install
    for it is refused here, before any work (``installer-unsupported-python``).
    """
    module_name, class_name = package_manager_row(package_manager).installer.split(":")
    installer_class = getattr(import_module(f"{__name__}.{module_name}"), class_name)
    if package_manager == "pip":
        installer: Installer = installer_class(python_version)
    else:
        installer = installer_class()
    return installer
