"""Pipenv: what ``pipenv install --deploy`` installs, from Pipfile.lock.

uv installs the lock's ``default`` pins exactly (``--no-deps
--require-hashes``). Where they come from:

- **Read from the lock** when it proves itself current: its
  ``_meta.hash.sha256`` is the hash Pipenv computes from the Pipfile (what
  ``pipenv verify`` and ``--deploy`` check), and every default package is a
  pinned, hashed index package. The pins are then what ``pipenv requirements
  --hash`` prints, without installing or starting Pipenv (2.7 s of a 5.0 s
  cold build).
- **Exported by Pipenv** otherwise (a hash that does not match, VCS, path or
  file packages): ``pipenv verify`` refuses a stale lock, ``pipenv
  requirements --hash`` exports the default category. Pipenv lives in the tool
  cache and never reaches the slug.
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
from packaging.utils import canonicalize_name

from ..package_managers import relock_command
from ..proc import clean_env
from ..toml_compat import tomllib
from . import InstallJob, InstallPlan
from .locks import check_syntax, local_source_files, run_lock_tool, shown, write_export
from .tools import ensure_tool, tool_command, tool_version
from .uv import install_baseline, install_exported, prefetch_pins, uv_version

RELOCK = relock_command("pipenv")
# Pipfile sections the hash leaves out or files under _meta (plette's PIPFILE_SECTIONS).
_PIPFILE_SECTIONS = ("source", "packages", "dev-packages", "requires", "scripts", "pipfile",
                     "pipenv")
_DEFAULT_SOURCE = {"name": "pypi", "url": "https://pypi.org/simple", "verify_ssl": True}
# The keys of a lock entry for a plain pinned index package.
_PLAIN_ENTRY_KEYS = {"version", "hashes", "markers", "index", "extras"}


class PipenvInstaller:
    name = "pipenv"

    def plan(self, app_dir: Path, lock_file: str,
             config_vars: Mapping[str, str]) -> InstallPlan:
        manifest = ["Pipfile"] if (app_dir / "Pipfile").is_file() else []
        return InstallPlan(
            name=self.name, tool="uv", version=f"{tool_version('pipenv')} + uv=={uv_version()}",
            key_files=("Pipfile.lock", *manifest, *local_source_files(app_dir, lock_file)),
            installer_version=uv_version(),
            installer_reason="Pipfile.lock: its default pins (read from the lock, or exported "
                             "by pipenv when the lock cannot prove itself current) installed "
                             "exactly by uv, as pipenv install --deploy would")

    def prefetch(self, job: InstallJob, plan: InstallPlan) -> subprocess.Popen[bytes] | None:
        """Download the default packages ahead, when the lock can be read without Pipenv."""
        return prefetch_pins(job, locked_default_pins(job.app_dir), "pipenv")

    def install_baseline(self, job: InstallJob, plan: InstallPlan,
                         requirements: tuple[str, ...]) -> None:
        install_baseline(job, requirements)

    def install(self, job: InstallJob, plan: InstallPlan) -> None:
        install_exported(job, self.export(job, plan), "pipenv")

    def export(self, job: InstallJob, plan: InstallPlan) -> Path:
        """The lock's default pins as hashed requirements (what ``install`` installs),
        written to the job's scratch: read from a current lock, else by Pipenv."""
        check_syntax(job.app_dir, job.lock_file, RELOCK)
        pins = locked_default_pins(job.app_dir)
        if pins is not None:
            job.reporter.detail("Pipfile.lock is current (its hash matches the Pipfile); "
                                "installing its [packages] (as `pipenv install --deploy`)")
            return write_export(job, pins, "pipenv-pins.txt")
        return self._export_with_pipenv(job)

    def _export_with_pipenv(self, job: InstallJob) -> Path:
        tool = ensure_tool("pipenv", job)
        env = clean_env({
            "PYTHONPATH": str(tool), "PIPENV_VERBOSITY": "-1", "PIPENV_NOSPIN": "1",
            "PIPENV_YES": "1", "PIPENV_IGNORE_VIRTUALENVS": "1", "NO_COLOR": "1",
            "PIPENV_PIPFILE": str(job.app_dir / "Pipfile"),
        }, exports=job.exports)
        if (job.app_dir / "Pipfile").is_file():
            run_lock_tool(job, [*tool_command("pipenv"), "verify"], env,
                          shown("pipenv", "verify"), "Pipfile", RELOCK)
        else:
            job.reporter.warn("Pipfile.lock has no Pipfile beside it: installing the lock "
                              "as it is, without checking it is current.")
            env["PIPENV_PIPFILE"] = str(job.scratch / "Pipfile")
            (job.scratch / "Pipfile").write_text("")
            (job.scratch / "Pipfile.lock").write_bytes((job.app_dir / job.lock_file).read_bytes())
        exported = run_lock_tool(job, [*tool_command("pipenv"), "requirements", "--hash"], env,
                                 shown("pipenv", "requirements", "--hash"), "Pipfile", RELOCK)
        job.reporter.detail("Installing the [packages] pinned in Pipfile.lock "
                            "(as `pipenv install --deploy`)")
        return write_export(job, exported, "pipenv-export.txt")


