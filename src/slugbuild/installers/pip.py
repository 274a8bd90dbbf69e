"""pip with requirements.txt: Heroku's default, installed with pip's own semantics.

pip runs from slugbuild's own environment with ``--python <slug python>``, so
the slug never needs pip inside it. Machine configuration is shut out:
PIP_CONFIG_FILE is os.devnull (no pip.conf is read), every PIP_* host
variable is dropped, and the index is given explicitly. Build config vars
(PIP_EXTRA_INDEX_URL, ...) do reach pip, as on Heroku.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from .. import errors, indexes
from ..proc import ToolFailed, clean_env, exported_config, run_tool
from ..redact import redact_url as redact
from ..stage import IgnoreRules
from ..textfiles import encoding_like_pip, read_text_like_pip
from . import InstallJob

DEFAULT_INDEX_URL = indexes.DEFAULT_INDEX_URL

_INCLUDE = re.compile(
    r"^\s*(?:(?P<short>-[rc])\s*|(?P<long>--requirement|--constraint)(?:\s*=\s*|\s+))"
    r"(?P<path>[^\s#]+)"
)
_EDITABLE = re.compile(r"^\s*(?:-e|--editable)(?:\s*=\s*|\s+)\S")
_OPTION = re.compile(r"^\s*-")
# A requirement that is a local directory or archive: ., ./pkg, ../x, /abs, file:...
_LOCAL_PATH = re.compile(r"^(?:\.{1,2}(?:/|$|(?=[\s;\[]))|/|file:)(?P<path>[^\s;#\[]*)")
# A named requirement pointing at a local path by URL: `name[extra] @ file:///path`.
_NAMED_FILE_URL = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9._-]*\s*(?:\[[^\]]*\])?\s*@\s*(?P<url>file:[^\s;#]+)")
# The editable option in front of a requirement, as written in a requirements file.
_EDITABLE_PREFIX = re.compile(r"^(\s*)(?:-e|--editable)(?:\s*=\s*|\s+)", re.MULTILINE)
# Never part of a local package's content (build output and caches).
_SKIPPED_PARTS = frozenset({"__pycache__", ".git", "build", "dist", ".tox", ".venv"})
# What the build adds at the app's root (the runtime, profile.d): never a package's content.
_BUILD_OUTPUT_AT_ROOT = frozenset({".heroku", ".profile.d"})
_PINNED = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(?:\[[^\]]*\])?\s*===?\s*[^\s,;]+\s*(?:;.*)?$")


# Options a lock-like requirements file may use and still be installed by uv.
_UV_SAFE_OPTIONS = re.compile(
    r"^\s*(?:-r|-c|--requirement|--constraint|-i|--index-url|--extra-index-url|"
    r"--require-hashes)(?:[\s=]|$)"
)
# Config var that forces one tool for requirements.txt (escape hatch: "pip" or "uv").
INSTALLER_CONFIG_VAR = "SLUGBUILD_PIP_INSTALLER"


class PipInstaller:
    """``pip install -r requirements.txt`` into the slug's runtime.

    When every requirement is pinned with ``==`` and the files use no option
    beyond includes, hashes and index URLs, there is nothing left for the
    resolver to decide, so uv installs them (from the indexes pip would use,
    each package from the first that has it): the same packages, several times
    faster (benchmarks/installers.py). Anything else (ranges, URLs, VCS,
    pip-only options) is pip's job. ``key_files`` makes the choice, before
    ``version()`` is asked for the layer key; SLUGBUILD_PIP_INSTALLER=pip|uv
    overrides it.
    """

    name = "pip"

    def __init__(self, python_version: str | None = None) -> None:
        self.tool = "pip"
        # The pip that can install for this runtime (refused here, before any work).
        self.pip = pip_for_runtime(python_version)

    def version(self) -> str:
        from importlib.metadata import version

        if self.tool == "uv":
            return f"uv=={version('uv')}, every requirement pinned"
        return self.pip.version

    def key_files(self, app_dir: Path, lock_file: str, config_vars: dict) -> list[str]:
        files = requirements_files(app_dir, lock_file)
        local = local_package_files(app_dir, files)
        local += [rel for rel in find_links_files(app_dir, lock_file, config_vars)
                  if rel not in local]
        forced = config_vars.get(INSTALLER_CONFIG_VAR, "").strip().lower()
        if forced in ("pip", "uv"):
            self.tool = forced
        else:
            self.tool = "uv" if _lock_like(app_dir, files) else "pip"
        return files + [rel for rel in local if rel not in files]

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
            "--cache-dir", str(job.cache.pip_cache),
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

    def prefetch(self, job: InstallJob, python_version: str) -> subprocess.Popen | None:
        """Download ahead when uv will install (every requirement pinned)."""
        if self.tool != "uv":
            return None
        from .uv import prefetch_requirements

        return prefetch_requirements(job, python_version)

    def install(self, job: InstallJob) -> None:
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
        if self.tool == "uv":
            from .uv import install_requirements

            install_requirements(job)
            return
        editables = install_editables_as_copies(job.app_dir, job.lock_file)
        if editables:
            job.reporter.detail(
                f"Installing {', '.join(editables)} as regular packages, not editable: the "
                f"slug carries the installed files (an editable install would point into "
                f"the build directory)")
        settings = index_settings(job.app_dir, job.lock_file, job.config_vars)
        warn_extra_indexes(job, settings, "pip")
        with _prefix_environment(job) as python:
            try:
                run_tool(self.command(job, python), job.reporter,
                         pip_env(job.config_vars, job=job), cwd=job.app_dir)
            except ToolFailed as failed:
                local = local_requirements(job.app_dir, job.lock_file)
                raise (local_package_failure(job, local) or install_failed(
                    job, ["pip", "install", "-r", job.lock_file], failed,
                    settings)) from failed

    def install_baseline(self, job: InstallJob, requirements: tuple[str, ...]) -> None:
        """Install Heroku's baseline (``installers/baseline.py``) before the app's
        requirements, with the tool that installs those."""
        if self.tool == "uv":
            from .uv import install_baseline

            install_baseline(job, requirements)
            return
        with _prefix_environment(job) as python:
            argv = self.command(job, python)
            argv = [*argv[:argv.index("-r")], "--no-deps", *requirements]
            try:
                run_tool(argv, job.reporter, pip_env(job.config_vars, job=job), cwd=job.app_dir)
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
    from importlib.metadata import metadata, version

    own = version("pip")
    if python_version is None:
        return PipTool(own)
    supported = SpecifierSet(metadata("pip").get("Requires-Python") or "")
    runtime = Version(python_version)
    if supported.contains(runtime, prereleases=True):
        return PipTool(own)
    older = OLDER_PIP.get(runtime.release[:2])
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


def pip_env(config_vars: dict, extra: dict | None = None,
            job: InstallJob | None = None) -> dict:
    """pip's environment: the build config vars (as on Heroku), the index made
    explicit, and the machine's pip config shut out.

    Indexes go through PIP_INDEX_URL / PIP_EXTRA_INDEX_URL, never the command
    line, where `ps` would show the credentials an index URL may hold. With a
    ``job``, packages built from source are built in its scratch directory
    (``build_env``).
    """
    return clean_env({**exported_config(config_vars), "PIP_CONFIG_FILE": os.devnull,
                      "PIP_INDEX_URL": config_vars.get("PIP_INDEX_URL") or DEFAULT_INDEX_URL,
                      # Nothing written into the interpreter's tree (see uv_env).
                      "PYTHONDONTWRITEBYTECODE": "1",
                      **(build_env(job) if job is not None else {}),
                      **(extra or {})}, exports=job.exports if job is not None else None)


def build_env(job: InstallJob) -> dict[str, str]:
    """Settings for packages an installer builds from source (sdists, local packages).

    Temporary build directories go under the job's scratch directory (inside
    slugbuild's cache), so any path a build records is one the leak check
    knows and the dependency layer's ELF clean-up removes
    (relocate.settle_built_elf_files). Compilers and wheel builders see a fixed
    SOURCE_DATE_EPOCH (1980-01-01, unless a config var sets one), so
    ``__DATE__`` and ``__TIME__`` do not depend on the day.
    """
    temporary = job.scratch / "tmp"
    temporary.mkdir(exist_ok=True)
    return {"TMPDIR": str(temporary),
            "SOURCE_DATE_EPOCH": job.config_vars.get("SOURCE_DATE_EPOCH") or "315532800"}


def install_failed(job: InstallJob, shown: list[str], failed: ToolFailed,
                   settings: indexes.IndexSettings | None = None) -> errors.SlugbuildError:
    """The error for an installer that exited non-zero: what its output shows is
    missing (``installers/failures.py``), else the generic one naming the
    indexes really used (without credentials). The output, streamed into the log already, is kept on
    the error but not printed again; build-copy paths are shown as the app's."""
    from .failures import diagnose_install_failure, shown_paths

    def shown_text(text: str) -> str:
        return shown_paths(text, job.app_dir, job.source_dir, job.prefix)

    command = shlex.join(shown)
    local = [ref for line in job.declared if (ref := local_reference(line)) is not None]
    specific = diagnose_install_failure(
        command=command, exit_code=failed.exit_code, output=shown_text(failed.output),
        python_version=job.python_version, local_paths=local)
    if specific is not None:
        specific.output = shown_text(failed.tail)
        return specific
    return errors.DEPENDENCY_INSTALL_FAILED.error(
        command=command,
        exit_code=failed.exit_code,
        lock_file=job.lock_file,
        index=settings.shown() if settings is not None else redact(
            job.config_vars.get("PIP_INDEX_URL") or DEFAULT_INDEX_URL),
        output=shown_text(failed.tail),
        output_shown=True,
    )


