"""Resolve runtime stage: which Python the app asks for, and the version support policy.

Sources, first found wins (as Heroku's classic Python buildpack), then one more:

1. ``runtime.txt`` (``python-3.12.1`` or ``python-3.12``; deprecated, warns)
2. ``.python-version`` (``3.12`` or ``3.12.1``; ``#`` comments allowed)
3. ``Pipfile.lock`` ``_meta.requires.python_full_version``
4. ``Pipfile.lock`` ``_meta.requires.python_version``
5. ``pyproject.toml`` ``[project] requires-python`` (newest available match)
6. the minor version this app's previous build used without a version file
   ("sticky", as Heroku keeps it in the build cache; see ``sticky_minor``)
7. the default: the newest supported minor a runtime source can provide, never
   newer than Heroku's default (DEFAULT_PYTHON)

A major.minor request resolves to the newest available patch release.
``POLICY`` is the one table of supported, deprecated and refused minors with
their upstream end-of-life dates and newest known patches
(docs/python-versions.md shows it; a test keeps the two in step).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from . import errors
from .envflag import env_flag
from .toml_compat import tomllib

SUPPORTED = "supported"
DEPRECATED = "deprecated"
REFUSED = "refused"


@dataclass(frozen=True)
class MinorPolicy:
    """slugbuild's support of one CPython minor version, beside upstream's end of life."""

    minor: str  # "3.12"
    status: str  # SUPPORTED, DEPRECATED or REFUSED
    upstream_eol: str  # "2028-10": the month upstream stops security fixes
    newest_patch: str  # the newest patch release known when this table was last updated
    removal: str | None = None  # DEPRECATED only: the day slugbuild stops building it

    @property
    def parts(self) -> tuple[int, int]:
        major, minor = self.minor.split(".")
        return int(major), int(minor)


# THE version policy (newest first). Heroku's Python buildpack (v351) supports
# 3.10-3.14, deprecates 3.10 (removed 2027-01-06) and refuses older minors;
# slugbuild follows it. Upstream dates: https://devguide.python.org/versions/.
# Update newest_patch with every CPython release (docs/python-versions.md).
POLICY: tuple[MinorPolicy, ...] = (
    MinorPolicy("3.14", SUPPORTED, "2030-10", "3.14.7"),
    MinorPolicy("3.13", SUPPORTED, "2029-10", "3.13.15"),
    MinorPolicy("3.12", SUPPORTED, "2028-10", "3.12.14"),
    MinorPolicy("3.11", SUPPORTED, "2027-10", "3.11.16"),
    MinorPolicy("3.10", DEPRECATED, "2026-10", "3.10.21", removal="2027-01-06"),
    MinorPolicy("3.9", REFUSED, "2025-10", "3.9.25"),
    MinorPolicy("3.8", REFUSED, "2024-10", "3.8.20"),
)
_POLICY: dict[tuple[int, ...], MinorPolicy] = {p.parts: p for p in POLICY}

# Heroku's default: what an app without a version file gets at most.
DEFAULT_PYTHON = POLICY[0].minor
# Opt-in to build a refused (end-of-life) minor anyway.
ALLOW_EOL_ENV = "SLUGBUILD_ALLOW_EOL_PYTHON"


def policy_for(version: str) -> MinorPolicy | None:
    """The policy row of ``version``'s minor; None for a minor newer than the table.

    Minors older than the table are refused (a synthesised row says so).
    """
    parts = _as_tuple(version)[:2]
    if parts in _POLICY:
        return _POLICY[parts]
    if parts[0] < 3 or parts < POLICY[-1].parts:
        return MinorPolicy(".".join(map(str, parts)), REFUSED,
                           f"{POLICY[-1].upstream_eol} or earlier", "")
    return None


def newest_known_patch(version: str) -> str | None:
    """The newest patch of ``version``'s minor that the policy table knows of."""
    row = policy_for(version)
    return row.newest_patch if row and row.newest_patch else None


def default_minors() -> list[str]:
    """Minors the default may pick, newest first: supported ones, never past Heroku's."""
    return [p.minor for p in POLICY if p.status == SUPPORTED]

