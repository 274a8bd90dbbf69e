"""The shapes of what slugbuild hands back as plain data (``--json`` output).

TypedDicts, so a library user's type checker knows the keys of
``BuildResult.as_dict()`` and ``describe_slug()`` and their types, while
the values stay JSON-ready dicts (what the command line prints).
"""

from __future__ import annotations

from typing import Any, TypedDict


class PackageDict(TypedDict):
    """One installed distribution."""

    name: str
    version: str


class SlugRuntimeDict(TypedDict, total=False):
    """The Python runtime found in a slug (empty when it holds none).

    ``requested`` and ``source_file`` come from a slug.json whose checksum
    matches the slug.
    """

    implementation: str
    resolved: str
    requested: str
    source_file: str


class SlugDescription(TypedDict):
    """``describe_slug()`` / ``slugbuild inspect --json``: facts read from the slug."""

    slug: str
    source: str
    size: int
    checksum: str
    layout: str
    process_types: dict[str, str]
    runtime: SlugRuntimeDict
    stack: str | None
    packages: list[PackageDict]


class BuildResultDict(TypedDict):
    """``BuildResult.as_dict()`` / ``slugbuild compile --json``.

    ``runtime`` is slug.json's runtime object (docs/slug-json.md); ``timings``
    are seconds per stage (docs/cli.md).
    """

    slug_path: str
    metadata_path: str
    sha256: str
    size: int
    process_types: dict[str, str]
    runtime: dict[str, Any]
    packages: list[dict[str, str]]
    timings: dict[str, float]
    # What went to and came from the cache registry (None without one; docs/cli.md).
    cache_registry: dict[str, Any] | None
