"""Poetry: the main group of poetry.lock, as ``poetry sync --only main --no-root``.

Poetry's own installer resolves against the index's JSON API, which some
networks (this project's CI among them) cannot reach, so uv installs the
lock's hashed pins. Where they come from:

- **Read from the lock** when it proves itself current: a lock-version 2.1
  lock (Poetry 2) records each package's groups and the markers under which
  each group needs it, and its ``content-hash`` is what Poetry computes from
  pyproject.toml. When that hash matches (what ``poetry check --lock``
  checks) and every main-group package is a plain hashed registry package,
  the pins are the ones ``poetry export --only main`` gives, without
  installing or starting Poetry (4.1 s of a 6.3 s cold build).
- **Exported by Poetry** otherwise (an older lock, a hash that does not match,
  git/path/url packages, private sources, extras): ``poetry check --lock``
  refuses a stale lock, ``poetry export --only main`` turns the lock into
  hashed pins. Poetry and its export plugin live in the tool cache, never in
  the slug.

Either way the runtime must be one the project allows (``requires-python``
or ``tool.poetry.dependencies.python``): Poetry's export would otherwise
drop every package and leave a slug without dependencies.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from packaging.markers import InvalidMarker, Marker
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from .. import errors
from ..package_managers import relock_command
from ..proc import clean_env
from ..toml_compat import tomllib
from ..versions import describe_choice
from . import InstallJob, InstallPlan
from .locks import check_syntax, local_source_files, run_lock_tool, shown, write_export
from .tools import ensure_tool, tool_command, tool_version
from .uv import install_baseline, install_exported, prefetch_pins, uv_version

RELOCK = relock_command("poetry")
# The lock format whose per-package groups and markers slugbuild reads itself.
READABLE_LOCK_VERSION = "2.1"
# poetry-core's Locker: the pyproject.toml keys its content-hash covers.
_LEGACY_POETRY_KEYS = ("dependencies", "source", "extras", "dev-dependencies")
_POETRY_KEYS = (*_LEGACY_POETRY_KEYS, "group")
_PROJECT_KEYS = ("requires-python", "dependencies", "optional-dependencies")
_HASH_ALGORITHMS = ("sha256", "sha384", "sha512")  # what poetry export writes


class PoetryInstaller:
    name = "poetry"

    def plan(self, app_dir: Path, lock_file: str,
             config_vars: Mapping[str, str]) -> InstallPlan:
        return InstallPlan(
            name=self.name, tool="uv", version=f"{tool_version('poetry')} + uv=={uv_version()}",
            key_files=("poetry.lock", "pyproject.toml",
                       *local_source_files(app_dir, lock_file)),
            installer_version=uv_version(),
            installer_reason="poetry.lock: its main group's pins (read from the lock, or "
                             "exported by poetry when the lock cannot prove itself current) "
                             "installed exactly by uv, as poetry sync --only main would")

    def prefetch(self, job: InstallJob, plan: InstallPlan) -> subprocess.Popen[bytes] | None:
        """Download the main group ahead, when the lock can be read without Poetry."""
        return prefetch_pins(job, locked_main_pins(job.app_dir), "poetry")

    def install_baseline(self, job: InstallJob, plan: InstallPlan,
                         requirements: tuple[str, ...]) -> None:
        install_baseline(job, requirements)

    def install(self, job: InstallJob, plan: InstallPlan) -> None:
        install_exported(job, self.export(job, plan), "poetry")

    def export(self, job: InstallJob, plan: InstallPlan) -> Path:
        """The main group's pins as hashed requirements (what ``install`` installs),
        written to the job's scratch: read from a current lock, else by Poetry."""
        check_syntax(job.app_dir, job.lock_file, RELOCK)
        check_python_allowed(job.app_dir, job.python_version)
        pins = locked_main_pins(job.app_dir)
        if pins is not None:
            job.reporter.detail("poetry.lock is current (its content-hash matches "
                                "pyproject.toml); installing its main group "
                                "(as `poetry sync --only main --no-root`)")
            return write_export(job, pins, "poetry-pins.txt")
        return self._export_with_poetry(job)

    def _export_with_poetry(self, job: InstallJob) -> Path:
        tool = ensure_tool("poetry", job)
        home = job.scratch / "poetry-home"
        env = clean_env({
            "PYTHONPATH": str(tool), "NO_COLOR": "1", "POETRY_NO_INTERACTION": "1",
            "POETRY_VIRTUALENVS_CREATE": "false",
            # Poetry's config and caches stay in the scratch dir: no machine config.
            "POETRY_CONFIG_DIR": str(home / "config"), "POETRY_CACHE_DIR": str(home / "cache"),
            "POETRY_DATA_DIR": str(home / "data"),
        }, exports=job.exports)
        poetry = tool_command("poetry")
        run_lock_tool(job, [*poetry, "check", "--lock"], env,
                      shown("poetry", "check", "--lock"), "pyproject.toml", RELOCK)
        target = job.scratch / "poetry-export.txt"
        run_lock_tool(job, [*poetry, "export", "--only", "main", "--format", "requirements.txt",
                            "--output", str(target)], env,
                      shown("poetry", "export", "--only", "main"), "pyproject.toml", RELOCK)
        job.reporter.detail("Installing the main group pinned in poetry.lock "
                            "(as `poetry sync --only main --no-root`)")
        return write_export(job, target.read_text(), "poetry-export.txt")


