"""Resolve runtime stage: which Python the app asks for.

Sources, first found wins (as Heroku's classic Python buildpack), then one more:

1. ``runtime.txt`` (``python-3.12.1`` or ``python-3.12``; deprecated, warns)
2. ``.python-version`` (``3.12`` or ``3.12.1``; ``#`` comments allowed)
3. ``Pipfile.lock`` ``_meta.requires.python_full_version``
4. ``Pipfile.lock`` ``_meta.requires.python_version``
5. ``pyproject.toml`` ``[project] requires-python`` (newest available match)
6. the default (DEFAULT_PYTHON)

A major.minor request resolves to the newest available patch release.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from . import errors

# The one place the TOML reader is chosen (tomli before 3.11); others import it from here.
if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11 only
    import tomli as tomllib

DEFAULT_PYTHON = "3.13"
# Versions at or below this have reached end of life and are refused.
LAST_EOL = (3, 8)

_VERSION = re.compile(r"^(?P<major>[1-9]\d*|0)\.(?P<minor>[1-9]\d*|0)(?:\.(?P<patch>[1-9]\d*|0))?$")
_LOOSE_VERSION = re.compile(r"^\d+(\.\d+)+$")

# The names Heroku reads, and what a misspelling of each looks like once
# normalised by _normalise_name.
VERSION_FILES = ("runtime.txt", ".python-version")
_NORMALISED_TARGETS = {"runtime": "runtime.txt", "python-version": ".python-version"}


@dataclass(frozen=True)
class PythonRequest:
    """What the app asked for and where that came from.

    ``requested`` is ``3.12`` / ``3.12.1``, or a PEP 440 specifier such as
    ``>=3.11`` when it came from ``requires-python``.
    """

    requested: str
    source_file: str | None  # None when the default applies
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def is_specifier(self) -> bool:
        return not _VERSION.match(self.requested)

    @property
    def parts(self) -> tuple[int, ...]:
        return tuple(int(p) for p in self.requested.split("."))

    @property
    def major_minor(self) -> str:
        return ".".join(self.requested.split(".")[:2])

    def describe_source(self) -> str:
        if self.source_file is None:
            return "the default (no Python version file found)"
        return f"specified in {self.source_file}"

    def matches(self, version: str) -> bool:
        """Whether ``version`` (N.N.N) satisfies this request."""
        if self.is_specifier:
            return Version(version) in SpecifierSet(self.requested)
        wanted = self.parts
        return _as_tuple(version)[: len(wanted)] == wanted


def read_request(app_dir: Path) -> PythonRequest:
    """The Python version the app asks for, from its version files or the default."""
    _check_misspelled_names(app_dir)
    runtime_txt = app_dir / "runtime.txt"
    if runtime_txt.is_file():
        version = _parse_runtime_txt(_read(runtime_txt, "runtime.txt"))
        return PythonRequest(version, "runtime.txt", (
            "runtime.txt is deprecated (as on Heroku). Replace it with a .python-version "
            f"file holding `{_major_minor(version)}`: `echo {_major_minor(version)} > "
            ".python-version && rm runtime.txt`.",
        ))
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
    return PythonRequest(DEFAULT_PYTHON, None)


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
    """Text of a version file: UTF-8 (a BOM is tolerated); UTF-16 or other bytes refused."""
    data = path.read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or (len(data) > 1 and b"\x00" in data[:4]):
        raise errors.VERSION_FILE_UNREADABLE.error(
            source_file=source_file,
            problem="is saved as UTF-16",
            action="Save it as UTF-8 (in PowerShell: `Set-Content -Encoding utf8`; "
            "`echo 3.12 > .python-version` in PowerShell 5 writes UTF-16).",
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise errors.VERSION_FILE_UNREADABLE.error(
            source_file=source_file,
            problem=f"is not valid UTF-8 (byte {exc.start})",
            action="Save it as UTF-8 text.",
        ) from exc


def _version_problem(text: str) -> str | None:
    """Why ``text`` is not ``N.N`` / ``N.N.N``, or None when it is."""
    if _VERSION.match(text):
        return None
    if _LOOSE_VERSION.match(text):
        if len(text.split(".")) > 3:
            return "has more than three parts"
        return "has a leading zero in a version part"
    if re.match(r"^\d+$", text):
        return "names only a major version"
    if text.lower().startswith(("python-", "python", "cpython-", "py")):
        return "must be the bare version number, without a `python` prefix"
    if re.match(r"^\d+\.\d+(\.\d+)?(a|b|rc|\.dev)", text):
        return "names a pre-release; only final releases are supported"
    return "is not a version number"


def _invalid(source_file: str, content: str, problem: str, example: str) -> errors.SlugbuildError:
    return errors.INVALID_PYTHON_VERSION.error(
        source_file=source_file, content=content.strip()[:200], problem=problem,
        example=example,
    )


def _parse_python_version(text: str) -> str:
    lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    versions = [line for line in lines if line]
    if not versions:
        raise _invalid(".python-version", text, "holds no version (only blanks or comments)",
                       "3.12")
    if len(versions) > 1:
        raise _invalid(".python-version", text,
                       f"lists {len(versions)} versions; only one is allowed", "3.12")
    problem = _version_problem(versions[0])
    if problem:
        raise _invalid(".python-version", versions[0], problem, "3.12")
    return versions[0]


def _parse_runtime_txt(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise _invalid("runtime.txt", text, "is empty", "python-3.12.1")
    if len(lines) > 1:
        raise _invalid("runtime.txt", text,
                       f"has {len(lines)} lines; only one version is allowed", "python-3.12.1")
    match = re.fullmatch(r"python-(\S+)", lines[0])
    if not match:
        raise _invalid("runtime.txt", lines[0], "must be `python-` followed by a version",
                       "python-3.12.1")
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
            source_file="Pipfile.lock", problem=f"is not valid JSON ({_parse_problem(exc)})",
            action="Regenerate it with `pipenv lock`.",
        ) from exc
    requires = data.get("_meta", {}).get("requires", {}) if isinstance(data, dict) else {}
    if not isinstance(requires, dict):
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
            source_file="pyproject.toml", problem=f"is not valid TOML ({_parse_problem(exc)})",
            action="Fix the syntax error it names.",
        ) from exc
    project = data.get("project", {})
    value = project.get("requires-python") if isinstance(project, dict) else None
    if value is None:
        return None
    source = "pyproject.toml (requires-python)"
    try:
        specifier = SpecifierSet(str(value))
    except InvalidSpecifier:
        raise _invalid(source, str(value), "is not a PEP 440 version specifier",
                       ">=3.11") from None
    if not str(specifier):
        return None
    return PythonRequest(str(value).strip(), source)


def check_supported(request: PythonRequest) -> None:
    """Refuse end-of-life versions before looking for a runtime."""
    if request.is_specifier:
        return  # only supported versions are offered to a specifier
    if request.parts[:2] <= LAST_EOL:
        raise errors.PYTHON_VERSION_EOL.error(
            source_file=request.source_file or "the default",
            requested=request.requested,
            major_minor=request.major_minor,
            supported=f"3.{LAST_EOL[1] + 1} or newer",
        )


def is_supported(version: str) -> bool:
    """A final CPython 3 release newer than the last end-of-life one."""
    parts = _as_tuple(version)
    return parts[0] == 3 and parts[:2] > LAST_EOL


def pick(request: PythonRequest, available: list[str]) -> str | None:
    """The newest available version matching the request (exact for N.N.N)."""
    matching = [v for v in available if request.matches(v)]
    return max(matching, key=_as_tuple) if matching else None


def newer_patch(version: str, known: list[str]) -> str | None:
    """The newest known patch release of ``version``'s major.minor, if newer than it."""
    same_minor = [v for v in known if _as_tuple(v)[:2] == _as_tuple(version)[:2]]
    newest = max(same_minor, key=_as_tuple, default=None)
    return newest if newest and _as_tuple(newest) > _as_tuple(version) else None


def _as_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def sort_versions(versions: list[str]) -> list[str]:
    return sorted(set(versions), key=_as_tuple)
