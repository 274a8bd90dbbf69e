"""``slugbuild runtime publish``: a runtime layer built once, for every build to pull.

The layer is the one a build makes (``ensure_runtime_layer``: same sources, same
key, same files), its slug part compressed as a default build compresses it
(``prepare_layer_part``), and its artifact the one a cache registry holds
(``make_artifact``, ``push_artifact``: one registry client, one auth story). It
goes to a registry repository or an OCI layout directory under its key's tag,
then under its version tag (published.py), which is what builds look up: a
reader never finds a version tag naming a missing entry.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from .. import errors
from ..cache import Cache
from ..cache_registry import guarded_store
from ..layer_artifact import (
    LayoutStore,
    Store,
    Transfer,
    make_artifact,
    namespace,
    push_artifact,
)
from ..log import Reporter
from ..oci.options import RegistryOptions
from ..pack import LayerPart, layer_part_name, prepare_layer_part
from ..platform_info import Platform
from ..versions import check_supported, request_from_argument
from .layer import ensure_runtime_layer
from .published import PUBLISHED, REGISTRY_SCHEME, open_published_store, version_tag
from .resolve import RuntimeOptions, make_sources, resolve

# Where a build places the runtime, and the layout whose part is published: the
# default build's (a build of the other layout packs the layer itself).
PYTHON_HOME = ".heroku/python"
PUBLISHED_LAYOUT = "herokuish"


@dataclass(frozen=True)
class PublishedRuntime:
    """What ``publish_runtime`` put where."""

    version: str
    layer: str  # the runtime layer's name (cpython-<version>-<platform>-<12 hex>)
    tag: str  # the version tag builds look up
    made_from: str  # the source the layer was made from
    built: bool  # made now (False: the cache had it)
    part_size: int
    sent: int  # bytes sent (0: the store had it all)


def publish_runtime(target: str, version: str, cache: Cache, platform: Platform,
                    options: RuntimeOptions, reporter: Reporter,
                    registry: RegistryOptions | None = None) -> PublishedRuntime:
    """Build (or find) the runtime layer for ``version`` from ``options``' sources and
    publish it to ``target`` (``docker://HOST[:PORT]/REPO`` or a directory)."""
    request = request_from_argument(version, "--python")
    check_supported(request, options.allow_eol)
    store = _open_target(target, registry)
    own = dataclasses.replace(options, python_registry=None, sources=tuple(
        name for name in options.sources if name != PUBLISHED) or ("local",))
    resolution = resolve(request, make_sources(own, cache, platform),
                         allow_eol=own.allow_eol, patch_fallback=own.patch_fallback)
    for warning in resolution.warnings:
        reporter.warn(warning)
    offer = resolution.offer
    # Read once before the layer is made: an unreachable target fails in a moment.
    guarded_store(target, lambda: store.get_manifest(
        version_tag(namespace(platform.key), offer.version)), errors.RUNTIME_PUBLISH_FAILED)
    reporter.step(f"Preparing Python {offer.version} (from {offer.short_origin})")
    layer, cached = ensure_runtime_layer(cache, offer, platform, reporter)
    part = LayerPart(PYTHON_HOME, layer.tree, layer.packed_parts,
                     unchanged=partial(cache.still_pristine, layer))
    size = prepare_layer_part(part, PUBLISHED_LAYOUT)
    space = namespace(platform.key)
    artifact = make_artifact(layer, space, layer_part_name(PUBLISHED_LAYOUT, PYTHON_HOME))
    if artifact is None:
        raise errors.RUNTIME_PUBLISH_FAILED.error(variant="no-part", version=offer.version,
                                                  cache=cache.root)
    transfer = Transfer()
    tag = version_tag(space, offer.version)

    def push() -> None:
        push_artifact(store, artifact, transfer)
        if store.get_manifest(tag) != artifact.manifest:  # after the entry it names
            store.put_manifest(tag, artifact.manifest)
            transfer.sent += len(artifact.manifest)

    guarded_store(target, push, errors.RUNTIME_PUBLISH_FAILED)
    made_from = str(layer.manifest.get("inputs", {}).get("source", offer.source_name))
    return PublishedRuntime(offer.version, layer.path.name, tag, made_from, not cached, size,
                            transfer.sent)


def _open_target(target: str, registry: RegistryOptions | None) -> Store:
    if target.startswith(REGISTRY_SCHEME):
        registry = registry or RegistryOptions()
        try:
            return open_published_store(target, registry, timeout=registry.timeout)
        except errors.SlugbuildError as exc:
            if exc.code != errors.PYTHON_REGISTRY_INVALID.code:
                raise
            raise errors.RUNTIME_PUBLISH_FAILED.error(
                variant="target-invalid", target=target,
                reason=exc.fields.get("reason", exc.found)) from exc
    if "://" in target:
        raise errors.RUNTIME_PUBLISH_FAILED.error(
            variant="target-invalid", target=target,
            reason="only docker:// registries and directories are publish targets")
    try:
        return LayoutStore(Path(target), create=True)
    except OSError as exc:
        raise errors.RUNTIME_PUBLISH_FAILED.error(
            variant="unwritable", target=target, reason=exc.strerror or str(exc)) from exc