_VERSION = re.compile(r"^(?P<major>[1-9]\d*|0)\.(?P<minor>[1-9]\d*|0)(?:\.(?P<patch>[1-9]\d*|0))?$")
_LOOSE_VERSION = re.compile(r"^\d+(\.\d+)+$")

# The names Heroku reads, and what a misspelling of each looks like once
# normalised by _normalise_name.
VERSION_FILES = ("runtime.txt", ".python-version")
_NORMALISED_TARGETS = {"runtime": "runtime.txt", "python-version": ".python-version"}

FROM_FILE = "file"
FROM_STICKY = "sticky"
FROM_DEFAULT = "default"


@dataclass(frozen=True)
class PythonRequest:
    """What the app asked for and where that came from.

    ``requested`` is ``3.12`` / ``3.12.1``, or a PEP 440 specifier such as
    ``>=3.11`` when it came from ``requires-python``. ``origin`` is FROM_FILE,
    FROM_STICKY (the minor this app's previous build used) or FROM_DEFAULT.
    """

    requested: str
    source_file: str | None  # None when no file decided (sticky or default)
    warnings: tuple[str, ...] = field(default=(), compare=False)
    origin: str = FROM_FILE

    @property
    def is_specifier(self) -> bool:
        return not _VERSION.match(self.requested)

    @property
    def is_default(self) -> bool:
        return self.origin == FROM_DEFAULT

    @property
    def is_exact(self) -> bool:
        """An exact patch pin (``3.12.4``)."""
        return not self.is_specifier and len(self.parts) == 3

    @property
    def parts(self) -> tuple[int, ...]:
        return tuple(int(p) for p in self.requested.split("."))

    @property
    def major_minor(self) -> str:
        return ".".join(self.requested.split(".")[:2])

    @property
    def where(self) -> str:
        """The file to change, for messages: the source file, else ``.python-version``."""
        return self.source_file or ".python-version"

    def describe_source(self) -> str:
        if self.origin == FROM_STICKY:
            return ("(no Python version file; the minor version this app's previous build "
                    "used, kept in the build cache as on Heroku)")
        if self.source_file is None:
            return "the default (no Python version file found)"
        return f"specified in {self.source_file}"

    def matches(self, version: str) -> bool:
        """Whether ``version`` (N.N.N) satisfies this request."""
        if self.is_specifier:
            return Version(version) in SpecifierSet(self.requested)
        wanted = self.parts
        return _as_tuple(version)[: len(wanted)] == wanted


def read_request(app_dir: Path, sticky: str | None = None) -> PythonRequest:
    """The Python version the app asks for, from its version files, ``sticky`` (the
    minor an earlier build of this app used without a version file) or the default."""
    _check_misspelled_names(app_dir)
    runtime_txt = app_dir / "runtime.txt"
    if runtime_txt.is_file():
        version = _parse_runtime_txt(_read(runtime_txt, "runtime.txt"))
        return PythonRequest(version, "runtime.txt", (_runtime_txt_hint(app_dir, version),))
    python_version = app_dir / ".python-version"
    if python_version.is_file():
        text = _read(python_version, ".python-version")
        return PythonRequest(_parse_python_version(text), ".python-version")
    pipfile_lock = app_dir / "Pipfile.lock"
    if pipfile_lock.is_file():
        request = _read_pipfile_lock(_read(pipfile_lock, "Pipfile.lock"))
        if request:
            return request
    pyproject = app_dir / "pyproject.toml"
    if pyproject.is_file():
        request = _read_pyproject(_read(pyproject, "pyproject.toml"))
        if request:
            return request
    if sticky and _VERSION.match(sticky) and len(sticky.split(".")) == 2:
        row = policy_for(sticky)
        if row is not None and row.status != REFUSED:
            return PythonRequest(sticky, None, origin=FROM_STICKY)
        return PythonRequest(DEFAULT_PYTHON, None, (
            f"This app's previous build used Python {sticky} (no version file), which is "
            f"no longer supported; using the default instead. Pin a version in "
            f".python-version.",), origin=FROM_DEFAULT)
    return PythonRequest(DEFAULT_PYTHON, None, origin=FROM_DEFAULT)


