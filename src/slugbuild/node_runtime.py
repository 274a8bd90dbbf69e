"""The Node.js that runs the built-in Node step, chosen as Heroku's Node.js buildpack does.

The version comes from ``engines.node`` in package.json (an npm semver range,
node_semver.py), resolved against the Node.js release index to the newest
release that satisfies it; without ``engines.node``, the newest LTS release
(what Heroku's Node.js buildpacks use when no version is asked for). The
``SLUGBUILD_NODE_VERSION`` config var (or environment variable) replaces
``engines.node`` for one build; its value ``system`` uses the machine's
``node`` and ``npm`` instead.

Releases come from a server laid out like https://nodejs.org/dist (or the
``SLUGBUILD_NODE_DIST_URL`` mirror): ``index.json`` lists the releases,
``vX.Y.Z/SHASUMS256.txt`` their checksums, ``vX.Y.Z/node-vX.Y.Z-linux-x64.tar.xz``
the archive. An archive is downloaded to scratch, refused unless its SHA-256 is
the published one, unpacked and checked (``bin/node --version`` must say the
version), and only then published as a runtime layer of the cache, keyed by
version, platform and archive digest. Every later use verifies the layer
against its file index first (cache.py), so a damaged or edited Node.js is
discarded and fetched again, never run. The index is remembered for an hour
(and used beyond that when the server cannot be reached); checksums forever.

When no release can be had (no network, no mirror), the machine's node is used
instead if it satisfies the request (any version when package.json names none),
with a warning; otherwise the build stops with one catalogue error.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from . import errors
from .cache import Cache, Layer, write_bytes_atomic
from .lazy_import import lazy_module
from .log import Reporter
from .nltk_data import _copy
from .node_semver import (
    NodeRange,
    RangeInvalid,
    Version,
    format_version,
    parse_range,
    parse_version,
)
from .redact import redact_url
from .runtime.download import _describe, _unsafe
from .runtime.layer import damaged_layer_warning

if TYPE_CHECKING:
    import requests
else:
    requests = lazy_module("requests")  # imported when first used (lazy_import.py)

DEFAULT_DIST_URL = "https://nodejs.org/dist"
DIST_URL_VAR = "SLUGBUILD_NODE_DIST_URL"
VERSION_VAR = "SLUGBUILD_NODE_VERSION"
SYSTEM = "system"
INDEX_DIR = "node-index"  # remembered index.json answers and checksums, per base URL
INDEX_FRESH_SECONDS = 3600
_TIMEOUT = (5.0, 30.0)
_RETRIES = 3
_MAX_INDEX = 32 * 1024 ** 2
_MAX_ARCHIVE = 512 * 1024 ** 2
# platform.machine() as nodejs.org names the architecture in its file names.
_NODE_ARCH = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64",
              "armv7l": "armv7l", "ppc64le": "ppc64le", "s390x": "s390x"}


@dataclass(frozen=True)
class NodeRelease:
    """One entry of the release index, as far as choosing and fetching need it."""

    version: Version
    lts: str | None  # the LTS line's code name, None for a Current release
    files: frozenset[str]
    npm: str | None

    @property
    def name(self) -> str:
        return format_version(self.version)


@dataclass(frozen=True)
class NodeTools:
    """How the Node step runs node and npm."""

    version: str
    npm: tuple[str, ...]  # argv prefix that runs npm
    bin_dir: Path  # put first on PATH, so build scripts find this node
    origin: str


class FetchFailed(Exception):
    """The index, checksums or archive could not be fetched (network, HTTP status)."""


def dist_url(config_vars: Mapping[str, str]) -> str:
    """The build's config var wins over the environment, which wins over nodejs.org."""
    url = (config_vars.get(DIST_URL_VAR) or os.environ.get(DIST_URL_VAR)
           or DEFAULT_DIST_URL).strip()
    return url.rstrip("/")