def warn_extra_indexes(job: InstallJob, settings: indexes.IndexSettings, tool: str) -> None:
    """Say so when more than one index may serve a package of the same name."""
    if len(settings.index_urls) + len(settings.find_links) < 2:
        return
    if tool == "pip":
        how = ("pip takes each package from whichever index has the best version, so a "
               "same-named package on a public index can replace a private one "
               "(dependency confusion). Pin every requirement (slugbuild then installs "
               "with uv, which takes a package from the first index that has it) or name "
               "one index only.")
    else:
        order = ", ".join(redact(url) for url in settings.search_order())
        how = (f"each package comes from the first of them that has its name, searched "
               f"in this order: {order} (uv's first-index strategy, PyPI last: a "
               f"same-named package on a later index is never used).")
    job.reporter.warn(f"Packages may come from more than one index ({settings.shown()}); "
                      f"{how}")


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
            pattern = IgnoreRules.from_app(app_root).excluding_rule(rel)
            if pattern is not None and referrer is not None:
                raise errors.REQUIREMENTS_FILE_IGNORED.error(
                    referrer=referrer, line=line_no, target=rel, pattern=pattern)
            raise errors.REQUIREMENTS_FILE_MISSING.error(
                referrer=referrer or "the build", line=line_no, target=rel
            )
        rel = path.relative_to(app_root).as_posix()
        if rel in seen:
            continue
        seen.append(rel)
        for number, line in _logical_lines(path):
            match = _INCLUDE.match(line)
            if match and "://" not in match.group("path"):
                target = (path.parent / match.group("path")).resolve()
                target_rel = os.path.relpath(target, app_root)
                pending.append((target_rel, rel, number))
    return seen