def request_from_argument(value: str, where: str) -> PythonRequest:
    """A version given on the command line (``--python 3.12``), checked as a
    ``.python-version`` line is; ``where`` names the option in messages."""
    text = value.strip()
    problem = _version_problem(text)
    if problem:
        raise _invalid(where, text, problem, "3.12")
    return PythonRequest(text, where)


def _runtime_txt_hint(app_dir: Path, version: str) -> str:
    """The deprecation warning of runtime.txt, fitted to the app's .python-version."""
    heading = "runtime.txt is deprecated (as on Heroku) and wins over .python-version. "
    other = app_dir / ".python-version"
    if other.is_file():
        try:
            kept = _parse_python_version(_read(other, ".python-version"))
        except errors.SlugbuildError:
            kept = None
        if kept == version:
            return heading + f"Your .python-version already asks for {kept}: `rm runtime.txt`."
        if kept is not None:
            return heading + (f"It asks for {version}, your .python-version for {kept}. Put "
                              f"the version you want in .python-version, then `rm runtime.txt`.")
    return heading + (f"Replace it with a .python-version file holding `{_major_minor(version)}`"
                      f": `echo {_major_minor(version)} > .python-version && rm runtime.txt`.")


def _major_minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def _normalise_name(name: str) -> str:
    name = name.lower().lstrip(".").replace("_", "-").replace(" ", "-")
    for suffix in (".txt", ".text", ".tx"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    if name in ("pythonversion", "python-versions", "py-version", "pyversion"):
        name = "python-version"
    if name in ("runtimes",):
        name = "runtime"
    return name


def _check_misspelled_names(app_dir: Path) -> None:
    """A near-miss of runtime.txt / .python-version is an error when the real one is absent."""
    try:
        names = sorted(p.name for p in app_dir.iterdir() if p.is_file())
    except OSError:
        return
    for name in names:
        target = _NORMALISED_TARGETS.get(_normalise_name(name))
        if target and name != target and not (app_dir / target).is_file():
            raise errors.MISSPELLED_VERSION_FILE.error(found=name, expected=target)


def _read(path: Path, source_file: str) -> str:
    """Text of a version file as editors write it: UTF-8 (with or without a BOM), or
    UTF-16 with a BOM (Windows PowerShell 5's `echo 3.12 > .python-version`).

    UTF-16 without a BOM and other bytes are refused with a message saying how to
    save the file.
    """
    data = path.read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise errors.VERSION_FILE_UNREADABLE.error(
                variant="utf-16-invalid", source_file=source_file, byte=exc.start) from exc
    if b"\x00" in data:
        raise errors.VERSION_FILE_UNREADABLE.error(
            variant="utf-16-without-bom", source_file=source_file)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise errors.VERSION_FILE_UNREADABLE.error(
            variant="utf-8-invalid", source_file=source_file, byte=exc.start) from exc


def _version_problem(text: str) -> str | None:
    """Why ``text`` is not ``N.N`` / ``N.N.N`` (the INVALID_PYTHON_VERSION variant that
    says so), or None when it is."""
    # No Python version part has more than a few digits; a longer one would reach int()
    # (which refuses past 4,300 digits) and is no version anyway.
    if any(len(digits) > 6 for digits in re.findall(r"\d+", text)):
        return "not-a-version"
    if _VERSION.match(text):
        return None
    if _LOOSE_VERSION.match(text):
        if len(text.split(".")) > 3:
            return "too-many-parts"
        return "leading-zero"
    if re.match(r"^\d+$", text):
        return "major-only"
    lowered = text.lower()
    if lowered.startswith(("pypy", "graalpy", "pyston")):
        return "other-implementation"
    if re.match(r"^\d+\.\d+(\.\d+)?t$", lowered) or "freethreaded" in lowered:
        return "free-threaded"
    if re.match(r"^[<>=!~^]", text):
        return "range"
    if lowered.startswith(("python-", "python", "cpython", "py")):
        return "python-prefix"
    if re.match(r"^\d+\.\d+(\.\d+)?(a|b|rc|\.dev)", text):
        return "pre-release"
    return "not-a-version"


def _invalid(source_file: str, content: str, problem: str, example: str,
             count: int = 0) -> errors.SlugbuildError:
    """INVALID_PYTHON_VERSION in its ``problem`` variant."""
    return errors.INVALID_PYTHON_VERSION.error(
        variant=problem, source_file=source_file, content=content.strip()[:200],
        example=example, count=count)


def _content_lines(text: str) -> list[str]:
    """Lines that are neither blank nor comments, trimmed (CR, LF, CRLF all end a line).

    As uv and pyenv read ``.python-version``: a line whose first non-blank
    character is ``#`` is a comment; so is the rest of a line after `` #``.
    """
    lines = []
    for line in text.splitlines():
        line = re.split(r"(?:^|\s)#", line, maxsplit=1)[0].strip()
        if line:
            lines.append(line)
    return lines


def _parse_python_version(text: str) -> str:
    versions = _content_lines(text)
    if not versions:
        raise _invalid(".python-version", text, "no-version", "3.12")
    if len(versions) > 1:
        raise _invalid(".python-version", text, "several-versions", "3.12",
                       count=len(versions))
    problem = _version_problem(versions[0])
    if problem:
        raise _invalid(".python-version", versions[0], problem, "3.12")
    return versions[0]


def _parse_runtime_txt(text: str) -> str:
    lines = _content_lines(text)
    if not lines:
        raise _invalid("runtime.txt", text, "empty", "python-3.12.1")
    if len(lines) > 1:
        raise _invalid("runtime.txt", text, "several-lines", "python-3.12.1",
                       count=len(lines))
    match = re.fullmatch(r"python-(\S+)", lines[0])
    if not match:
        raise _invalid("runtime.txt", lines[0], "no-python-prefix", "python-3.12.1")
    problem = _version_problem(match.group(1))
    if problem:
        raise _invalid("runtime.txt", lines[0], problem, "python-3.12.1")
    return match.group(1)


def _parse_problem(exc: Exception) -> str:
    """A parser's complaint; RecursionError (deep nesting) says so plainly."""
    return "it is nested too deeply" if isinstance(exc, RecursionError) else str(exc)


def _read_pipfile_lock(text: str) -> PythonRequest | None:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise errors.VERSION_FILE_UNREADABLE.error(
            variant="json-invalid", source_file="Pipfile.lock", reason=_parse_problem(exc),
            relock="pipenv lock") from exc
    meta = data.get("_meta") if isinstance(data, dict) else None
    requires = meta.get("requires") if isinstance(meta, dict) else None
    if not isinstance(requires, dict):  # a malformed lock: its reader says so
        requires = {}
    for key in ("python_full_version", "python_version"):
        value = requires.get(key)
        if value is None:
            continue
        source = f"Pipfile.lock ({key})"
        value = str(value).strip()
        problem = _version_problem(value)
        if problem:
            raise _invalid(source, value, problem, "3.12")
        return PythonRequest(value, source)
    return None


def _read_pyproject(text: str) -> PythonRequest | None:
    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as exc:
        raise errors.VERSION_FILE_UNREADABLE.error(
            variant="toml-invalid", source_file="pyproject.toml",
            reason=_parse_problem(exc)) from exc
    project = data.get("project", {})
    value = project.get("requires-python") if isinstance(project, dict) else None
    if value is None:
        return None
    source = "pyproject.toml (requires-python)"
    try:
        specifier = SpecifierSet(str(value))
    except InvalidSpecifier:
        raise _invalid(source, str(value), "not-a-specifier", ">=3.11") from None
    if not str(specifier):
        return None
    return PythonRequest(str(value).strip(), source)


def allow_eol_from_env() -> bool:
    """Whether SLUGBUILD_ALLOW_EOL_PYTHON opts in to building refused minors: only a
    yes word does (``false`` or a typo keeps the policy: it guards the slug)."""
    return env_flag(ALLOW_EOL_ENV, unset=False, unknown=False)


def check_supported(request: PythonRequest, allow_eol: bool = False) -> None:
    """Refuse end-of-life versions before looking for a runtime (unless opted in)."""
    if request.is_specifier:
        return  # only supported versions are offered to a specifier
    row = policy_for(request.requested)
    if row is not None and row.status == REFUSED and not allow_eol:
        oldest = min(p.parts for p in POLICY if p.status == SUPPORTED)
        raise errors.PYTHON_VERSION_EOL.error(
            source_file=request.source_file or "the default",
            requested=request.requested,
            major_minor=request.major_minor,
            eol=row.upstream_eol,
            supported=f"3.{oldest[1]} or newer; {DEFAULT_PYTHON} is Heroku's default",
        )


def policy_warnings(version: str, request: PythonRequest) -> list[str]:
    """Warnings the policy gives for building ``version``: deprecated, refused but
    allowed by the opt-in, or newer than the table knows."""
    row = policy_for(version)
    minor = _major_minor(version)
    where = request.where
    if row is None:
        return [f"Python {minor} is newer than slugbuild's version policy knows "
                f"(newest: {DEFAULT_PYTHON}); it is built as found, unchecked."]
    if row.status == DEPRECATED:
        return [f"Support for Python {minor} is deprecated: it reaches its upstream end of "
                f"life in {row.upstream_eol} (no more security fixes) and slugbuild stops "
                f"building it on {row.removal}. Upgrade, and change the version in {where}."]
    if row.status == REFUSED:
        return [f"Python {minor} reached its upstream end of life in {row.upstream_eol} and "
                f"gets no security fixes; built only because {ALLOW_EOL_ENV} / "
                f"--allow-eol-python asked for it."]
    return []


def is_supported(version: str, allow_eol: bool = False) -> bool:
    """A final CPython 3 release of a minor the policy does not refuse."""
    parts = _as_tuple(version)
    if parts[0] != 3:
        return False
    row = policy_for(version)
    return allow_eol or row is None or row.status != REFUSED


def pick(request: PythonRequest, available: list[str]) -> str | None:
    """The newest available version matching the request (exact for N.N.N)."""
    matching = [v for v in available if request.matches(v)]
    return max(matching, key=_as_tuple) if matching else None


def newer_patch(version: str, known: list[str]) -> str | None:
    """The newest known patch release of ``version``'s minor (from ``known`` and the
    policy table), if newer than it."""
    same_minor = [v for v in known if _as_tuple(v)[:2] == _as_tuple(version)[:2]]
    table = newest_known_patch(version)
    if table:
        same_minor.append(table)
    newest = max(same_minor, key=_as_tuple, default=None)
    return newest if newest and _as_tuple(newest) > _as_tuple(version) else None


def _as_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def sort_versions(versions: list[str]) -> list[str]:
    return sorted(set(versions), key=_as_tuple)


# --- sticky default --------------------------------------------------------------------
# Heroku keeps the Python version of an app without a version file in its build
# cache, and the next build stays on that minor. slugbuild keeps it in its cache
# too, keyed by the app's source directory (one cache serves many apps).
STICKY_DIR = "sticky-python"


def _sticky_path(cache_root: Path, app_dir: Path) -> Path:
    key = hashlib.sha256(str(app_dir.absolute()).encode()).hexdigest()[:24]
    return cache_root / STICKY_DIR / f"{key}.json"


def sticky_minor(cache_root: Path, app_dir: Path) -> str | None:
    """The minor the previous default build of ``app_dir`` used, if recorded."""
    try:
        record = json.loads(_sticky_path(cache_root, app_dir).read_text())
    except (OSError, ValueError):
        return None
    minor = record.get("minor") if isinstance(record, dict) else None
    return minor if isinstance(minor, str) and _VERSION.match(minor) else None


def record_sticky(cache_root: Path, app_dir: Path, version: str) -> None:
    """Remember ``version``'s minor for the next build of ``app_dir`` (atomically)."""
    path = _sticky_path(cache_root, app_dir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        partial.write_text(json.dumps({"app_dir": str(app_dir.absolute()),
                                       "minor": _major_minor(version)}) + "\n")
        os.replace(partial, path)
    except OSError:
        pass  # a read-only cache only loses the stickiness


def describe_choice(app_dir: Path) -> str:
    """Why the build's Python was chosen, for messages of later stages:
    `` (asked for as `3.11` in .python-version)``, or `` (the default ...)``."""
    try:
        request = read_request(app_dir)
    except errors.SlugbuildError:
        return ""
    if request.source_file is None:
        return " (no Python version file: the default)"
    return f" (asked for as `{request.requested}` in {request.source_file})"