def content_hash(pyproject: dict[str, Any]) -> str:
    """The ``metadata.content-hash`` Poetry (2.3 and later) writes for this pyproject."""
    project = pyproject.get("project") or {}
    groups = pyproject.get("dependency-groups") or {}
    tool_poetry = (pyproject.get("tool") or {}).get("poetry") or {}
    relevant_project = {key: project[key] for key in _PROJECT_KEYS
                        if project.get(key) is not None}
    relevant_poetry = {}
    for key in _POETRY_KEYS:
        value = tool_poetry.get(key)
        if value is None and (key not in _LEGACY_POETRY_KEYS or relevant_project or groups):
            continue
        relevant_poetry[key] = value
    relevant: dict[str, Any] = {}
    if relevant_project:
        relevant["project"] = relevant_project
    if groups:
        relevant["dependency-groups"] = groups
    if relevant:
        relevant["tool"] = {"poetry": relevant_poetry}
    else:
        relevant = relevant_poetry  # older projects: [tool.poetry] content at the top
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def locked_main_pins(app_dir: Path) -> str | None:
    """The main group of a current lock as hashed requirement lines, or None when
    only Poetry can say (see the module docstring for when)."""
    try:
        lock = tomllib.loads((app_dir / "poetry.lock").read_text())
        pyproject = tomllib.loads((app_dir / "pyproject.toml").read_text())
    except (OSError, ValueError, RecursionError):
        return None
    metadata = lock.get("metadata")
    packages = lock.get("package", [])
    if (not isinstance(metadata, dict) or not isinstance(packages, list)
            or metadata.get("lock-version") != READABLE_LOCK_VERSION
            or metadata.get("content-hash") != content_hash(pyproject)):
        return None
    python = project_python(pyproject)
    if python is not None and poetry_constraint_to_pep440(python[0]) is None:
        return None  # Poetry's export narrows every pin by it; only Poetry can say how
    lines = []
    for package in packages:
        if not isinstance(package, dict) or not isinstance(package.get("groups"), list):
            return None
        if "main" not in package["groups"]:
            continue
        line = _pin_line(package)
        if line is None:
            return None
        lines.append(line)
    return "".join(sorted(lines))