def ordered_lines(app_dir: Path, lock_file: str) -> list[tuple[Path, str]]:
    """Every logical line of ``lock_file``, each -r/-c include expanded where it
    stands (the order pip reads options in), with the file it came from."""
    app_root = app_dir.resolve()
    result: list[tuple[Path, str]] = []
    seen: set[Path] = set()

    def walk(path: Path) -> None:
        if path in seen or not path.is_file() or not path.is_relative_to(app_root):
            return  # requirements_files has already refused what is missing or outside
        seen.add(path)
        for _number, line in _logical_lines(path):
            match = _INCLUDE.match(line)
            if match and "://" not in match.group("path"):
                walk((path.parent / match.group("path")).resolve())
            else:
                result.append((path, line))

    walk((app_root / lock_file).resolve())
    return result


def find_links_files(app_dir: Path, lock_file: str, config_vars: dict) -> list[str]:
    """Files of the app's own ``--find-links`` directories: the wheels there decide
    what is installed, so they are part of the layer key like local packages."""
    app_root = app_dir.resolve()
    found: set[str] = set()
    for link in index_settings(app_dir, lock_file, config_vars).find_links:
        target = Path(link)
        if "://" not in link and target.is_absolute() and target.is_relative_to(app_root):
            found.update(package_tree_files(app_root, target))
    return sorted(found)


