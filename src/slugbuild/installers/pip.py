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
from pathlib import Path

from .. import errors
from ..proc import ToolFailed, clean_env, exported_config, run_tool
from ..redact import redact_url as redact
from . import InstallJob

DEFAULT_INDEX_URL = "https://pypi.org/simple"

_INCLUDE = re.compile(
    r"^\s*(?:(?P<short>-[rc])\s*|(?P<long>--requirement|--constraint)(?:\s*=\s*|\s+))"
    r"(?P<path>[^\s#]+)"
)
_EDITABLE = re.compile(r"^\s*(?:-e|--editable)(?:\s*=\s*|\s+)\S")
_OPTION = re.compile(r"^\s*-")
# A requirement that is a local directory or archive: ./pkg, ../x, /abs, file:...
_LOCAL_PATH = re.compile(r"^(?:\.{1,2}/|/|file:)(?P<path>[^\s;#\[]*)")
# Never part of a local package's content (build output and caches).
_SKIPPED_PARTS = frozenset({"__pycache__", ".git", "build", "dist", ".tox", ".venv"})
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
    resolver to decide, so uv installs them (pip's index semantics kept with
    ``--index-strategy unsafe-best-match``): the same packages, several times
    faster (benchmarks/installers.py). Anything else (ranges, URLs, VCS,
    pip-only options) is pip's job. ``key_files`` makes the choice, before
    ``version()`` is asked for the layer key; SLUGBUILD_PIP_INSTALLER=pip|uv
    overrides it.
    """

    name = "pip"

    def __init__(self) -> None:
        self.tool = "pip"

    def version(self) -> str:
        from importlib.metadata import version

        if self.tool == "uv":
            return f"uv=={version('uv')}, every requirement pinned"
        return version("pip")

    def key_files(self, app_dir: Path, lock_file: str, config_vars: dict) -> list[str]:
        files = requirements_files(app_dir, lock_file)
        reject_editables(app_dir, files)
        local = local_package_files(app_dir, files)
        forced = config_vars.get(INSTALLER_CONFIG_VAR, "").strip().lower()
        if forced in ("pip", "uv"):
            self.tool = forced
        else:
            self.tool = "uv" if _lock_like(app_dir, files) else "pip"
        return files + local

    def command(self, job: InstallJob) -> list[str]:
        """pip's command line; the indexes are in its environment (``pip_env``)."""
        argv = [
            sys.executable, "-m", "pip", "--python", str(job.python), "install",
            "--no-input", "--disable-pip-version-check", "--no-compile",
            "--no-warn-script-location", "--progress-bar", "off", "--root-user-action", "ignore",
            "--cache-dir", str(job.cache.pip_cache),
        ]
        cert = trusted_ca_bundle()
        if cert:
            argv += ["--cert", cert]
        if job.prefix is not None:
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
        if self.tool == "uv":
            from .uv import install_requirements

            install_requirements(job)
            return
        try:
            run_tool(self.command(job), job.reporter, pip_env(job.config_vars),
                     cwd=job.app_dir)
        except ToolFailed as failed:
            raise install_failed(job, ["pip", "install", "-r", job.lock_file], failed) from failed


def pip_env(config_vars: dict, extra: dict | None = None) -> dict:
    """pip's environment: the build config vars (as on Heroku), the index made
    explicit, and the machine's pip config shut out.

    Indexes go through PIP_INDEX_URL / PIP_EXTRA_INDEX_URL, never the command
    line, where `ps` would show the credentials an index URL may hold.
    """
    return clean_env({**exported_config(config_vars), "PIP_CONFIG_FILE": os.devnull,
                      "PIP_INDEX_URL": config_vars.get("PIP_INDEX_URL") or DEFAULT_INDEX_URL,
                      # Nothing written into the interpreter's tree (see uv_env).
                      "PYTHONDONTWRITEBYTECODE": "1",
                      **(extra or {})})


def install_failed(job: InstallJob, shown: list[str], failed: ToolFailed) -> errors.SlugbuildError:
    """The error for an installer that exited non-zero (index shown without credentials)."""
    return errors.DEPENDENCY_INSTALL_FAILED.error(
        command=shlex.join(shown),
        exit_code=failed.exit_code,
        lock_file=job.lock_file,
        index=redact(job.config_vars.get("PIP_INDEX_URL") or DEFAULT_INDEX_URL),
        output=failed.tail,
    )


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


def _logical_lines(path: Path) -> list[tuple[int, str]]:
    """Lines of a requirements file with continuations joined and comments dropped."""
    result: list[tuple[int, str]] = []
    buffer, start = "", 0
    try:
        text = path.read_text()
    except UnicodeDecodeError as exc:  # pip would stop on it with a traceback
        raise errors.FILE_NOT_TEXT.error(file=path.name, reason=exc.reason) from None
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


def reject_editables(app_dir: Path, files: list[str]) -> None:
    """``-e`` installs point into the build directory: refuse them with advice."""
    for rel in files:
        for number, line in _logical_lines(app_dir / rel):
            if _EDITABLE.match(line):
                raise errors.EDITABLE_REQUIREMENT.error(file=rel, line=number, text=line)


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
            match = _LOCAL_PATH.match(line)
            if not match:
                continue
            raw = line.split()[0].split(";")[0]
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
    package's own directory, and they do not change what is installed.
    """
    candidates = [target] if target.is_file() else sorted(target.rglob("*"))
    found = []
    for path in candidates:
        relative = path.relative_to(app_root)
        if path.is_file() and not _SKIPPED_PARTS.intersection(relative.parts) \
                and not relative.name.endswith(".pyc") \
                and not any(part.endswith(".egg-info") for part in relative.parts):
            found.append(relative.as_posix())
    return found
