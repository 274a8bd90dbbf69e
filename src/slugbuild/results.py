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


class BuildRuntimeDict(TypedDict, total=False):
    """slug.json's ``runtime`` object (docs/slug-json.md#runtime): the Python built in.

    ``archive_sha256`` only for downloads; ``reason`` and ``substituted_for`` only
    when the build chose for the app. A runtime source may add fields of its own.
    """

    implementation: str
    requested: str
    resolved: str
    source_file: str | None
    source: str
    platform: str
    origin: str
    archive_sha256: str
    requested_from: str
    reason: str
    substituted_for: str


class SlugJsonDict(TypedDict, total=False):
    """slug.json (``BuildResult.metadata``): the top-level fields of
    docs/slug-json.md, the nested objects other than ``runtime`` and
    ``packages`` as plain dicts. Fields added by later formats may be present."""

    format: int
    slugbuild_version: str
    buildpack_provided_description: str
    buildpacks: list[dict[str, str]]
    release_config_vars: dict[str, str]
    process_types: dict[str, str]
    inferred: bool
    inference: dict[str, Any] | None
    release_command: str | None
    postdeploy_command: str | None
    addons: list[str]
    runtime: BuildRuntimeDict | None
    system_packages: list[dict[str, str]]
    package_manager: dict[str, Any] | None
    packages: list[PackageDict]
    frameworks: list[str]
    stack: str
    platform: dict[str, str]
    layout: str
    checksum: str
    size: int
    stack_requirements: dict[str, Any]  # stack_compat.StackRequirements.as_dict()
    sizes: dict[str, Any]


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
    runtime: BuildRuntimeDict
    packages: list[PackageDict]
    timings: dict[str, float]
    # What went to and came from the cache registry (None without one; docs/cli.md).
    cache_registry: dict[str, Any] | None
