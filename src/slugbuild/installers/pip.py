"""pip with requirements.txt: Heroku's default, installed with pip's own semantics.

Two backends install a requirements.txt, like pypa/build's ``_PipBackend`` and
``_UvBackend``: ``PipBackend`` (pip itself) and ``uv.UvBackend``. When every
requirement is pinned with ``==`` and the files use no option beyond
includes, hashes and index URLs, there is nothing left for the resolver to
decide, so uv installs them (from the indexes pip would use, each package
from the first that has it): the same packages, several times faster.
Anything else (ranges, URLs, VCS, pip-only options) is pip's job.
``PipInstaller.plan`` makes that choice once; SLUGBUILD_PIP_INSTALLER=pip|uv
overrides it.

pip runs from slugbuild's own environment with ``--python <slug python>``, so
the slug never needs pip inside it. Machine configuration is shut out:
PIP_CONFIG_FILE is os.devnull (no pip.conf is read), every PIP_* host
variable is dropped, and the index is given explicitly. Build config vars
(PIP_EXTRA_INDEX_URL, ...) do reach pip, as on Heroku.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from .. import errors, indexes
from ..dist_version import installed_header, installed_version
from ..proc import ToolFailed, clean_env, exported_config
from . import InstallJob, InstallPlan, RequirementsBackend, built_wheels
from .common import (
    DEFAULT_INDEX_URL,
    build_env,
    install_failed,
    local_package_failed,
    run_install_tool,
    trusted_ca_bundle,
    warn_extra_indexes,
)
from .ranges import constraints_text
from .requirements import (
    install_editables_as_copies,
    local_package_files,
    local_requirements,
    lock_like,
    package_tree_files,
    requirement_lines,
    requirements_files,
    requirements_tool,
    requirements_tool_reason,
    unpinned_requirements,
)
from .uv import RANGES_VERSION, UvBackend, uv_version


class PipInstaller:
    """``pip install -r requirements.txt`` into the slug's runtime (or uv, see above).

    Stateless once made: the pip that can install for the runtime is chosen
    here (refused before any work when none can), the backend per plan.
    """

    name = "pip"

    def __init__(self, python_version: str | None = None) -> None:
        self._pip = PipBackend(pip_for_runtime(python_version))
        self._uv = UvBackend()
        self._backends: dict[str, RequirementsBackend] = {"pip": self._pip, "uv": self._uv}

    def plan(self, app_dir: Path, lock_file: str,
             config_vars: Mapping[str, str]) -> InstallPlan:
        files = requirements_files(app_dir, lock_file)
        local = local_package_files(app_dir, files)
        local += [rel for rel in find_links_files(app_dir, lock_file, dict(config_vars))
                  if rel not in local]
        tool = requirements_tool(app_dir, files, config_vars)
        # Ranges (or options) uv installs: resolved first, and keyed by what they resolve to.
        resolves = tool == "uv" and not lock_like(app_dir, files)
        return InstallPlan(name=self.name, tool=tool,
                           version=(RANGES_VERSION.format(uv=uv_version()) if resolves
                                    else self._backends[tool].version),
                           key_files=(*files, *(rel for rel in local if rel not in files)),
                           pip_version=self._pip.version,
                           installer_version=(self._pip.version if tool == "pip"
                                              else uv_version()),
                           installer_reason=requirements_tool_reason(app_dir, files,
                                                                     config_vars),
                           resolves=resolves)

    def prefetch(self, job: InstallJob, plan: InstallPlan) -> subprocess.Popen[bytes] | None:
        """Download ahead when uv will install (it resolves ranges as it downloads)."""
        return self._backends[plan.tool].prefetch(job)

    def install(self, job: InstallJob, plan: InstallPlan) -> None:
        unpinned = unpinned_requirements(job.app_dir, job.lock_file)
        if unpinned:
            shown = ", ".join(unpinned[:5]) + (" …" if len(unpinned) > 5 else "")
            job.reporter.warn(
                f"{len(unpinned)} requirement(s) are not pinned to one version ({shown}); "
                f"the next build may install other versions. Pin them with "
                f"`slugbuild lock`, or rebuild this package set with --constraints-from "
                f"and this build's slug.json."
            )
        job.declared.extend(requirement_lines(job.app_dir, job.lock_file))
        if plan.resolved:
            pins = job.scratch / "resolved-pins.txt"
            pins.write_text(constraints_text(plan.resolved))
            self._uv.install(job, pins=pins)
        else:
            self._backends[plan.tool].install(job)

    def install_baseline(self, job: InstallJob, plan: InstallPlan,
                         requirements: tuple[str, ...]) -> None:
        """Install Heroku's baseline (``installers/baseline.py``) before the app's
        requirements, with the tool that installs those."""
        self._backends[plan.tool].install_baseline(job, requirements)


class PipBackend:
    """requirements.txt installed by pip itself (slugbuild's own, or an older one
    from the tool cache for a runtime slugbuild's pip no longer supports)."""

    name = "pip"

    def __init__(self, pip: PipTool) -> None:
        self.pip = pip

    @property
    def version(self) -> str:
        return self.pip.version

    def command(self, job: InstallJob, python: Path | None = None) -> list[str]:
        """pip's command line; the indexes are in its environment (``pip_env``).

        ``python`` (a stand-in environment over ``job.prefix``, see
        ``_prefix_environment``) replaces ``--prefix``: pip then sees what the
        baseline put there as installed, as on Heroku.
        """
        argv = [
            *self.pip.command(job), "--python", str(python or job.python), "install",
            "--no-input", "--disable-pip-version-check", "--no-compile",
            "--no-warn-script-location", "--progress-bar", "off", "--root-user-action", "ignore",
            "--cache-dir", str(pip_cache_dir(job)),
        ]
        cert = trusted_ca_bundle()
        if cert:
            argv += ["--cert", cert]
        if job.prefix is not None and python is None:
            # pip would count the interpreter's own site-packages as installed.
            argv += ["--prefix", str(job.prefix), "--ignore-installed"]
        argv += ["-r", job.lock_file]
        if job.constraints is not None:
            argv += ["-c", str(job.constraints)]
        return argv

    def prefetch(self, job: InstallJob) -> subprocess.Popen[bytes] | None:
        """pip resolves as it installs: nothing to download ahead."""
        return None

    def install(self, job: InstallJob) -> None:
        editables = install_editables_as_copies(job.app_dir, job.lock_file)
        if editables:
            job.reporter.detail(
                f"Installing {', '.join(editables)} as regular packages, not editable: the "
                f"slug carries the installed files (an editable install would point into "
                f"the build directory)")
        settings = indexes.for_requirements(job.app_dir, job.lock_file, job.config_vars)
        warn_extra_indexes(job, settings, "pip")
        with _prefix_environment(job) as python:
            try:
                built_wheels.note_builds(job.scratch, run_install_tool(
                    job, self.command(job, python),
                    pip_env(job.config_vars, job=job), cwd=job.app_dir))
            except ToolFailed as failed:
                local = local_requirements(job.app_dir, job.lock_file)
                raise (local_package_failure(job, local) or install_failed(
                    job, ["pip", "install", "-r", job.lock_file], failed,
                    settings)) from failed

    def install_baseline(self, job: InstallJob, requirements: tuple[str, ...]) -> None:
        with _prefix_environment(job) as python:
            argv = self.command(job, python)
            argv = [*argv[:argv.index("-r")], "--no-deps", *requirements]
            try:
                run_install_tool(job, argv, pip_env(job.config_vars, job=job),
                                 cwd=job.app_dir)
            except ToolFailed as failed:
                raise install_failed(job, ["pip", "install", *requirements], failed) from failed


@dataclass(frozen=True)
class PipTool:
    """The pip a build runs: slugbuild's own, or (for a runtime it does not support)
    a pinned older one from the tool cache."""

    version: str
    cached: str | None = None  # the tool cache's name for it, when not slugbuild's own

    def command(self, job: InstallJob) -> list[str]:
        if self.cached is None:
            return [sys.executable, "-m", "pip"]
        from .tools import ensure_tool

        # pip's __main__ puts its own parent first on sys.path when run as a directory.
        return [sys.executable, "-s", str(ensure_tool(self.cached, job) / "pip")]
# The newest pip for runtimes older than slugbuild's pip supports, by (major, minor):
# pip 26.1 needs Python 3.10; 26.0.1 is the last release for 3.9.
OLDER_PIP = {(3, 9): "26.0.1"}


def pip_for_runtime(python_version: str | None) -> PipTool:
    """The pip that supports ``python_version``; refused before any work when none does."""
    own = installed_version("pip")
    if own is None:  # slugbuild depends on pip: importlib.metadata says what is wrong
        from importlib.metadata import version

        own = version("pip")
    if python_version is None:
        return PipTool(own)
    supported = SpecifierSet(installed_header("pip", "Requires-Python") or "")
    runtime = Version(python_version)
    if supported.contains(runtime, prereleases=True):
        return PipTool(own)
    older = OLDER_PIP.get((runtime.major, runtime.minor))
    if older is not None:
        return PipTool(older, cached=f"pip-{older}")
    raise errors.INSTALLER_UNSUPPORTED_PYTHON.error(
        python=python_version, installer=f"pip {own}", supported=str(supported),
        versions=", ".join(f"{major}.{minor}" for major, minor in sorted(OLDER_PIP)))


@contextmanager
def _prefix_environment(job: InstallJob) -> Iterator[Path | None]:
    """For an install apart (into ``job.prefix``), a stand-in environment over it.

    A ``pyvenv.cfg`` and an interpreter link in the prefix make it a virtual
    environment of the runtime for the time of the install: pip then installs
    into it and counts only what is there as installed (the baseline), never the
    installing interpreter's own site-packages. Both are removed afterwards; the
    scripts' shebangs are made relocatable as for any install. None (plain
    ``pip --python``) when installing onto the build.
    """
    if job.prefix is None:
        yield None
        return
    prefix = job.prefix
    python = prefix / "bin" / job.python.name
    config = prefix / "pyvenv.cfg"
    python.parent.mkdir(parents=True, exist_ok=True)
    (prefix / "lib" / job.python.name / "site-packages").mkdir(parents=True, exist_ok=True)
    config.write_text(f"home = {job.python.parent}\ninclude-system-site-packages = false\n"
                      f"version = {job.python_version}\n")
    python.symlink_to(job.python)
    try:
        yield python
    finally:
        python.unlink(missing_ok=True)
        config.unlink(missing_ok=True)


def pip_env(config_vars: Mapping[str, str], extra: Mapping[str, str] | None = None,
            job: InstallJob | None = None) -> dict[str, str]:
    """pip's environment: the build config vars (as on Heroku), the index made
    explicit, and the machine's pip config shut out.

    Indexes go through PIP_INDEX_URL / PIP_EXTRA_INDEX_URL, never the command
    line, where `ps` would show the credentials an index URL may hold. With a
    ``job``, packages built from source are built in its scratch directory
    (``build_env``).
    """
    env = clean_env({**exported_config(config_vars), "PIP_CONFIG_FILE": os.devnull,
                     "PIP_INDEX_URL": config_vars.get("PIP_INDEX_URL") or DEFAULT_INDEX_URL,
                     # Nothing written into the interpreter's tree (see uv_env).
                     "PYTHONDONTWRITEBYTECODE": "1",
                     **(build_env(job) if job is not None else {}),
                     **(extra or {})}, exports=job.exports if job is not None else None)
    return built_wheels.cache_kept(env) if job is not None else env


def local_package_failure(job: InstallJob, local: list[str]) -> errors.SlugbuildError | None:
    """After a failed install: the error for the first local package that does not
    build on its own, or None when they all build (the failure is elsewhere).

    Each is built alone (``pip wheel --no-deps``) into the job's scratch directory,
    so a build backend's error is not reported as a package missing from the index.
    """
    for requirement in local:
        argv = [sys.executable, "-m", "pip", "--python", str(job.python), "wheel",
                "--no-deps", "--no-input", "--disable-pip-version-check", "--progress-bar",
                "off", "--cache-dir", str(pip_cache_dir(job)),
                "--wheel-dir", str(job.scratch / "local-wheels"), requirement]
        try:
            run_install_tool(job, argv, pip_env(job.config_vars, job=job),
                             cwd=job.app_dir, show=False)
        except ToolFailed as failed:
            return local_package_failed(job, requirement, ["pip", "wheel", "--no-deps",
                                                           requirement], failed)
    return None


def find_links_files(app_dir: Path, lock_file: str, config_vars: dict[str, str]) -> list[str]:
    """Files of the app's own ``--find-links`` directories: the wheels there decide
    what is installed, so they are part of the layer key like local packages."""
    app_root = app_dir.resolve()
    found: set[str] = set()
    for link in indexes.for_requirements(app_dir, lock_file, config_vars).find_links:
        target = Path(link)
        if "://" not in link and target.is_absolute() and target.is_relative_to(app_root):
            found.update(package_tree_files(app_root, target))
    return sorted(found)


def pip_cache_dir(job: InstallJob) -> Path:
    """pip's cache for ``job``: shared, but for the wheels it builds (built_wheels.py)."""
    return built_wheels.job_cache_dir(job.cache.root, job.scratch, "pip", job.env_sha256)
