"""Every installer and requirements backend satisfies its protocol: checked by mypy.

Installers are found through ``package_managers.PACKAGE_MANAGERS`` at run time
(``installer_for``), which a type checker cannot follow; these assignments let
it check each class against ``Installer`` / ``RequirementsBackend``. Nothing
imports this module, so it adds no import cycle.
"""

from __future__ import annotations

from . import Installer, RequirementsBackend
from .pip import PipBackend, PipInstaller
from .pipenv import PipenvInstaller
from .poetry import PoetryInstaller
from .uv import UvBackend
from .uv_project import UvProjectInstaller

INSTALLERS: tuple[type[Installer], ...] = (
    PipInstaller, PipenvInstaller, PoetryInstaller, UvProjectInstaller)
BACKENDS: tuple[type[RequirementsBackend], ...] = (PipBackend, UvBackend)