def node_platform() -> str:
    """This machine as nodejs.org's file names say it: ``linux-x64``, ``linux-arm64``."""
    machine = platform.machine().lower()
    return f"linux-{_NODE_ARCH.get(machine, machine)}"


def read_engines(app_dir: Path) -> dict[str, str]:
    """package.json's ``engines`` (node, npm, ...); a value that is not a string is
    refused, as Heroku refuses it."""
    try:
        data = json.loads((app_dir / "package.json").read_bytes().decode("utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    engines = data.get("engines") if isinstance(data, dict) else None
    if not isinstance(engines, dict):
        return {}
    for name in ("node", "npm"):
        value = engines.get(name)
        if value is not None and not isinstance(value, str):
            raise errors.NODE_VERSION_INVALID.error(
                variant="not-a-string", source=f"package.json's engines.{name}",
                value=json.dumps(value)[:80])
    return {name: value.strip() for name, value in engines.items()
            if isinstance(value, str) and value.strip()}


def parse_dist_index(text: str | bytes, url: str) -> list[NodeRelease]:
    """The releases of a nodejs.org ``index.json``, newest first; entries that are not
    releases (nightlies, odd versions) are skipped."""
    try:
        entries = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise FetchFailed(f"{redact_url(url)} is not JSON ({exc})") from exc
    if not isinstance(entries, list):
        raise FetchFailed(f"{redact_url(url)} is not a list of releases")
    releases = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        try:
            version = parse_version(str(entry.get("version", "")))
        except ValueError:
            continue
        files = entry.get("files")
        lts = entry.get("lts")
        npm = entry.get("npm")
        releases.append(NodeRelease(
            version, lts if isinstance(lts, str) and lts else None,
            frozenset(f for f in files if isinstance(f, str)) if isinstance(files, list)
            else frozenset(), npm if isinstance(npm, str) else None))
    if not releases:
        raise FetchFailed(f"{redact_url(url)} lists no releases")
    return sorted(releases, key=lambda release: release.version, reverse=True)


def choose_release(releases: list[NodeRelease], wanted: NodeRange | None,
                   target: str) -> NodeRelease | None:
    """The newest release for ``target`` in ``wanted``; with no range, the newest LTS."""
    for release in releases:  # newest first
        if target not in release.files:
            continue
        if wanted.allows(release.version) if wanted is not None else release.lts:
            return release
    return None


def provide_node(app_dir: Path, config_vars: Mapping[str, str], cache: Cache,
                 path: str | None, reporter: Reporter, offline: bool = False) -> NodeTools:
    """The node and npm the Node step runs, as the app asks for them (see the module).
    ``offline`` (slugbuild's --offline) uses only what the cache already holds."""
    engines = read_engines(app_dir)
    override = (config_vars.get(VERSION_VAR) or os.environ.get(VERSION_VAR) or "").strip()
    requested, source = ((override, VERSION_VAR) if override
                         else (engines.get("node"), "package.json's engines.node"))
    reporter.detail(f"engines.node (package.json): {engines.get('node', 'unspecified')}")
    if override:
        reporter.detail(f"{VERSION_VAR}: {override}")
    if requested == SYSTEM:
        return _machine_node(path, reporter, f"{VERSION_VAR}={SYSTEM} asks for the "
                             f"machine's Node.js", fallback=False)
    try:
        wanted = parse_range(requested) if requested is not None else None
    except RangeInvalid as exc:
        raise errors.NODE_VERSION_INVALID.error(source=source, value=requested,
                                                problem=str(exc)) from exc
    base = dist_url(config_vars)
    target = node_platform()
    try:
        releases = _release_index(cache, base, reporter, offline)
    except FetchFailed as exc:
        reason = (f"no Node.js release could be downloaded: the release index could not "
                  f"be had ({exc})")
        return _machine_node(path, reporter, reason, wanted, requested)
    release = choose_release(releases, wanted, target)
    if release is None:
        newest = next((r.name for r in releases if target in r.files), "none")
        raise errors.NODE_VERSION_UNSATISFIABLE.error(
            source=source, tool="Node.js", requested=requested or "an LTS release",
            where=f"{redact_url(base)}/index.json for {target}", newest=newest)
    if wanted is None:
        reporter.detail(f"No engines.node in package.json: using the newest LTS release, "
                        f"Node.js {release.name} ({release.lts}), as Heroku's Node.js "
                        f"buildpack does. Set engines.node to choose.")
    else:
        reporter.detail(f"Resolved Node.js {requested} to {release.name}")
    layer = _node_layer(cache, base, release, target, reporter, offline)
    npm_cli = layer.tree / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
    node = layer.tree / "bin" / "node"
    return NodeTools(release.name, (str(node), str(npm_cli)), node.parent,
                     f"{redact_url(base)}, cached")


def provide_machine_node(path: str | None, reporter: Reporter) -> NodeTools:
    """The machine's node and npm on ``path``, for callers with no cache to keep a
    downloaded runtime in."""
    return _machine_node(path, reporter, "no cache to keep a downloaded Node.js in",
                         fallback=False)


def _machine_node(path: str | None, reporter: Reporter, reason: str,
                  wanted: NodeRange | None = None, requested: str | None = None,
                  fallback: bool = True) -> NodeTools:
    """The machine's node and npm: asked for (``fallback`` False), or because no
    release can be had (then only if it satisfies ``wanted``, and with a warning)."""
    tools = {name: shutil.which(name, path=path) for name in ("node", "npm")}
    missing = [name for name, found in tools.items() if found is None]
    if missing and requested is not None:
        raise errors.NODE_RUNTIME_UNAVAILABLE.error(
            variant="machine-lacks-tools", tool="Node.js", requested=requested, reason=reason,
            missing=" and ".join(missing))
    if missing:
        raise errors.NODE_NOT_FOUND.error(reason=reason, missing=" and ".join(missing))
    node, npm = str(tools["node"]), str(tools["npm"])
    try:
        output = subprocess.run([node, "--version"], capture_output=True, text=True,
                                timeout=60, check=True).stdout
        version = parse_version(output)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise errors.NODE_NOT_FOUND.error(variant="broken-node", reason=reason,
                                          node=node) from exc
    if wanted is not None and requested is not None and not wanted.allows(version):
        raise errors.NODE_RUNTIME_UNAVAILABLE.error(
            variant="machine-node-differs", tool="Node.js", requested=requested, reason=reason,
            node=node, version=format_version(version))
    if fallback:
        reporter.warn(f"Using the machine's Node.js {format_version(version)} ({node}): "
                      f"{reason}.")
    return NodeTools(format_version(version), (npm,), Path(node).parent,
                     f"the machine, {node}")


def _index_store(cache: Cache, base: str) -> Path:
    return cache.root / INDEX_DIR / hashlib.sha256(base.encode()).hexdigest()[:16]


def _release_index(cache: Cache, base: str, reporter: Reporter, offline: bool
                   ) -> list[NodeRelease]:
    """index.json, fresh for INDEX_FRESH_SECONDS; an older copy when the server is away
    or the build is offline."""
    store = _index_store(cache, base)
    remembered = store / "index.json"
    url = f"{base}/index.json"
    try:
        age = time.time() - remembered.stat().st_mtime
        if age < INDEX_FRESH_SECONDS or offline:
            return parse_dist_index(remembered.read_bytes(), url)
    except (OSError, FetchFailed):
        age = None
    if offline:
        raise FetchFailed("--offline forbids fetching it, and the cache holds no copy")
    try:
        text = fetch_bytes(url, _MAX_INDEX)
        releases = parse_dist_index(text, url)
    except FetchFailed as exc:
        if age is None:
            raise
        reporter.warn(f"The Node.js release index could not be fetched ({exc}); using the "
                      f"copy from {int(age // 60)} minutes ago.")
        return parse_dist_index(remembered.read_bytes(), url)
    store.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(remembered, text)
    return releases


def _archive_checksum(cache: Cache, base: str, release: NodeRelease, target: str,
                      offline: bool) -> tuple[str, str]:
    """(file name, SHA-256) of the release's archive for ``target`` from SHASUMS256.txt
    (``.tar.xz`` preferred, ``.tar.gz`` else); remembered, as published sums never change."""
    store = _index_store(cache, base)
    remembered = store / f"v{release.name}-SHASUMS256.txt"
    url = f"{base}/v{release.name}/SHASUMS256.txt"
    try:
        text = remembered.read_bytes()
    except OSError:
        if offline:
            raise FetchFailed(f"{redact_url(url)} is not in the cache, and --offline "
                              f"forbids fetching it") from None
        text = fetch_bytes(url, _MAX_INDEX)
        store.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(remembered, text)
    sums = {}
    for line in text.decode("utf-8", "replace").splitlines():
        parts = line.split()
        if len(parts) == 2 and len(parts[0]) == 64:
            sums[PurePosixPath(parts[1].lstrip("*")).name] = parts[0].lower()
    for extension in ("tar.xz", "tar.gz"):
        name = f"node-v{release.name}-{target}.{extension}"
        if name in sums:
            return name, sums[name]
    raise FetchFailed(f"{redact_url(url)} names no node-v{release.name}-{target} archive")


def _node_layer(cache: Cache, base: str, release: NodeRelease, target: str,
                reporter: Reporter, offline: bool) -> Layer:
    """The verified runtime layer of ``release``, downloaded and published if needed."""
    try:
        filename, sha256 = _archive_checksum(cache, base, release, target, offline)
    except FetchFailed as exc:
        raise errors.NODE_RUNTIME_UNAVAILABLE.error(
            tool="Node.js", requested=release.name, reason=str(exc)) from exc
    inputs: dict[str, Any] = {"node": release.name, "platform": target, "archive": filename,
                              "sha256": sha256}
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    name = f"node-{release.name}-{target}-{key[:12]}"

    def cached() -> Layer | None:
        layer, problems = cache.lookup_verified("runtimes", name, key)
        if problems:
            reporter.warn(damaged_layer_warning(f"Node.js {release.name} runtime layer",
                                                problems))
        return layer

    layer = cached()
    if layer is not None:
        reporter.detail(f"Using Node.js {release.name} from the cache")
        return layer
    if offline:
        raise errors.NODE_RUNTIME_UNAVAILABLE.error(
            variant="offline", tool="Node.js", requested=release.name)
    with cache.lock("runtimes", name):
        layer = cached()
        if layer is not None:
            return layer
        url = f"{base}/v{release.name}/{filename}"
        scratch = cache.scratch_dir("node-download")
        try:
            archive = scratch / filename
            reporter.detail(f"Downloading {redact_url(url)}")
            try:
                actual = download(url, archive)
            except FetchFailed as exc:
                raise errors.NODE_RUNTIME_UNAVAILABLE.error(
                    tool="Node.js", requested=release.name, reason=str(exc)) from exc
            if actual != sha256:
                raise errors.NODE_CHECKSUM_MISMATCH.error(
                    url=redact_url(url), algorithm="SHA-256", actual=actual, expected=sha256,
                    checksums=redact_url(f"{base}/v{release.name}/SHASUMS256.txt"))
            reporter.detail(f"Verified SHA-256 {sha256[:16]}… of {filename}")
            with cache.new_layer("runtimes", name, key, inputs) as tree:
                _unpack(archive, scratch / "unpacked", tree, url, release)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    layer = cache.lookup("runtimes", name, key)
    assert layer is not None
    return layer


def _unpack(archive: Path, scratch: Path, tree: Path, url: str, release: NodeRelease) -> None:
    """The archive's single top directory becomes ``tree``, once node in it runs and
    says its version and npm is beside it."""
    def invalid(problem: str) -> errors.SlugbuildError:
        return errors.NODE_ARCHIVE_INVALID.error(url=redact_url(url), problem=problem)

    unpack_single_top(archive, scratch, tree, invalid)
    if not (tree / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js").is_file():
        raise invalid("it holds no npm (lib/node_modules/npm/bin/npm-cli.js)")
    said = version_said([str(tree / "bin" / "node"), "--version"], invalid)
    if said != f"v{release.name}":
        raise invalid(f"bin/node --version says {said[:40]!r}, not v{release.name}")


def unpack_single_top(archive: Path, scratch: Path, tree: Path,
                      invalid: Callable[[str], errors.SlugbuildError]) -> None:
    """Unpack ``archive`` in ``scratch`` (refusing members that would leave it) and move
    the content of its one top-level directory into ``tree``."""
    scratch.mkdir()
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            for member in tar:
                problem = _unsafe(member)
                if problem:
                    raise invalid(f"{member.name}: {problem}")
                if hasattr(tarfile, "data_filter"):
                    tar.extract(member, scratch, filter="data")
                else:  # pragma: no cover - Python without extraction filters
                    tar.extract(member, scratch)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise invalid(f"it cannot be unpacked ({exc})") from exc
    tops = list(scratch.iterdir())
    if len(tops) != 1 or not tops[0].is_dir():
        raise invalid("it does not hold one top-level directory")
    for child in tops[0].iterdir():
        os.rename(child, tree / child.name)


def version_said(argv: list[str], invalid: Callable[[str], errors.SlugbuildError]) -> str:
    """What ``argv`` (a ``--version`` command) prints, stripped."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        raise invalid(f"{Path(argv[-2]).name} does not run here "
                      f"({exc.__class__.__name__})") from exc


def fetch_bytes(url: str, limit: int, headers: Mapping[str, str] | None = None) -> bytes:
    """The body of ``url`` (at most ``limit`` bytes), with retries."""
    buffer = io.BytesIO()

    def keep(response: requests.Response) -> None:
        buffer.seek(0)
        buffer.truncate()
        _copy(response, buffer, limit, _too_big(url))

    _retrying(url, keep, headers)
    return buffer.getvalue()


def download(url: str, target: Path, algorithm: str = "sha256") -> str:
    """Stream ``url`` to ``target``; the digest (hex) of the bytes received."""
    digest = hashlib.new(algorithm)

    def save(response: requests.Response) -> None:
        nonlocal digest
        digest = hashlib.new(algorithm)
        with open(target, "wb") as handle:
            _copy(response, handle, _MAX_ARCHIVE, _too_big(url), [digest])

    _retrying(url, save)
    return digest.hexdigest()


def _too_big(url: str) -> Callable[..., FetchFailed]:
    """What nltk_data._copy raises past its limit: it calls this as it calls the
    catalogue's variants, ``("too-large", limit=...)``."""
    def too_big(variant: str, **values: object) -> FetchFailed:
        return FetchFailed(f"{redact_url(url)} is larger than {values.get('limit')} bytes")

    return too_big


def _retrying(url: str, consume: Any, headers: Mapping[str, str] | None = None) -> None:
    """GET ``url`` and hand the response to ``consume``; connection errors, 5xx and
    429 are tried again a few times."""
    reason = "no attempt made"
    for attempt in range(1, _RETRIES + 1):
        retry = True
        try:
            with requests.get(url, timeout=_TIMEOUT, stream=True, headers=headers) as response:
                if response.status_code < 400:
                    consume(response)
                    return
                reason = (f"{redact_url(url)}: HTTP {response.status_code} "
                          f"{response.reason or ''}").strip()
                retry = response.status_code >= 500 or response.status_code == 429
        except requests.RequestException as exc:
            reason = f"{redact_url(url)}: {_describe(exc)}"
            # A name that does not resolve will not resolve in a second either.
            retry = "cannot resolve" not in reason
        if not retry or attempt == _RETRIES:
            break
        time.sleep(0.5 * 2 ** (attempt - 1))
    raise FetchFailed(reason)



