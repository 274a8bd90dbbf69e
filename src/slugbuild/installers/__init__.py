"""Installers: one small protocol, one implementation per package manager.

Every installer puts the packages an app's lock file names into the slug's
runtime prefix without putting itself there: pip and uv run from slugbuild's
own environment against the slug's interpreter, Pipenv and Poetry only export
their lock (from a tool cache) and uv installs the export. Adding a package
manager means adding one module here and one line to ``INSTALLERS``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..cache import Cache
from ..log import Reporter


@dataclass(frozen=True)
class InstallJob:
    """Everything an installer needs for one install."""

    python: Path  # an interpreter of the slug's runtime (see prefix)
    python_version: str  # its version ("3.12.7"), which a project may constrain
    app_dir: Path  # the staged app (the build directory)
    lock_file: str  # relative to app_dir
    config_vars: dict
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


class Installer(Protocol):
    """Installs an app's locked dependencies into a runtime prefix."""

    name: str  # the package manager, as slug.json names it

    def version(self) -> str:
        """Versions of every tool the install runs (part of the layer key)."""
        ...

    def key_files(self, app_dir: Path, lock_file: str, config_vars: dict) -> list[str]:
        """Every app file whose content determines what is installed.

        Called before ``version()``: an installer may pick its tool here.
        """
        ...

    def install(self, job: InstallJob) -> None: ...

    # Optional: ``prefetch(job, python_version) -> subprocess.Popen | None``
    # starts downloading what ``install`` will need before the runtime is ready
    # (``job.python`` is then slugbuild's own interpreter); see
    # dependencies.Prefetch.


def installer_for(package_manager: str, python_version: str | None = None) -> Installer:
    """The installer for a package manager chosen by detection.

    With ``python_version`` (the runtime's), an installer that cannot install
    for it is refused here, before any work (``installer-unsupported-python``).
    """
    from .pip import PipInstaller
    from .pipenv import PipenvInstaller
    from .poetry import PoetryInstaller
    from .uv_project import UvProjectInstaller

    installers = {
        "pip": PipInstaller,
        "pipenv": PipenvInstaller,
        "poetry": PoetryInstaller,
        "uv": UvProjectInstaller,
    }
    if package_manager == "pip":
        return PipInstaller(python_version)
    return installers[package_manager]()