def pipfile_hash(pipfile: dict[str, Any]) -> str:
    """The ``_meta.hash.sha256`` Pipenv writes for this Pipfile.

    plette's hash (a Pipfile without [[source]] gets PyPI) with every package
    name in canonical form, as Pipenv computes it since it stopped
    re-locking for a change of case.
    """
    def canonical(section: dict[str, Any]) -> dict[str, Any]:
        # Anything else as a section makes Pipenv's own hash fail: left to Pipenv.
        return {canonicalize_name(name): value for name, value in section.items()}

    data = {
        "_meta": {"sources": pipfile.get("source", [_DEFAULT_SOURCE]),
                  "requires": pipfile.get("requires", {})},
        "default": canonical(pipfile.get("packages", {})),
        "develop": canonical(pipfile.get("dev-packages", {})),
    }
    for category, values in pipfile.items():
        if category not in (*_PIPFILE_SECTIONS, "default", "develop"):
            data[category] = canonical(values)
    content = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(content.encode()).hexdigest()


def locked_default_pins(app_dir: Path) -> str | None:
    """The default packages of a current lock as ``pipenv requirements --hash`` would
    print them, or None when only Pipenv can say (see the module docstring)."""
    try:
        lock = json.loads((app_dir / "Pipfile.lock").read_text())
        pipfile = tomllib.loads((app_dir / "Pipfile").read_text())
        meta, default = lock["_meta"], lock["default"]
        if meta["hash"]["sha256"] != pipfile_hash(pipfile):
            return None
        sources = [source["url"] for source in meta["sources"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None
    if not isinstance(default, dict) or not all(isinstance(url, str) for url in sources):
        return None
    lines = [f"{'-i' if i == 0 else '--extra-index-url'} {_braced_env_vars(url)}\n"
             for i, url in enumerate(sources)]
    for name, entry in default.items():
        line = _pin_line(name, entry)
        if line is None:
            return None
        lines.append(line)
    return "".join(lines)


def _braced_env_vars(url: str) -> str:
    """Pipenv writes a bare ``$VAR`` in an index URL as ``${VAR}``, the form pip expands."""
    return re.sub(r"\$([A-Za-z_][A-Za-z0-9_]*)", r"${\1}", url)


def _pin_line(name: str, entry: object) -> str | None:
    """``name[extras]==version; marker --hash=...`` for a plain pinned entry, else None."""
    if not isinstance(entry, dict) or not set(entry) <= _PLAIN_ENTRY_KEYS:
        return None  # VCS, path, file and editable entries: Pipenv exports them
    version, hashes = entry.get("version"), entry.get("hashes")
    extras, marker = entry.get("extras", []), entry.get("markers") or ""
    if (not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name)
            or not isinstance(version, str) or not re.fullmatch(r"==[0-9][0-9A-Za-z.!+-]*", version)
            or not isinstance(hashes, list) or not hashes
            or not all(isinstance(h, str) and re.fullmatch(r"sha\d+:[0-9a-f]+", h)
                       for h in hashes)
            or not isinstance(extras, list)
            or not all(isinstance(e, str) and re.fullmatch(r"[A-Za-z0-9._-]+", e) for e in extras)
            or not isinstance(marker, str)):
        return None
    try:
        Marker(marker) if marker else None
    except InvalidMarker:
        return None
    condition = f"; {marker}" if marker else ""
    extra_text = f"[{','.join(extras)}]" if extras else ""
    return (f"{name}{extra_text}{version}{condition}"
            + "".join(f" --hash={h}" for h in hashes) + "\n")
