"""The npm that package.json's ``engines.npm`` asks for, as Heroku's Node.js buildpack
installs it.

Heroku runs the npm bundled with the chosen Node.js unless ``engines.npm`` asks
for another; then it installs the newest npm in that range from the npm
registry. slugbuild does the same without running npm to replace itself: it
reads the registry's metadata of the ``npm`` package (the registry named by
the ``npm_config_registry`` config var or environment variable, as npm reads
it; registry.npmjs.org by default), downloads the tarball, refuses it unless
its sha512 is the registry's ``integrity``, checks that it runs with the
chosen node and says its version, and keeps it as a runtime layer of the cache
(keyed by version and integrity, verified before every use).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import errors
from .cache import Cache, Layer
from .log import Reporter
from .node_runtime import (
    FetchFailed,
    NodeTools,
    download,
    fetch_bytes,
    unpack_single_top,
    version_said,
)
from .node_semver import RangeInvalid, Version, format_version, parse_range, parse_version
from .redact import redact_url
from .runtime.layer import damaged_layer_warning

DEFAULT_REGISTRY = "https://registry.npmjs.org"
REGISTRY_VAR = "npm_config_registry"
# The registry's abbreviated metadata: versions and their dist fields only.
_ABBREVIATED = "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8"
_MAX_METADATA = 64 * 1024 ** 2


def registry_url(config_vars: Mapping[str, str]) -> str:
    """npm's own setting, config var first, in either case npm accepts."""
    for source in (config_vars, os.environ):
        for name in (REGISTRY_VAR, REGISTRY_VAR.upper()):
            if source.get(name, "").strip():
                return source[name].strip().rstrip("/")
    return DEFAULT_REGISTRY


def npm_versions(metadata: bytes | str) -> dict[Version, dict[str, Any]]:
    """{version: dist} of the registry's metadata for ``npm`` (releases only)."""
    try:
        data = json.loads(metadata)
    except ValueError as exc:
        raise FetchFailed(f"the registry's metadata for npm is not JSON ({exc})") from exc
    versions = data.get("versions") if isinstance(data, dict) else None
    found: dict[Version, dict[str, Any]] = {}
    for text, entry in (versions.items() if isinstance(versions, dict) else ()):
        dist = entry.get("dist") if isinstance(entry, dict) else None
        try:
            version = parse_version(text)
        except ValueError:
            continue  # prereleases
        if isinstance(dist, dict) and isinstance(dist.get("tarball"), str):
            found[version] = dist
    return found


def with_requested_npm(tools: NodeTools, requested: str | None,
                       config_vars: Mapping[str, str], cache: Cache,
                       reporter: Reporter) -> NodeTools:
    """``tools`` with npm replaced by the newest npm in ``requested`` when the npm it
    has is not in that range."""
    reporter.detail(f"engines.npm (package.json): {requested or 'unspecified (use default)'}")
    if requested is None:
        return tools
    try:
        wanted = parse_range(requested)
    except RangeInvalid as exc:
        raise errors.NODE_VERSION_INVALID.error(
            source="package.json's engines.npm", value=requested, problem=str(exc)) from exc

    def unusable(problem: str) -> errors.SlugbuildError:
        return errors.NODE_ARCHIVE_INVALID.error(url="npm", problem=problem)

    said = version_said([*tools.npm, "--version"], unusable)
    try:
        if wanted.allows(parse_version(said)):
            reporter.detail(f"npm {said} satisfies engines.npm")
            return tools
    except ValueError:
        pass
    registry = registry_url(config_vars)
    try:
        versions = npm_versions(fetch_bytes(f"{registry}/npm", _MAX_METADATA,
                                            {"Accept": _ABBREVIATED}))
    except FetchFailed as exc:
        raise errors.NODE_RUNTIME_UNAVAILABLE.error(tool="npm", requested=requested,
                                                    reason=str(exc)) from exc
    chosen = max((version for version in versions if wanted.allows(version)), default=None)
    if chosen is None:
        raise errors.NODE_VERSION_UNSATISFIABLE.error(
            source="package.json's engines.npm", tool="npm", requested=requested,
            where=f"{redact_url(registry)}/npm",
            newest=format_version(max(versions)) if versions else "none")
    reporter.detail(f"Resolved npm {requested} to {format_version(chosen)} (the bundled "
                    f"npm is {said})")
    layer = _npm_layer(cache, format_version(chosen), versions[chosen], tools, reporter)
    return replace(tools, npm=(str(tools.bin_dir / "node"),
                               str(layer.tree / "bin" / "npm-cli.js")))


def _npm_layer(cache: Cache, version: str, dist: dict[str, Any], tools: NodeTools,
               reporter: Reporter) -> Layer:
    """The verified runtime layer holding npm ``version``, made if needed."""
    url = str(dist["tarball"])
    algorithm, _, expected = str(dist.get("integrity", "")).partition("-")
    if algorithm != "sha512" or not expected:
        raise errors.NODE_RUNTIME_UNAVAILABLE.error(
            variant="no-integrity", tool="npm", requested=version, url=redact_url(url))
    inputs = {"npm": version, "integrity": f"sha512-{expected}"}
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    name = f"npm-{version}-{key[:12]}"

    def cached() -> Layer | None:
        layer, problems = cache.lookup_verified("runtimes", name, key)
        if problems:
            reporter.warn(damaged_layer_warning(f"npm {version} layer", problems))
        return layer

    layer = cached()
    if layer is not None:
        return layer
    with cache.lock("runtimes", name):
        layer = cached()
        if layer is not None:
            return layer
        scratch = cache.scratch_dir("npm-download")
        try:
            archive = scratch / "npm.tgz"
            reporter.detail(f"Downloading {redact_url(url)}")
            try:
                digest = download(url, archive, "sha512")
            except FetchFailed as exc:
                raise errors.NODE_RUNTIME_UNAVAILABLE.error(
                    tool="npm", requested=version, reason=str(exc)) from exc
            actual = base64.b64encode(bytes.fromhex(digest)).decode()
            if actual != expected:
                raise errors.NODE_CHECKSUM_MISMATCH.error(
                    url=redact_url(url), algorithm="sha512", actual=actual,
                    expected=expected, checksums="the registry's integrity field")
            with cache.new_layer("runtimes", name, key, inputs) as tree:
                _unpack_npm(archive, scratch / "unpacked", tree, url, version, tools)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    layer = cache.lookup("runtimes", name, key)
    assert layer is not None
    return layer


def _unpack_npm(archive: Path, scratch: Path, tree: Path, url: str, version: str,
                tools: NodeTools) -> None:
    def invalid(problem: str) -> errors.SlugbuildError:
        return errors.NODE_ARCHIVE_INVALID.error(url=redact_url(url), problem=problem)

    unpack_single_top(archive, scratch, tree, invalid)
    cli = tree / "bin" / "npm-cli.js"
    if not cli.is_file():
        raise invalid("it holds no bin/npm-cli.js")
    said = version_said([str(tools.bin_dir / "node"), str(cli), "--version"], invalid)
    if said != version:
        raise invalid(f"npm --version says {said[:40]!r}, not {version}")

