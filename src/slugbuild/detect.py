"""Detect stage: is this a Python app, which package manager, which framework."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from . import errors
from .arguments import PathArg, as_path
from .package_managers import PACKAGE_MANAGER_FILES
from .textfiles import best_effort_text

# The files Heroku's Python buildpack accepts as the mark of a Python app.
PYTHON_APP_MARKERS = (
    "requirements.txt",
    "requirements.in",
    "setup.py",
    "setup.cfg",
    "pyproject.toml",
    "Pipfile",
    "Pipfile.lock",
    "poetry.lock",
    "uv.lock",
    "pdm.lock",
    "runtime.txt",
    ".python-version",
    "manage.py",
    "app.py",
    "main.py",
)

# Where manage.py may live below the app root (Heroku looks three levels deep).
MANAGE_PY_MAX_DEPTH = 3


@dataclass(frozen=True)
class AppInfo:
    """What detection learned about an app directory."""

    app_dir: Path
    markers: tuple[str, ...]
    package_manager: str | None
    lock_file: str | None
    manage_py: str | None = None
    frameworks: tuple[str, ...] = field(default=())
    # Every package manager file found; more than one is an error when compiling.
    manager_files: tuple[str, ...] = field(default=())

    @property
    def is_django(self) -> bool:
        return "django" in self.frameworks


def detect(app_dir: PathArg) -> AppInfo:
    """Describe ``app_dir`` or raise NOT_A_PYTHON_APP / NO_PACKAGE_MANAGER."""
    app_dir = as_path(app_dir, "detect", "app_dir")
    if not app_dir.is_dir():
        raise errors.APP_DIR_MISSING.error(app_dir=app_dir)
    markers = tuple(name for name in PYTHON_APP_MARKERS if (app_dir / name).is_file())
    if not markers:
        found = python_subdirectories(app_dir)
        raise errors.NOT_A_PYTHON_APP.error(
            variant=(None if not found else "app-in-subdirectory" if len(found) == 1
                     else "apps-in-subdirectories" if len(found) <= 5
                     else "apps-in-many-subdirectories"),
            app_dir=app_dir, markers=", ".join(PYTHON_APP_MARKERS),
            subdirectory=found[0] if found else "",
            subdirectories=", ".join(f"`{name}/`" for name in found[:5]),
            more=len(found) - 5)
    manager_files = package_manager_files(app_dir)
    package_manager = lock_file = None
    if len(manager_files) == 1:
        (package_manager, lock_file), = manager_files.items()
    manage_py = find_manage_py(app_dir)
    frameworks = _frameworks(app_dir, manage_py)
    return AppInfo(app_dir, markers, package_manager, lock_file, manage_py, frameworks,
                   tuple(manager_files.values()))


def require_package_manager(info: AppInfo) -> None:
    """Compiling needs a package manager file; detection alone does not.

    Like Heroku, these are compile errors, not detection failures (bin/detect
    still says "Python"): several package manager files, a committed
    virtualenv, and files that show what the app wanted (a Pipfile without
    its lock, a lone setup.py, requirements.in), each with advice of its own.
    Several files are an error rather than a silent precedence: they usually
    disagree, and the one left behind would be a trap.
    """
    app_dir = info.app_dir
    if len(info.manager_files) > 1:
        raise errors.MULTIPLE_PACKAGE_MANAGERS.error(
            app_dir=app_dir, files=", ".join(info.manager_files),
            managers=", ".join(m for m, f in PACKAGE_MANAGER_FILES.items()
                               if f in info.manager_files),
        )
    reject_committed_virtualenv(app_dir)
    if info.package_manager is not None:
        return
    if (app_dir / "Pipfile").is_file():
        raise errors.PIPFILE_WITHOUT_LOCK.error(app_dir=app_dir)
    if (app_dir / "requirements.in").is_file():
        raise errors.REQUIREMENTS_NOT_COMPILED.error(app_dir=app_dir)
    for name in ("setup.py", "setup.cfg", "pyproject.toml"):
        if (app_dir / name).is_file():
            raise errors.PROJECT_WITHOUT_LOCK.error(app_dir=app_dir, found=name)
    raise errors.NO_PACKAGE_MANAGER.error(app_dir=app_dir, markers=", ".join(info.markers))


# Directories that hold a committed virtual environment when pyvenv.cfg is in them.
VIRTUALENV_DIRS = (".venv", "venv")


def package_manager_files(app_dir: Path) -> dict[str, str]:
    """Package manager -> its file, for every package manager file the app has."""
    return {manager: name for manager, name in PACKAGE_MANAGER_FILES.items()
            if (app_dir / name).is_file()}


def reject_committed_virtualenv(app_dir: Path) -> None:
    """A virtualenv inside the app holds host paths and binaries; never ship one."""
    for name in VIRTUALENV_DIRS:
        if (app_dir / name / "pyvenv.cfg").is_file():
            raise errors.COMMITTED_VIRTUALENV.error(app_dir=app_dir, directory=name)


def find_manage_py(app_dir: Path) -> str | None:
    """The shallowest manage.py within MANAGE_PY_MAX_DEPTH, as a relative path."""
    level = [app_dir]
    for _depth in range(MANAGE_PY_MAX_DEPTH + 1):
        for directory in level:
            candidate = directory / "manage.py"
            if candidate.is_file() and not candidate.is_symlink():
                return candidate.relative_to(app_dir).as_posix()
        level = sorted(
            child
            for directory in level
            for child in _subdirs(directory)
            if not child.name.startswith(".") and child.name not in ("node_modules",)
        )
    return None


def _subdirs(directory: Path) -> list[Path]:
    try:
        return [p for p in directory.iterdir() if p.is_dir() and not p.is_symlink()]
    except OSError:
        return []


def _frameworks(app_dir: Path, manage_py: str | None) -> tuple[str, ...]:
    """Frameworks named in the app's dependency declarations (best effort)."""
    text = ""
    for name in ("requirements.txt", "Pipfile", "pyproject.toml", "setup.py", "setup.cfg"):
        path = app_dir / name
        if path.is_file():
            try:
                text += best_effort_text(path).lower() + "\n"  # UTF-16 too
            except OSError:
                pass
    found = [
        name for name in ("django", "flask", "fastapi", "starlette")
        if re.search(rf"(?<![a-z0-9_.-]){name}(?![a-z0-9_-])", text)
    ]
    if manage_py and "django" not in found:
        found.insert(0, "django")
    return tuple(found)


# Files that make a subdirectory worth naming as the app base (weaker markers such
# as main.py or runtime.txt are common in frontends and tooling directories).
_SUBDIRECTORY_MARKERS = (*PACKAGE_MANAGER_FILES.values(), "Pipfile", "manage.py")
# How deep below the root a monorepo's Python app is looked for (``services/api``).
SUBDIRECTORY_MAX_DEPTH = 2


def python_subdirectories(app_dir: Path) -> list[str]:
    """Subdirectories (at most SUBDIRECTORY_MAX_DEPTH deep, shallowest first) holding a
    Python app, as relative POSIX paths; a match is not searched below."""
    found: list[str] = []
    level = [app_dir]
    for _depth in range(SUBDIRECTORY_MAX_DEPTH):
        children = sorted(
            child for directory in level for child in _subdirs(directory)
            if not child.name.startswith(".") and child.name not in ("node_modules",))
        level = []
        for child in children:
            if any((child / name).is_file() for name in _SUBDIRECTORY_MARKERS):
                found.append(child.relative_to(app_dir).as_posix())
            else:
                level.append(child)
    return found
