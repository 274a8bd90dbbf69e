"""What every lock-file installer shares: read the lock, check it, export its pins."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

from .. import errors
from ..package_managers import by_lock_file
from ..proc import ToolFailed, run_tool
from ..step_jail import StepRunner, Unsealed
from ..textfiles import read_utf8
from ..toml_compat import tomllib
from . import InstallJob
from .common import own_scratch


def check_syntax(app_dir: Path, lock_file: str, relock: str) -> None:
    """A lock that does not parse gets a message naming the line, before any tool runs."""
    text = read_utf8(app_dir / lock_file, lock_file, bom_allowed=lock_file == "uv.lock")
    syntax = by_lock_file(lock_file).lock_syntax
    if text.startswith("\ufeff"):  # Poetry (tomlkit) and Pipenv (json) stop on it
        raise errors.LOCK_FILE_MALFORMED.error(
            variant="bom", lock_file=lock_file, syntax=syntax, relock=relock,
            tool="Pipenv" if lock_file == "Pipfile.lock" else "Poetry")
    try:
        if syntax == "TOML":
            tomllib.loads(text)
            return
        data = json.loads(text)
        if not isinstance(data, dict) or "default" not in data:
            raise ValueError("it has no \"default\" section of packages")
        _check_pipfile_lock_shape(data)
    except json.JSONDecodeError as exc:
        raise errors.LOCK_FILE_MALFORMED.error(
            lock_file=lock_file, syntax="JSON", problem=str(exc), relock=relock) from None
    except (ValueError, RecursionError) as exc:  # TOMLDecodeError is a ValueError
        raise errors.LOCK_FILE_MALFORMED.error(
            variant="too-deep" if isinstance(exc, RecursionError) else None,
            lock_file=lock_file, syntax=syntax, problem=str(exc), relock=relock) from None


def _check_pipfile_lock_shape(data: dict[str, Any]) -> None:
    """The sections Pipenv itself reads without checking (a wrong type there makes
    it crash, or install nothing with exit 0): as Pipenv writes them, else ValueError."""
    if not isinstance(data["default"], dict) or not isinstance(data.get("develop", {}), dict):
        raise ValueError("its \"default\" or \"develop\" section is not a table of packages")
    meta = data.get("_meta")
    if not isinstance(meta, dict):
        raise ValueError("its \"_meta\" section is missing or not a table")
    shapes = {"hash": dict, "sources": list, "requires": dict}
    for key, kind in shapes.items():
        if key in meta and not isinstance(meta[key], kind):
            shown = "table" if kind is dict else "list"
            raise ValueError(f"its \"_meta.{key}\" is not a {shown}")
    if not isinstance(meta.get("hash", {}).get("sha256", ""), str) \
            or not all(isinstance(source, dict) for source in meta.get("sources", [])):
        raise ValueError("its \"_meta\" hash or sources are not what Pipenv writes")


# What uv, Poetry and Pipenv print when the lock no longer matches its manifest.
_OUTDATED = re.compile(
    r"needs to be updated|out[- ]of[- ]date|changed significantly since|"
    r"not consistent with|lock file is not up to date", re.IGNORECASE)


def run_lock_tool(job: InstallJob, argv: list[str], env: dict[str, str], shown: str, manifest: str,
                  relock: str, writes_caches: bool = False) -> str:
    """Run a tool that checks or exports the lock.

    A refusal that says the lock is stale is an outdated lock (re-locking fixes
    it); any other failure is reported as the tool's own, never as "run lock".
    It runs code slugbuild did not write (Poetry loads the plugins the project asks
    for; uv may build the project for its metadata), so it runs sealed
    (step_jail.py): the job's scratch and the build directory writable, and with
    ``writes_caches`` (uv) the installers' caches as an install has them; never
    ``tools/``, the layers or the stores.
    """
    runner: StepRunner = Unsealed()
    if job.seal is not None:
        runner = (job.seal.install_step(f"`{shown}`", own_scratch(job)) if writes_caches
                  else job.seal.step(f"`{shown}`", [job.scratch]))
    try:
        return runner.run_step(argv, lambda command: run_tool(
            command, job.reporter, env, cwd=job.app_dir, show=False))
    except ToolFailed as failed:
        from .failures import shown_paths

        # Not streamed (show=False): the output is shown here, with the app's paths.
        output = shown_paths(failed.tail, job.app_dir, job.source_dir, job.prefix)
        if _OUTDATED.search(failed.tail or ""):
            raise errors.LOCK_FILE_OUTDATED.error(
                lock_file=job.lock_file, manifest=manifest, command=shown, relock=relock,
                output=output,
            ) from failed
        raise errors.LOCK_TOOL_FAILED.error(
            command=shown, lock_file=job.lock_file, exit_code=failed.exit_code,
            output=output,
        ) from failed


def write_export(job: InstallJob, text: str, name: str) -> Path:
    """Write exported pins to the scratch directory (never into the app)."""
    path = job.scratch / name
    path.write_text(text)
    return path


def shown(*words: str) -> str:
    return shlex.join(words)


def local_source_files(app_dir: Path, lock_file: str) -> list[str]:
    """Files of the local (path/directory) packages a lock names, relative to the app.

    uv.lock: ``source = { directory | path | editable = ... }``; poetry.lock:
    ``[package.source] type = "directory" | "file"``; Pipfile.lock: ``"path"`` or
    ``"file"`` (``{editable = true, path = "."}`` is the app itself, which
    ``pipenv install --deploy`` installs: then every file of the app keys the layer).
    They are part of the layer key, so editing such a package rebuilds the layer.
    """
    from .requirements import package_tree_files

    text = read_utf8(app_dir / lock_file, lock_file, bom_allowed=lock_file == "uv.lock")
    try:
        if lock_file == "Pipfile.lock":
            data = json.loads(text)
            default = data.get("default") if isinstance(data, dict) else None
            entries = (default or {}).values() if isinstance(default or {}, dict) else []
            # "path" (directories, editable or not) and "file" (archives; a URL is
            # not local and keeps its hash).
            paths = [entry.get(k) for entry in entries if isinstance(entry, dict)
                     for k in ("path", "file")]
            paths = [p for p in paths if not (isinstance(p, str) and "://" in p)]
        else:
            packages = tomllib.loads(text).get("package", [])
            paths = []
            for package in packages if isinstance(packages, list) else []:
                source = package.get("source", {}) if isinstance(package, dict) else {}
                if not isinstance(source, dict):
                    continue
                if lock_file == "uv.lock":
                    paths += [source.get(k) for k in ("directory", "path", "editable")]
                elif source.get("type") in ("directory", "file"):
                    paths.append(source.get("url"))
    except (ValueError, RecursionError):
        return []  # check_syntax reports it with the line, when installing
    app_root = app_dir.resolve()
    found: set[str] = set()
    for raw in paths:
        if not isinstance(raw, str) or raw == "":
            continue
        if raw.startswith("file://"):
            raw = raw[len("file://"):]  # an absolute path (file:///app/x)
        elif raw.startswith("file:"):
            raw = raw[len("file:"):]  # a relative one (file:libs/x)
        if raw in (".", "./") and lock_file != "Pipfile.lock":
            continue  # uv's and Poetry's project itself, which is not installed
        target = (app_root / raw).resolve()
        if not target.is_relative_to(app_root):
            raise errors.REQUIREMENTS_OUTSIDE_APP.error(referrer=lock_file, line="-", target=raw)
        if target.exists():
            found.update(package_tree_files(app_root, target))
    return sorted(found)