def index_settings(app_dir: Path, lock_file: str, config_vars: dict) -> indexes.IndexSettings:
    """Where pip would look for packages: the config vars, then the files' options."""
    return indexes.apply_requirements_options(
        indexes.from_config(config_vars), ordered_lines(app_dir, lock_file), config_vars)


def _logical_lines(path: Path) -> list[tuple[int, str]]:
    """Lines of a requirements file with continuations joined and comments dropped."""
    result: list[tuple[int, str]] = []
    buffer, start = "", 0
    text = read_text_like_pip(path)  # BOMs, coding lines, CRLF: as pip reads it
    for number, raw in enumerate(text.splitlines(), start=1):
        if not buffer:
            start = number
        line = re.sub(r"(^|\s)#.*$", "", raw)
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        buffer += line
        if buffer.strip():
            result.append((start, buffer.strip()))
        buffer = ""
    if buffer.strip():
        result.append((start, buffer.strip()))
    return result


def requirement_lines(app_dir: Path, lock_file: str) -> list[str]:
    """The requirements ``lock_file`` and its ``-r`` includes declare (constraint files
    and options left out, hashes stripped): what the app asks to be installed."""
    app_root = app_dir.resolve()
    found: list[str] = []
    seen: set[Path] = set()
    pending = [app_root / lock_file]
    while pending:
        path = pending.pop(0).resolve()
        if path in seen or not path.is_file() or not path.is_relative_to(app_root):
            continue
        seen.add(path)
        for _number, line in _logical_lines(path):
            match = _INCLUDE.match(line)
            if match:
                if match.group("short") == "-r" or match.group("long") == "--requirement":
                    pending.append(path.parent / match.group("path"))
                continue
            if _OPTION.match(line):
                continue
            found.append(re.split(r"\s+--hash", line)[0].strip())
    return found


def install_editables_as_copies(app_dir: Path, lock_file: str) -> list[str]:
    """Drop ``-e``/``--editable`` from the requirements files (the install's own copy
    of them); return the requirements that had it.

    An editable install leaves the package where it is, in the build directory,
    and points at it from site-packages: the slug would carry a path that does
    not exist once unpacked. A regular install of the same package behaves the
    same at run time (Pipenv, Poetry and uv editables are installed this way too).
    """
    found = []
    for rel in requirements_files(app_dir, lock_file):
        path = app_dir / rel
        editables = [_EDITABLE_PREFIX.sub("", line, count=1).split()[0]
                     for _number, line in _logical_lines(path) if _EDITABLE.match(line)]
        if editables:
            # Written back in the encoding pip found (its coding line stays true).
            data = path.read_bytes()
            encoding, skip = encoding_like_pip(data)
            text = _EDITABLE_PREFIX.sub(r"\1", read_text_like_pip(path))
            path.write_bytes(data[:skip] + text.encode(encoding))
            found += editables
    return found


def has_editables(app_dir: Path, lock_file: str) -> bool:
    """Whether any requirement (in the file or its includes) is ``-e``/``--editable``."""
    return any(_EDITABLE.match(line) for rel in requirements_files(app_dir, lock_file)
               for _number, line in _logical_lines(app_dir / rel))


def local_reference(line: str) -> str | None:
    """The local package a requirement line names, as written (``./pkg``, ``/abs``,
    ``file:...``, or the URL of ``name @ file:...``), else None. ``-e`` already off."""
    named = _NAMED_FILE_URL.match(line)
    if named:
        return named.group("url")
    if _LOCAL_PATH.match(line):
        return line.split()[0].split(";")[0]
    return None


def local_requirements(app_dir: Path, lock_file: str) -> list[str]:
    """The local packages (paths) the requirements files name, as written."""
    found = []
    for rel in requirements_files(app_dir, lock_file):
        for _number, line in _logical_lines(app_dir / rel):
            reference = local_reference(_EDITABLE_PREFIX.sub("", line, count=1))
            if reference is not None:
                found.append(reference)
    return found


