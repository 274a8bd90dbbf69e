"""The cache's second level: runtime and dependency layers shared through an OCI registry.

``--cache-registry docker://HOST[:PORT]/REPO`` (or SLUGBUILD_CACHE_REGISTRY, or
``compile_app(cache_registry=...)``). The local cache stays the first level: a
layer found there is used as always. On a local miss, under the layer's build
lock, the registry is asked for the layer's artifact (layer_artifact.py: one
tag per layer key, namespaced by platform and artifact format); if it is there,
every blob is checked against its digest and the layer is published into the
local cache through the verified path, then used as a local hit. After the
build, the layers it made are pushed (blobs only if missing, then the
manifest), unless ``--cache-registry-readonly``.

Fail open: a registry that is down, slow, refuses the credentials or answers
with errors gives one warning and the build goes on without it (each request
is bounded by the client's timeouts; after the first failure the registry is
not asked again in this build). An entry that does not match its digests or
its index is refused with a warning and the layer is built as on a miss.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import errors
from .cache import Cache, Layer
from .layer_artifact import (
    ArtifactInvalid,
    Store,
    Transfer,
    fetch_artifact,
    make_artifact,
    materialise,
    namespace,
    push_artifact,
)
from .log import Reporter
from .slug_size import human

ENV_VAR = "SLUGBUILD_CACHE_REGISTRY"
READONLY_ENV_VAR = "SLUGBUILD_CACHE_REGISTRY_READONLY"
SHARED_KINDS = ("runtimes", "layers")
# What a failing store may raise (the registry client's errors join at import time).
TRANSFER_ERRORS: tuple[type[BaseException], ...] = (OSError,)


def registry_store(reference: str) -> Store:
    """The registry repository ``docker://HOST[:PORT]/REPO`` as a store."""
    raise errors.CACHE_REGISTRY_INVALID.error(reference=reference,
                                              reason="no registry client in this build")


@dataclass
class RemoteCache:
    """One build's use of the cache registry."""

    store: Store
    shown: str  # the reference, for messages
    space: str
    reporter: Reporter
    readonly: bool = False
    transfer: Transfer = field(default_factory=Transfer)
    pulled: list[str] = field(default_factory=list)
    pushed: list[str] = field(default_factory=list)
    failed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _warned: threading.Lock = field(default_factory=threading.Lock)

    def _give_up(self, exc: BaseException) -> None:
        """The one warning of a registry that cannot be used; not asked again."""
        with self._warned:
            if self.failed:
                return
            self.failed = True
        reason = str(exc) or type(exc).__name__
        self.reporter.warn(f"The cache registry {self.shown} could not be used "
                           f"({reason}); this build goes on without it.")

    def pull(self, cache: Cache, kind: str, name: str, key: str, what: str,
             extra_check: Callable[[Path, dict[str, Any]], Any] | None = None,
             reporter: Reporter | None = None) -> Layer | None:
        """The layer from the registry, published into ``cache`` (the caller holds
        its build lock); None when the registry has none, is unusable, or its entry
        is wrong (never a layer that does not match its digests)."""
        reporter = reporter or self.reporter
        try:
            with self._lock:  # one request at a time on the client; layers are made apart
                if self.failed:
                    return None
                transfer = Transfer()
                fetched = fetch_artifact(self.store, self.space, kind, key, transfer)
                self.transfer.received += transfer.received
            if fetched is None:
                return None
            if fetched.config.get("name") != name:
                raise ArtifactInvalid("it names another layer")
            layer = materialise(cache, fetched, extra_check)
        except ArtifactInvalid as exc:
            reporter.warn(f"The cache registry's entry for the {what} was not used: "
                          f"{exc}. It is built here instead.")
            return None
        except TRANSFER_ERRORS as exc:
            self._give_up(exc)
            return None
        self.pulled.append(name)
        reporter.step(f"Pulled the {what} from the cache registry "
                      f"({human(transfer.received)})")
        return layer

    def push_published(self, cache: Cache) -> None:
        """Push the layers this build published (runtime and dependency layers)."""
        if self.readonly:
            return
        for kind, name, key in cache.published:
            if kind not in SHARED_KINDS or name.startswith("apt-") or self.failed:
                continue
            layer = cache.lookup(kind, name, key)
            if layer is None:
                continue
            try:
                artifact = make_artifact(layer, self.space)
                if artifact is None:
                    continue  # no intact part kept: nothing worth sharing
                before = self.transfer.sent
                with self._lock:
                    sent = push_artifact(self.store, artifact, self.transfer)
            except ArtifactInvalid:
                continue
            except TRANSFER_ERRORS as exc:
                self._give_up(exc)
                return
            if sent:
                self.pushed.append(name)
                self.reporter.detail(f"Pushed layer {name} to the cache registry "
                                     f"({human(self.transfer.sent - before)} sent)")

    def summary(self) -> dict[str, Any]:
        """For BuildResult.cache_registry: what moved."""
        return {"registry": self.shown, "readonly": self.readonly, "pulled": list(self.pulled),
                "pushed": list(self.pushed), "bytes_received": self.transfer.received,
                "bytes_sent": self.transfer.sent, "failed": self.failed}


def from_settings(reference: str | None, readonly: bool | None, platform_key: str,
                  reporter: Reporter) -> RemoteCache | None:
    """The build's cache registry: the argument, else SLUGBUILD_CACHE_REGISTRY; None
    without one. A malformed reference is an error (a typo must not silently turn
    the shared cache off); an unreachable registry is not (fail open)."""
    reference = reference or os.environ.get(ENV_VAR) or None
    if reference is None:
        return None
    if readonly is None:
        readonly = os.environ.get(READONLY_ENV_VAR, "").strip().lower() in ("1", "true", "yes")
    store = registry_store(reference)
    return RemoteCache(store, reference, namespace(platform_key), reporter, readonly)


def pull_layer(cache: Cache, kind: str, name: str, key: str, what: str,
               extra_check: Callable[[Path, dict[str, Any]], Any] | None = None,
               reporter: Reporter | None = None) -> Layer | None:
    """On a local miss (the caller holds the layer's build lock): the layer from the
    build's cache registry, if it has one and the entry is right."""
    remote: RemoteCache | None = cache.remote
    if remote is None:
        return None
    return remote.pull(cache, kind, name, key, what, extra_check, reporter)
