"""uv projects: what ``uv sync --locked --no-default-groups`` installs, from uv.lock.

``uv export --locked`` refuses a lock that no longer matches pyproject.toml
and writes the hashed pins of the project's dependencies (no dev or other
default groups, not the project itself: the app runs from its directory);
``uv pip install`` installs exactly those into the slug's runtime.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from .. import errors
from ..package_managers import relock_command
from ..toml_compat import tomllib
from ..versions import describe_choice
from . import InstallJob, InstallPlan
from .locks import check_syntax, local_source_files, run_lock_tool, shown
from .uv import install_baseline, install_exported, uv_binary, uv_env, uv_version

RELOCK = relock_command("uv")


class UvProjectInstaller:
    name = "uv"

    def plan(self, app_dir: Path, lock_file: str,
             config_vars: Mapping[str, str]) -> InstallPlan:
        return InstallPlan(
            name=self.name, tool="uv", version=f"uv=={uv_version()}",
            key_files=("uv.lock", "pyproject.toml", *local_source_files(app_dir, lock_file)),
            installer_version=uv_version(),
            installer_reason="uv.lock: installed exactly, as uv sync --locked "
                             "--no-default-groups would")

    def prefetch(self, job: InstallJob, plan: InstallPlan) -> subprocess.Popen[bytes] | None:
        """uv exports the lock with the runtime's interpreter: nothing to do ahead."""
        return None

    def install_baseline(self, job: InstallJob, plan: InstallPlan,
                         requirements: tuple[str, ...]) -> None:
        install_baseline(job, requirements)

    def install(self, job: InstallJob, plan: InstallPlan) -> None:
        install_exported(job, self.export(job, plan), "uv")

    def export(self, job: InstallJob, plan: InstallPlan) -> Path:
        """The project's locked dependencies as hashed requirements (what ``install``
        installs), exported by ``uv export --locked`` into the job's scratch."""
        check_syntax(job.app_dir, job.lock_file, RELOCK)
        check_python_allowed(job.app_dir, job.python_version)
        target = job.scratch / "uv-export.txt"
        argv = [uv_binary(), "export", "--locked", "--no-default-groups", "--no-emit-project",
                "--format", "requirements-txt", "--no-header", "--python", str(job.python),
                # The indexes uv.lock names (else uv would install from PyPI alone).
                "--emit-index-url",
                "--output-file", str(target)]
        run_lock_tool(job, argv, uv_env(job),
                      shown("uv", "export", "--locked", "--no-default-groups"),
                      "pyproject.toml", RELOCK, writes_caches=True)
        job.reporter.detail("Installing the dependencies pinned in uv.lock "
                            "(as `uv sync --locked --no-default-groups`)")
        return target


def check_python_allowed(app_dir: Path, python_version: str) -> None:
    """Refuse a runtime the project's ``requires-python`` excludes, before uv says
    only that the lock "needs to be updated" (re-locking cannot fix that)."""
    try:
        text = (app_dir / "pyproject.toml").read_text().removeprefix("\ufeff")  # uv skips it
        project = tomllib.loads(text).get("project")
        constraint = project.get("requires-python") if isinstance(project, dict) else None
        specifier = SpecifierSet(constraint) if isinstance(constraint, str) else None
    except (OSError, UnicodeDecodeError, ValueError, InvalidSpecifier):
        return  # uv reports an unreadable pyproject.toml itself
    if specifier is None or specifier.contains(Version(python_version), prereleases=True):
        return
    raise errors.PYTHON_NOT_ALLOWED_BY_PROJECT.error(
        version=python_version, constraint=constraint, where="[project] requires-python",
        manifest="pyproject.toml", chosen=describe_choice(app_dir))