def local_package_failure(job: InstallJob, local: list[str]) -> errors.SlugbuildError | None:
    """After a failed install: the error for the first local package that does not
    build on its own, or None when they all build (the failure is elsewhere).

    Each is built alone (``pip wheel --no-deps``) into the job's scratch directory,
    so a build backend's error is not reported as a package missing from the index.
    """
    for requirement in local:
        argv = [sys.executable, "-m", "pip", "--python", str(job.python), "wheel",
                "--no-deps", "--no-input", "--disable-pip-version-check", "--progress-bar",
                "off", "--cache-dir", str(job.cache.pip_cache),
                "--wheel-dir", str(job.scratch / "local-wheels"), requirement]
        try:
            run_tool(argv, job.reporter, pip_env(job.config_vars, job=job), cwd=job.app_dir,
                     show=False)
        except ToolFailed as failed:
            return local_package_failed(job, requirement, ["pip", "wheel", "--no-deps",
                                                           requirement], failed)
    return None


def local_package_failed(job: InstallJob, package: str, shown: list[str],
                         failed: ToolFailed) -> errors.SlugbuildError:
    """The error for a local package (a path in the app) that could not be built."""
    return errors.LOCAL_PACKAGE_FAILED.error(
        package=package, command=shlex.join(shown),
        exit_code=failed.exit_code, output=failed.tail)


def unpinned_requirements(app_dir: Path, lock_file: str) -> list[str]:
    """Requirement lines (in the file and its -r includes) not pinned with ``==``."""
    found = []
    for rel in requirements_files(app_dir, lock_file):
        for _number, line in _logical_lines(app_dir / rel):
            if _OPTION.match(line):
                continue
            requirement = re.split(r"\s+--hash", line)[0].strip()
            if not _PINNED.match(requirement) and not _LOCAL_PATH.match(requirement):
                found.append(requirement)
    return found


def _lock_like(app_dir: Path, files: list[str]) -> bool:
    """Every requirement pinned with ==, and no option uv might read differently."""
    for rel in files:
        for _number, line in _logical_lines(app_dir / rel):
            if _OPTION.match(line):
                if not _UV_SAFE_OPTIONS.match(line):
                    return False
                continue
            requirement = re.split(r"\s+--hash", line)[0].strip()
            if not _PINNED.match(requirement):
                return False
    return True


def local_package_files(app_dir: Path, files: list[str]) -> list[str]:
    """Every file of the local packages the requirements name (``./lib``), sorted.

    They determine what is installed as much as the requirements files do, so
    they are part of the layer key: editing a local package rebuilds the layer.
    """
    app_root = app_dir.resolve()
    found: set[str] = set()
    for rel in files:
        for number, line in _logical_lines(app_dir / rel):
            raw = local_reference(_EDITABLE_PREFIX.sub("", line, count=1))
            if raw is None:
                continue
            if raw.startswith("file:"):
                raw = re.sub(r"^file:(//)?", "", raw)
            base = (app_dir / rel).parent if not raw.startswith("/") else Path("/")
            target = (base / raw).resolve()
            if not target.is_relative_to(app_root):
                raise errors.REQUIREMENTS_OUTSIDE_APP.error(referrer=rel, line=number, target=raw)
            found.update(package_tree_files(app_root, target))
    return sorted(found)


def package_tree_files(app_root: Path, target: Path) -> list[str]:
    """The files of a local package (a directory or an archive), relative to the app.

    Build output and caches are left out: installing writes them into the
    package's own directory, and they do not change what is installed. So is
    what the build adds at the app's root (the runtime), for ``-e .``.
    """
    if target.is_file():
        return [target.relative_to(app_root).as_posix()]
    found = []
    for dirpath, dirnames, filenames in os.walk(target):
        relative_dir = Path(dirpath).relative_to(app_root)
        dirnames[:] = sorted(
            name for name in dirnames
            if name not in _SKIPPED_PARTS and not name.endswith(".egg-info")
            and not (relative_dir == Path(".") and name in _BUILD_OUTPUT_AT_ROOT))
        for name in filenames:
            path = Path(dirpath) / name
            if not name.endswith(".pyc") and path.is_file():
                found.append((relative_dir / name).as_posix())
    return sorted(found)
