"""Every fact slugbuild knows about a package manager, in one table.

Detection, the installers, lock-file checks, ``slugbuild lock`` and the error
messages read a package manager's files, lock syntax, relock command and
installer from here. Adding a package manager means one row here and one
installer module (docs/architecture.md).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PackageManager:
    """One package manager, as slugbuild supports it."""

    name: str  # as slug.json, the CLI and messages name it
    lock_file: str  # the file whose presence selects it (Heroku's rule)
    manifest: str | None  # the file the lock is made from, when there is one
    lock_syntax: str  # how the lock file is written: "requirements", "JSON" or "TOML"
    relock: str | None  # the command that brings a stale lock up to date
    tool: str  # what runs the install (the package manager itself only exports)
    installer: str  # "module:Class" below slugbuild.installers implementing Installer


# In detection order (the order Heroku's buildpack checks them in).
PACKAGE_MANAGERS: tuple[PackageManager, ...] = (
    PackageManager("pip", "requirements.txt", None, "requirements", None, "pip or uv",
                   "pip:PipInstaller"),
    PackageManager("pipenv", "Pipfile.lock", "Pipfile", "JSON", "pipenv lock",
                   "Pipenv (export) + uv", "pipenv:PipenvInstaller"),
    PackageManager("poetry", "poetry.lock", "pyproject.toml", "TOML", "poetry lock",
                   "Poetry (export) + uv", "poetry:PoetryInstaller"),
    PackageManager("uv", "uv.lock", "pyproject.toml", "TOML", "uv lock", "uv",
                   "uv_project:UvProjectInstaller"),
)

# Package manager -> the file that selects it.
PACKAGE_MANAGER_FILES: dict[str, str] = {m.name: m.lock_file for m in PACKAGE_MANAGERS}


def package_manager(name: str) -> PackageManager:
    """The row for ``name`` (a name detection returned); KeyError for any other."""
    for manager in PACKAGE_MANAGERS:
        if manager.name == name:
            return manager
    raise KeyError(name)


def relock_command(name: str) -> str:
    """The command that rewrites ``name``'s lock (a lock-file package manager's)."""
    relock = package_manager(name).relock
    if relock is None:
        raise KeyError(f"{name} has no lock to rewrite")
    return relock


def by_lock_file(lock_file: str) -> PackageManager:
    """The package manager whose lock file is named ``lock_file``."""
    for manager in PACKAGE_MANAGERS:
        if manager.lock_file == lock_file:
            return manager
    raise KeyError(lock_file)
