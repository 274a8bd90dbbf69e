"""The ``published`` runtime source: runtime layers published once, pulled by every build.

Heroku's buildpack downloads a prebuilt CPython per version and never builds
or relocates one at build time; a cold slugbuild build copies, trims and
relocates a prefix. ``slugbuild runtime publish`` (publish.py) builds the
runtime layer exactly as a build does and puts its artifact (layer_artifact.py:
the one a cache registry holds) into a registry repository or an OCI layout
directory, under its key's tag and under a version tag
(``sb1-<platform>-python-3.12.1``).

This source offers the versions those tags name. The chosen version's artifact
config carries the layer's key inputs, so the offer is keyed as the build that
published it keyed its layer: same name, same key, same kept part, the same
slug. On a local miss the layer is pulled and verified as a cache-registry pull
is (``fetch_artifact``, ``materialise``). A registry that cannot be read, or an
entry that is missing or wrong, gives one warning and the build takes its
runtime from the other sources (fail open).

What a build read (the versions, and each version's key inputs as its checked
config gave them) is remembered in ``CACHE/runtime-index/`` for
``FRESH_SECONDS``: the builds after it do not ask the registry at all while the
layer is in the local cache (a warm build stays as quick as without the option);
a version published again is seen once that answer is older.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any

from .. import errors
from ..cache import Cache, write_json_atomic
from ..cache_registry import TRANSFER_ERRORS, registry_store, repository_of
from ..layer_artifact import (
    ARTIFACT_FORMAT,
    CONFIG_TYPE,
    MAX_METADATA,
    ArtifactInvalid,
    LayoutStore,
    Store,
    Transfer,
    fetch_artifact,
    layer_tag,
    materialise,
    namespace,
    part_only_wanted,
    pulling,
)
from ..log import Reporter
from ..oci.options import RegistryOptions
from ..platform_info import Platform
from ..slug_size import human
from .download import INDEX_DIR
from .layer import cached_runtime_layer, runtime_key
from .sources import LocalRuntime, RuntimeOffer, SourceUnavailable

PUBLISHED = "published"
ENV_VAR = "SLUGBUILD_PYTHON_REGISTRY"
REGISTRY_SCHEME = "docker://"
# The kind part of a version tag: ``<namespace>-python-<version>``.
VERSION_KIND = "python"
# Key inputs every runtime layer has; the rest is the identity of the source that made it.
_COMMON_INPUTS = ("implementation", "version", "platform", "layer_format")
_PUBLISHED_VERSION = re.compile(r"^3\.\d{1,3}\.\d{1,3}$")
# How long a registry's answer (versions, key inputs) is used without asking again.
FRESH_SECONDS = 600
_MEMORY_FORMAT = 1


def version_tag(space: str, version: str) -> str:
    """The tag naming the runtime published for ``version`` in namespace ``space``."""
    return layer_tag(space, VERSION_KIND, version)


def open_published_store(reference: str, registry: RegistryOptions | None = None,
                         timeout: float | None = None) -> Store:
    """``docker://HOST[:PORT]/REPO`` (the cache registry's client and credentials) or
    an OCI layout directory. A malformed reference is ``python-registry-invalid``."""
    if reference.startswith(REGISTRY_SCHEME):
        return registry_store(reference, registry, timeout,
                              invalid=errors.PYTHON_REGISTRY_INVALID)
    root = Path(reference)
    if not (root / LayoutStore.INDEX).is_file():
        raise SourceUnavailable(f"{reference} is not a directory `slugbuild runtime "
                                f"publish` wrote (no {LayoutStore.INDEX})")
    return LayoutStore(root)


class PublishedSource:
    """The runtimes published to one registry repository or layout directory."""

    name = PUBLISHED

    def __init__(self, reference: str, platform: Platform, offline: bool = False,
                 registry: RegistryOptions | None = None, cache: Cache | None = None
                 ) -> None:
        self.reference = reference
        self.platform = platform
        self.space = namespace(platform.key)
        self.downloads = reference.startswith(REGISTRY_SCHEME)
        self.offline = offline and self.downloads
        self._registry = registry
        self._store: Store | None = None
        self._listed = False
        # Why it was not used (the one warning, ``passed_over``), once it failed.
        self.problem: str | None = None
        # The remembered answer (module docstring), None without a cache.
        self._memory_path = None if cache is None else cache.root / INDEX_DIR / (
            "published-" + hashlib.sha256(f"{reference}|{self.space}".encode())
            .hexdigest()[:24] + ".json")
        self._memory = self._remembered()
        if self.downloads:  # a malformed reference fails now: a typo must not pass silently
            repository_of(reference, errors.PYTHON_REGISTRY_INVALID)

    @property
    def index_origin(self) -> str | None:
        if self._listed:
            return self.reference
        return f"{self.reference} (as read lately)" if self._memory is not None else None

    def _opened(self) -> Store:
        if self.offline:
            raise SourceUnavailable("--offline: published runtimes are not read")
        if self.problem is not None:
            raise SourceUnavailable(self.problem)
        if self._store is None:  # made when first needed: a warm build may never ask
            try:
                self._store = open_published_store(self.reference, self._registry)
            except errors.RegistryError as exc:  # credentials that cannot be read
                raise self._failed(str(exc)) from exc
            except SourceUnavailable as exc:
                self.problem = str(exc)
                raise
        return self._store

    def _failed(self, reason: str) -> SourceUnavailable:
        self.problem = reason
        return SourceUnavailable(reason)

    def _remembered(self) -> dict[str, Any] | None:
        """The fresh remembered answer, None when there is none (or it is malformed)."""
        if self._memory_path is None:
            return None
        try:
            memory = json.loads(self._memory_path.read_text())
            fresh = 0 <= time.time() - float(memory["fetched"]) < FRESH_SECONDS
            versions, entries = memory["versions"], memory["entries"]
            well_formed = memory["format"] == _MEMORY_FORMAT \
                and isinstance(versions, list) and isinstance(entries, dict) \
                and all(isinstance(v, str) and _PUBLISHED_VERSION.match(v) for v in versions) \
                and all(isinstance(e, dict) and isinstance(e.get("identity"), dict)
                        for e in entries.values())
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            return None
        return memory if fresh and well_formed else None

    def _remember(self, version: str | None = None, entry: dict[str, Any] | None = None
                  ) -> None:
        """Keep the answer read (best effort: a cache that cannot be written is no loss)."""
        if self._memory_path is None or self._memory is None:
            return
        if version is not None and entry is not None:
            self._memory["entries"][version] = entry
        try:
            self._memory_path.parent.mkdir(exist_ok=True)
            write_json_atomic(self._memory_path, self._memory)
        except OSError:
            pass

    def available(self) -> list[RuntimeOffer]:
        if self._memory is not None and not self.offline:
            versions = list(self._memory["versions"])
        else:
            versions = self._listing()
        return [RuntimeOffer(version=version, source=self, origin=self.reference,
                             identity={}, metadata={"origin": self.reference})
                for version in versions]

    def _listing(self) -> list[str]:
        """The versions the store's tags name (remembered, with no key inputs yet)."""
        store = self._opened()
        try:
            with pulling(store):
                tags = store.tags()
        except TRANSFER_ERRORS as exc:
            raise self._failed(f"it could not be read ({exc or type(exc).__name__})") from exc
        self._listed = True
        prefix = version_tag(self.space, "")
        versions = sorted({tag[len(prefix):] for tag in tags if tag.startswith(prefix)
                           and _PUBLISHED_VERSION.match(tag[len(prefix):])})
        self._memory = {"format": _MEMORY_FORMAT, "fetched": time.time(),
                        "versions": versions, "entries": {}}
        self._remember()
        return versions

    def find_exact(self, version: str) -> RuntimeOffer | None:
        return None  # its listing is every version it has

    def provide(self, offer: RuntimeOffer, scratch: Path, reporter: Reporter) -> LocalRuntime:
        """Never called for a settled offer: its layer is pulled, not made (``settle``)."""
        raise SourceUnavailable(f"Python {offer.version} is published as a layer, "
                                f"not as a prefix")

    def settle(self, offer: RuntimeOffer, cache: Cache, reporter: Reporter,
               fetch: bool = True) -> RuntimeOffer | None:
        """``offer`` keyed as its publisher keyed the layer and, with ``fetch``, that
        layer in ``cache`` (pulled on a local miss); None when it cannot be used
        (``problem`` says why: the build then asks the other sources)."""
        try:
            settled = self._keyed(offer)
            if fetch and not self._pull(settled, cache, reporter):
                return None
        except ArtifactInvalid as exc:
            self.problem = f"its Python {offer.version} entry was not used: {exc}"
            return None
        except TRANSFER_ERRORS as exc:
            self.problem = f"it could not be read ({exc or type(exc).__name__})"
            return None
        except SourceUnavailable:  # opened only now (a remembered listing): ``problem`` says
            return None
        return settled

    def _keyed(self, offer: RuntimeOffer) -> RuntimeOffer:
        """The offer with the identity its published artifact's config records (or, as
        a build read it lately, remembered)."""
        entry = (self._memory or {}).get("entries", {}).get(offer.version)
        if entry is not None:
            settled = self._with_identity(offer, entry["identity"])
            if list(runtime_key(settled, self.platform)[:2]) == [entry.get("name"),
                                                                  entry.get("key")]:
                return settled
        store = self._opened()
        with pulling(store):
            config = self._version_config(store, offer.version)
        try:
            inputs: dict[str, Any] = config["inputs"]
            fields = (config["format"], config["namespace"], config["kind"], inputs["version"],
                      inputs["platform"])
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise ArtifactInvalid(f"its metadata is malformed ({type(exc).__name__})") from exc
        if fields != (ARTIFACT_FORMAT, self.space, "runtimes", offer.version,
                      self.platform.key):
            raise ArtifactInvalid("it is the runtime of another version, platform or format")
        identity = {k: v for k, v in inputs.items() if k not in _COMMON_INPUTS}
        settled = self._with_identity(offer, identity)
        name, key, _ = runtime_key(settled, self.platform)
        if (name, key) != (config.get("name"), config.get("key")):
            raise ArtifactInvalid("its layer is keyed differently here (published by a "
                                  "slugbuild that makes runtime layers another way)")
        self._remember(offer.version, {"name": name, "key": key, "identity": identity})
        return settled

    def _version_config(self, store: Store, version: str) -> Any:
        """The config of the artifact ``version``'s tag names (ArtifactInvalid: none,
        or not a runtime layer's)."""
        raw = store.get_manifest(version_tag(self.space, version))
        if raw is None:
            raise ArtifactInvalid("its version tag is gone")
        try:
            descriptor = json.loads(raw)["config"]
            digest, size = str(descriptor["digest"]), int(descriptor["size"])
            if descriptor["mediaType"] != CONFIG_TYPE or not 0 <= size <= MAX_METADATA:
                raise ArtifactInvalid("it is not a slugbuild runtime layer")
            return json.loads(store.get_blob(digest, size))
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise ArtifactInvalid(f"its metadata is malformed ({type(exc).__name__})") from exc

    def _with_identity(self, offer: RuntimeOffer, identity: dict[str, Any]) -> RuntimeOffer:
        made_by = identity.get("source", "download")
        return dataclasses.replace(
            offer, identity=identity,
            origin=f"{self.reference} (published; made from {made_by})",
            metadata={"origin": self.reference, "published_from": str(made_by),
                      **({"archive_sha256": identity["archive_sha256"]}
                         if "archive_sha256" in identity else {})})

    def _pull(self, offer: RuntimeOffer, cache: Cache, reporter: Reporter) -> bool:
        """The offer's layer in ``cache``: found there, else pulled and verified. (A
        layer found is verified when the build uses it; damaged, it is discarded and
        pulled again then: ``ensure_runtime_layer``.)"""
        name, key, _ = runtime_key(offer, self.platform)
        if cache.lookup("runtimes", name, key, lazy=True) is not None:
            return True
        transfer = Transfer()
        with cache.lock("runtimes", name):
            if cached_runtime_layer(cache, offer, self.platform, reporter, lazy=True):
                return True
            fetched = fetch_artifact(self._opened(), self.space, "runtimes", key, transfer)
            if fetched is None:
                raise ArtifactInvalid("its layer is not there")
            if fetched.config.get("name") != name:
                raise ArtifactInvalid("it names another layer")
            materialise(cache, fetched, None, part_only_wanted())
        reporter.step(f"Pulled the Python {offer.version} runtime layer from the published "
                      f"runtimes {self.reference} ({human(transfer.received)})")
        return True

    def passed_over(self, chosen: RuntimeOffer, first: bool) -> str | None:
        """The one warning when the build's runtime does not come from here although
        it failed, or was asked first (``first``) and had no match."""
        if chosen.source is self or (self.problem is None and not first):
            return None
        why = self.problem or "it has no version matching the request"
        return (f"The published runtimes {self.reference} were not used ({why}); Python "
                f"{chosen.version} comes from {chosen.source_name} instead.")
