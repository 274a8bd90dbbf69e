"""The one reader of requirements files and exported pins.

pip's requirements format is read in three places: an app's requirements.txt
(and its -r/-c includes), and the pins a lock tool exports (Pipenv, Poetry,
uv), which uv then installs. Logical lines (continuations joined, comments
dropped), includes, local packages, pins and index options are all read
here, so every installer and the layer key agree on what a file says.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from .. import errors
from ..stage import IgnoreRules
from ..textfiles import encoding_like_pip, read_text_like_pip
from ..tree import walk_sorted

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

# Config var that forces one tool for requirements.txt (escape hatch: "pip" or "uv").
INSTALLER_CONFIG_VAR = "SLUGBUILD_PIP_INSTALLER"
# Options a lock-like requirements file may use and still be installed by uv.
_UV_SAFE_OPTIONS = re.compile(
    r"^\s*(?:-r|-c|--requirement|--constraint|-i|--index-url|--extra-index-url|"
    r"--require-hashes)(?:[\s=]|$)"
)
# A direct reference to version control or a URL: ``x @ git+https://…``, ``git+https://…``.
_DIRECT_URL = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]*(?:\[[^\]]*\])?\s*@\s*)?"
                         r"(?:git|hg|svn|bzr)\+|^(?:[A-Za-z0-9][A-Za-z0-9._-]*"
                         r"(?:\[[^\]]*\])?\s*@\s*)?https?://")
_INDEX_LINE = re.compile(r"^\s*(?:-i|--index-url|--extra-index-url)(?:\s*=\s*|\s+)(?P<url>\S+)")


def requirements_files(app_dir: Path, lock_file: str) -> list[str]:
    """``lock_file`` and every file it reaches through -r/-c, relative to the app."""
    app_root = app_dir.resolve()
    seen: list[str] = []
    pending: list[tuple[str, str | None, int]] = [(lock_file, None, 0)]
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
        for number, line in logical_lines(path):
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
        for _number, line in logical_lines(path):
            match = _INCLUDE.match(line)
            if match and "://" not in match.group("path"):
                walk((path.parent / match.group("path")).resolve())
            else:
                result.append((path, line))

    walk((app_root / lock_file).resolve())
    return result


def logical_lines(path: Path) -> list[tuple[int, str]]:
    """Lines of a requirements file with continuations joined and comments dropped."""
    return logical_lines_of(read_text_like_pip(path))  # BOMs, coding lines, CRLF: as pip


def logical_lines_of(text: str) -> list[tuple[int, str]]:
    """(first line number, line) of requirements text, continuations joined and
    comments dropped."""
    result: list[tuple[int, str]] = []
    buffer, start = "", 0
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
        for _number, line in logical_lines(path):
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
                     for _number, line in logical_lines(path) if _EDITABLE.match(line)]
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
               for _number, line in logical_lines(app_dir / rel))


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
        for _number, line in logical_lines(app_dir / rel):
            reference = local_reference(_EDITABLE_PREFIX.sub("", line, count=1))
            if reference is not None:
                found.append(reference)
    return found


def unpinned_requirements(app_dir: Path, lock_file: str) -> list[str]:
    """Requirement lines (in the file and its -r includes) not pinned with ``==``."""
    found = []
    for rel in requirements_files(app_dir, lock_file):
        for _number, line in logical_lines(app_dir / rel):
            if _OPTION.match(line):
                continue
            requirement = re.split(r"\s+--hash", line)[0].strip()
            if not _PINNED.match(requirement) and not _LOCAL_PATH.match(requirement):
                found.append(requirement)
    return found


def requirements_tool(app_dir: Path, files: list[str], config_vars: Mapping[str, str]) -> str:
    """The backend for these requirements files: "uv" unless they need something only
    pip does as pip does (``pip_only_reason``); SLUGBUILD_PIP_INSTALLER=pip|uv
    overrides the choice."""
    forced = config_vars.get(INSTALLER_CONFIG_VAR, "").strip().lower()
    if forced in ("pip", "uv"):
        return forced
    return "pip" if pip_only_reason(app_dir, files) is not None else "uv"


# Why each backend was chosen, as slug.json's installer_reason and the log say it.
PINNED_REASON = "every requirement is pinned (==), so uv installs exactly what pip would, faster"
RANGES_REASON = ("uv resolves the version ranges (the newest versions they allow, as pip "
                 "picks them) and installs the resolved pins, faster than pip")


def requirements_tool_reason(app_dir: Path, files: list[str],
                             config_vars: Mapping[str, str]) -> str:
    """Why ``requirements_tool`` chose its backend, in words for slug.json and the log."""
    forced = config_vars.get(INSTALLER_CONFIG_VAR, "").strip().lower()
    if forced in ("pip", "uv"):
        return f"{INSTALLER_CONFIG_VAR}={forced}"
    reason = pip_only_reason(app_dir, files)
    if reason is not None:
        return f"{reason}: pip installs it, as on Heroku"
    return PINNED_REASON if lock_like(app_dir, files) else RANGES_REASON


def lock_like(app_dir: Path, files: list[str]) -> bool:
    """Every requirement pinned with ==, and no option uv might read differently:
    nothing left for a resolver to decide."""
    for rel in files:
        for _number, line in logical_lines(app_dir / rel):
            if _OPTION.match(line):
                if not _UV_SAFE_OPTIONS.match(line):
                    return False
                continue
            requirement = re.split(r"\s+--hash", line)[0].strip()
            if not _PINNED.match(requirement):
                return False
    return True


def pip_only_reason(app_dir: Path, files: list[str]) -> str | None:
    """Why these requirements files need pip itself, or None when uv installs them as
    pip would (pins, version ranges, extras, markers, URLs and version control
    references, includes, index URLs).

    What stays with pip: an option uv reads differently or not at all
    (``--find-links`` weighed against the index, ``--pre``, ``--no-binary``, build
    options, ...), local packages and editables (built by pip from a copy of the
    app, as before), and hashes beside a requirement that is not pinned (pip's
    hash-checking mode refuses that, with pip's own message).
    """
    hashed = False
    unpinned = None
    for rel in files:
        for number, line in logical_lines(app_dir / rel):
            if _EDITABLE.match(line):
                written = _EDITABLE_PREFIX.sub("", line, count=1).split()[0]
                return f"{rel} line {number} installs {written} as editable (a local package)"
            if _OPTION.match(line):
                if not _UV_SAFE_OPTIONS.match(line):
                    option = re.split(r"[\s=]", line.strip(), maxsplit=1)[0]
                    return f"{rel} line {number} uses {option}, which uv reads differently"
                hashed = hashed or line.strip().startswith("--require-hashes")
                continue
            requirement = re.split(r"\s+--hash", line)[0].strip()
            hashed = hashed or "--hash" in line
            local = local_reference(requirement)
            if local is not None:
                return f"{rel} line {number} names a local package ({local})"
            if unpinned is None and not _PINNED.match(requirement):
                unpinned = f"{rel} line {number} ({requirement})"
    if hashed and unpinned is not None:
        return f"hashes are given but {unpinned} is not pinned (pip's hash-checking mode)"
    return None


def local_package_files(app_dir: Path, files: list[str]) -> list[str]:
    """Every file of the local packages the requirements name (``./lib``), sorted.

    They determine what is installed as much as the requirements files do, so
    they are part of the layer key: editing a local package rebuilds the layer.
    """
    app_root = app_dir.resolve()
    found: set[str] = set()
    for rel in files:
        for number, line in logical_lines(app_dir / rel):
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
    def keep(directory: Path, name: str) -> bool:
        at_root = directory.relative_to(app_root) == Path(".")
        return (name not in _SKIPPED_PARTS and not name.endswith(".egg-info")
                and not (at_root and name in _BUILD_OUTPUT_AT_ROOT))

    return sorted((directory / name).relative_to(app_root).as_posix()
                  for directory, _dirnames, filenames in walk_sorted(target, keep)
                  for name in filenames
                  if not name.endswith(".pyc") and (directory / name).is_file())


def split_index_lines(text: str) -> tuple[list[str], str]:
    """Index URLs named in an exported requirements file, and the file without them."""
    return _partition_lines(text, _INDEX_LINE, "url")


def _partition_lines(text: str, pattern: re.Pattern[str], group: str) -> tuple[list[str], str]:
    """The ``group`` of every line ``pattern`` matches, and the text of the other lines."""
    found, kept = [], []
    for line in text.splitlines():
        match = pattern.match(line)
        if match:
            found.append(match.group(group))
        else:
            kept.append(line)
    return found, "\n".join(kept) + "\n"


def export_requirements(text: str) -> list[str]:
    """The requirement lines of exported pins (options and hashes left out)."""
    return [re.split(r"\s+--hash", line)[0].strip()
            for _number, line in logical_lines_of(text) if not _OPTION.match(line)]


def split_local_lines(text: str) -> tuple[str, list[str]]:
    """Exported pins without the local packages, and those packages as written
    (``./libs/x``, ``.``, ``/abs/x``, ``file:...``, ``name @ file:...``, each with
    any marker).

    An editable (``-e ./libs/x``, ``-e .``) is installed as a regular copy: an
    editable install would point into the build directory, which the slug does
    not have.
    """
    kept, local = [], []
    for logical, joined in logical_requirements(text):
        requirement = _EDITABLE_PREFIX.sub("", joined, count=1).split(" --hash")[0].strip()
        if "--hash" not in joined and local_reference(requirement) is not None:
            local.append(requirement)
        else:
            kept += logical
    return "\n".join(kept) + "\n", local


def split_unhashed_urls(text: str) -> tuple[str, list[str]]:
    """Exported pins without the version control and URL references that carry no
    hash (``-e`` dropped), and those references."""
    kept, direct = [], []
    for logical, joined in logical_requirements(text):
        requirement = _EDITABLE_PREFIX.sub("", joined, count=1).strip()
        if "--hash" not in joined and _DIRECT_URL.match(requirement):
            direct.append(requirement)
        else:
            kept += logical
    return "\n".join(kept) + "\n", direct


def logical_requirements(text: str) -> list[tuple[list[str], str]]:
    """Each requirement of an export: its physical lines, and them joined as one."""
    found = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        logical = [lines[index]]
        while logical[-1].endswith("\\") and index + 1 < len(lines):
            index += 1
            logical.append(lines[index])
        index += 1
        found.append((logical, " ".join(part.rstrip("\\").strip() for part in logical)))
    return found


def local_requirement(written: str, app_dir: Path) -> str:
    """A local requirement with a relative path made absolute (against ``app_dir``),
    so it means the same whatever directory reads it."""
    path, separator, marker = written.partition(";")
    path = path.strip()
    if path.startswith(("file:", "/")) or _NAMED_FILE_URL.match(path):
        return written
    absolute = os.path.normpath(app_dir / path)
    return absolute + (f" ;{marker}" if separator else "")