def _pin_line(package: dict[str, Any]) -> str | None:
    """``name==version ; marker --hash=...`` for a plain registry package, else None."""
    name, version, files = package.get("name"), package.get("version"), package.get("files")
    if (not isinstance(name, str) or not isinstance(version, str) or package.get("source")
            or package.get("develop") or not isinstance(files, list) or not files):
        return None
    marker = package.get("markers", "*")
    if isinstance(marker, dict):
        marker = marker.get("main", "*")
    if not isinstance(marker, str) or "extra" in marker:
        return None  # extras select packages by what the installer is asked for
    hashes = []
    for entry in files:
        algorithm, _, digest = str((entry or {}).get("hash", "")).partition(":")
        if algorithm not in _HASH_ALGORITHMS or not re.fullmatch(r"[0-9a-f]+", digest):
            return None
        hashes.append(f"{algorithm}:{digest}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        return None
    try:
        Version(version)
        condition = "" if marker.strip() in ("", "*") else f" ; {Marker(marker)}"
    except (InvalidVersion, InvalidMarker):
        return None
    hash_options = "".join(f" \\\n    --hash={h}" for h in sorted(hashes))
    return f"{name}=={version}{condition}{hash_options}\n"


def project_python(pyproject: dict[str, Any]) -> tuple[str, str] | None:
    """The project's Python constraint as Poetry applies it, and where it is written.

    poetry-core reads ``[project] requires-python`` and lets
    ``[tool.poetry.dependencies] python`` narrow it: the latter wins when set.
    Both are read with Poetry's constraint syntax.
    """
    tool_poetry = (pyproject.get("tool") or {}).get("poetry") or {}
    dependencies = tool_poetry.get("dependencies") if isinstance(tool_poetry, dict) else None
    if isinstance(dependencies, dict) and isinstance(dependencies.get("python"), str):
        return dependencies["python"], "[tool.poetry.dependencies] python"
    project = pyproject.get("project") or {}
    if isinstance(project, dict) and isinstance(project.get("requires-python"), str):
        return project["requires-python"], "[project] requires-python"
    return None


def check_python_allowed(app_dir: Path, python_version: str) -> None:
    """Refuse a runtime the project excludes: Poetry's export would drop every package."""
    try:
        pyproject = tomllib.loads((app_dir / "pyproject.toml").read_text())
    except (OSError, ValueError, RecursionError):
        return  # Poetry reports an unreadable pyproject.toml itself
    found = project_python(pyproject)
    if found is None:
        return
    constraint, where = found
    specifiers = poetry_constraint_to_pep440(constraint)
    if specifiers is None:
        return  # a form slugbuild does not read: Poetry's export applies it
    version = Version(python_version)
    if not any(spec.contains(version, prereleases=True) for spec in specifiers):
        raise errors.PYTHON_NOT_ALLOWED_BY_PROJECT.error(
            version=python_version, constraint=constraint, where=where,
            manifest="pyproject.toml", chosen=describe_choice(app_dir))


_POETRY_ATOM = re.compile(
    r"^(?P<op>\^|~=|~|==|=|!=|>=|<=|>|<)?\s*(?P<version>[0-9][0-9a-z.*+!-]*)$")


def poetry_constraint_to_pep440(constraint: str) -> list[SpecifierSet] | None:
    """A Poetry version constraint (``^3.11``, ``~3.12``, ``>=3.9,<4``, ``a || b``)
    as PEP 440 alternatives, or None for a form this does not read."""
    alternatives = []
    for part in re.split(r"\s*\|\|?\s*", constraint.strip()):
        part = re.sub(r"(\^|~=|~|==|=|!=|>=|<=|>|<)\s+", r"\1", part.strip())
        specs = []
        for atom in re.split(r"\s*,\s*|\s+(?=[\^~=!<>0-9])", part):
            if atom in ("", "*"):
                continue
            match = _POETRY_ATOM.match(atom)
            if match is None:
                return None
            try:
                specs += _poetry_atom(match["op"] or "", match["version"])
            except InvalidVersion:
                return None
        try:
            alternatives.append(SpecifierSet(",".join(specs)))
        except InvalidSpecifier:
            return None
    return alternatives


def _poetry_atom(op: str, version: str) -> list[str]:
    if op in ("^", "~"):
        if "*" in version:
            raise InvalidVersion(version)
        parts = list(Version(version).release)
        if op == "^":  # up to the next change of the first non-zero part
            first = next((i for i, p in enumerate(parts) if p), len(parts) - 1)
            upper = [*parts[:first], parts[first] + 1]
        else:  # ~: up to the next minor (or major, if only a major is given)
            keep = 1 if len(parts) == 1 else 2
            upper = [*parts[:keep - 1], parts[keep - 1] + 1]
        return [f">={version}", f"<{'.'.join(map(str, upper))}"]
    if op in ("", "=", "=="):
        if "*" in version or version.count(".") >= 2:
            return [f"=={version}"]
        if version.count(".") == 1:
            # Poetry reads python = "3.12" as python_version == "3.12": every 3.12.x.
            return [f"=={version}.*"]
        raise InvalidVersion(version)  # python_version == "3" matches no Python
    return [f"{op}{version}"]
