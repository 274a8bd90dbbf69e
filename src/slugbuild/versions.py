"""Resolve runtime stage: which Python the app asks for, and which runtime serves it.

Sources, first found wins (as Heroku's classic Python buildpack):
``runtime.txt`` (``python-3.12.1``), then ``.python-version`` (``3.12`` or
``3.12.1``, comments allowed), then the default (DEFAULT_PYTHON).
A major.minor request resolves to the newest available patch release.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from . import errors

DEFAULT_PYTHON = "3.13"
# Versions at or below this have reached end of life and are refused.
LAST_EOL = (3, 8)

_VERSION = re.compile(r"^(?P<major>[1-9]\d*|0)\.(?P<minor>[1-9]\d*|0)(?:\.(?P<patch>[1-9]\d*|0))?$")


@dataclass(frozen=True)
class PythonRequest:
    """What the app asked for and where that came from."""

    requested: str  # "3.12" or "3.12.1"
    source_file: str | None  # None when the default applies

    @property
    def parts(self) -> tuple[int, ...]:
        return tuple(int(p) for p in self.requested.split("."))

    @property
    def major_minor(self) -> str:
        return ".".join(self.requested.split(".")[:2])

    def describe_source(self) -> str:
        if self.source_file is None:
            return "the default (no .python-version or runtime.txt found)"
        return f"specified in {self.source_file}"


def read_request(app_dir: Path) -> PythonRequest:
    """The Python version the app asks for, from its version files or the default."""
    runtime_txt = app_dir / "runtime.txt"
    if runtime_txt.is_file():
        return PythonRequest(_parse_runtime_txt(_read(runtime_txt)), "runtime.txt")
    python_version = app_dir / ".python-version"
    if python_version.is_file():
        return PythonRequest(_parse_python_version(_read(python_version)), ".python-version")
    return PythonRequest(DEFAULT_PYTHON, None)


def _read(path: Path) -> str:
    return path.read_bytes().decode("utf-8-sig", errors="replace")


def _parse_python_version(text: str) -> str:
    lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    versions = [line for line in lines if line]
    if len(versions) != 1 or not _VERSION.match(versions[0]):
        raise errors.INVALID_PYTHON_VERSION.error(
            source_file=".python-version",
            content=text.strip()[:200],
            expected="3.12 or 3.12.1",
            example="3.12",
        )
    return versions[0]


def _parse_runtime_txt(text: str) -> str:
    content = text.strip()
    match = re.fullmatch(r"python-(\S+)", content)
    if not match or not _VERSION.match(match.group(1)):
        raise errors.INVALID_PYTHON_VERSION.error(
            source_file="runtime.txt",
            content=content[:200],
            expected="python-3.12.1",
            example="python-3.12.1",
        )
    return match.group(1)


def check_supported(request: PythonRequest) -> None:
    """Refuse end-of-life versions before looking for a runtime."""
    if request.parts[:2] <= LAST_EOL:
        raise errors.PYTHON_VERSION_EOL.error(
            source_file=request.source_file or "the default",
            requested=request.requested,
            major_minor=request.major_minor,
            supported=f"3.{LAST_EOL[1] + 1} or newer",
        )


def pick(request: PythonRequest, available: list[str]) -> str | None:
    """The newest available version matching the request (exact for N.N.N)."""
    wanted = request.parts
    matching = [v for v in available if _as_tuple(v)[: len(wanted)] == wanted]
    return max(matching, key=_as_tuple) if matching else None


def _as_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def sort_versions(versions: list[str]) -> list[str]:
    return sorted(set(versions), key=_as_tuple)
