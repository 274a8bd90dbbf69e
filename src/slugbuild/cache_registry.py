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

import contextlib
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from . import errors
from .cache import Cache, Layer
from .envflag import FALSE_WORDS
from .layer_artifact import (
    MANIFEST_TYPE,
    ArtifactInvalid,
    Store,
    StreamedPart,
    Transfer,
    fetch_artifact,
    fetch_check,
    make_artifact,
    materialise,
    namespace,
    part_only_wanted,
    push_artifact,
    push_check,
)
from .log import Reporter
from .oci.options import RegistryOptions
from .slug_size import human

if TYPE_CHECKING:
    from .oci.registry import RegistryClient

ENV_VAR = "SLUGBUILD_CACHE_REGISTRY"
READONLY_ENV_VAR = "SLUGBUILD_CACHE_REGISTRY_READONLY"
# What a build pushes: the layers it made, and collectstatic outputs it kept
# (static_reuse.py: a fresh runner then does not run collectstatic again).
SHARED_KINDS = ("runtimes", "layers", "static")
# Seconds each registry request may take to connect and between reads (the client
# retries GET and HEAD twice more): a slow registry costs a bounded time, then a warning.
REQUEST_TIMEOUT = 10.0
# What a failing store raises: the registry client's errors (unreachable, refused,
# protocol, digest), and the local file system's while a pulled blob is written.
TRANSFER_ERRORS: tuple[type[BaseException], ...] = (errors.RegistryError, OSError)
T = TypeVar("T")


class RegistryStore:
    """A registry repository as a store, through the OCI image code's client and
    credentials (one client, one auth story). A blob whose bytes do not match its
    digest is ArtifactInvalid: the entry is wrong, the registry may still be fine."""

    # Pulls of different layers may run at once (RemoteCache.pull): each thread
    # talks through a client of its own (RegistryClient.sibling).
    concurrent = True

    def __init__(self, client: RegistryClient) -> None:
        self.client = client
        self._owner = threading.get_ident()
        self._local = threading.local()

    def _client(self) -> RegistryClient:
        if threading.get_ident() == self._owner:
            return self.client
        mine: RegistryClient | None = getattr(self._local, "client", None)
        if mine is None:
            mine = self._local.client = self.client.sibling()
        return mine

    def has_blob(self, digest: str) -> bool:
        return self._client().has_blob(digest)

    def put_blob(self, digest: str, data: bytes) -> None:
        self._client().push_blob(data, digest, len(data))

    def get_blob(self, digest: str, size: int) -> bytes:
        from .oci.registry import BlobLimit

        with tempfile.TemporaryDirectory(prefix="slugbuild-pull-") as work:
            target = Path(work) / "blob"
            try:
                self._client().pull_blob(digest, target, size=size,
                                         limit=BlobLimit(size, "a cache entry's blob"))
            except errors.RegistryError as exc:
                if exc.code == errors.REGISTRY_DIGEST_MISMATCH.code:
                    raise ArtifactInvalid(f"blob {digest[:19]}… does not match its "
                                          f"digest or size") from exc
                raise
            return target.read_bytes()

    def stream_part(self, digest: str, size: int, limit: int) -> tuple[bytes, memoryview]:
        """A layer's part blob and its tar bytes, inflated while it arrives
        (``StreamedPart``, at most ``limit`` bytes), no file written; checked as
        ``get_blob`` checks a blob, and ArtifactInvalid when it does not inflate."""
        made: list[StreamedPart] = []

        def sink() -> StreamedPart:
            made.append(StreamedPart(limit))
            return made[-1]

        try:
            self._client().read_blob(digest, size, sink)
        except errors.RegistryError as exc:
            if exc.code == errors.REGISTRY_DIGEST_MISMATCH.code:
                raise ArtifactInvalid(f"blob {digest[:19]}… does not match its "
                                      f"digest or size") from exc
            raise
        return made[-1].result()

    def get_manifest(self, tag: str) -> bytes | None:
        found = self._client().get_manifest(tag)
        return found[0] if found is not None else None

    def put_manifest(self, tag: str, data: bytes) -> None:
        self._client().put_manifest(tag, data, MANIFEST_TYPE)

    def tags(self) -> list[str]:
        return self._client().list_tags()

    def within(self, seconds: float) -> contextlib.AbstractContextManager[None]:
        """This thread's requests done within ``seconds`` (RegistryClient.within)."""
        return self._client().within(seconds)


def registry_store(reference: str, registry: RegistryOptions | None = None,
                   timeout: float | None = None,
                   invalid: errors.ErrorKind = errors.CACHE_REGISTRY_INVALID) -> RegistryStore:
    """The registry repository ``docker://HOST[:PORT]/REPO`` as a store, with the
    credentials images use (docs/images.md, Credentials): ``registry``'s user and
    password when given, else the auth files and credential helpers for its host
    (none: anonymous); ``registry.insecure`` allows plain HTTP to another machine.
    ``timeout`` bounds each request (default: a build's REQUEST_TIMEOUT).
    A reference that is not one (no ``docker://``, a tag or digest given) is
    ``invalid`` (``cache-registry-invalid``; the published runtimes' registry has
    its own); credentials that cannot be found are the registry's error (a build
    fails open on them)."""
    # The registry code is imported only by a build that has a cache registry.
    from .oci.credentials import find_credentials
    from .oci.registry import RegistryClient

    host, repository = repository_of(reference, invalid)
    registry = registry or RegistryOptions()
    client = RegistryClient(host, repository,
                            timeout=REQUEST_TIMEOUT if timeout is None else timeout,
                            insecure=registry.insecure,
                            credentials=find_credentials(host, user=registry.user,
                                                         password=registry.password))
    return RegistryStore(client)


def repository_of(reference: str,
                  invalid: errors.ErrorKind = errors.CACHE_REGISTRY_INVALID) -> tuple[str, str]:
    """Host and repository of ``docker://HOST[:PORT]/REPO``, checked as ``registry_store``
    checks it, without making a client (a build that may never ask the registry
    checks the reference before any work and pays nothing else)."""
    from .oci.reference import parse_image_reference

    if not reference.startswith("docker://"):
        raise invalid.error(reference=reference, reason="it does not start with docker://")
    try:
        parsed = parse_image_reference(reference)
    except errors.RegistryError as exc:
        # The parser's message starts with the reference; the message shows it once.
        reason = exc.found.removeprefix(repr(reference)).lstrip(": ").rstrip(".")
        raise invalid.error(reference=reference, reason=reason) from exc
    if parsed.tag is not None or parsed.digest is not None or parsed.host is None \
            or parsed.repository is None:
        raise invalid.error(reference=reference,
                            reason="name a repository only: the tags are slugbuild's")
    return parsed.host, parsed.repository


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
        # A store with a client per thread is read by several pulls at once (the
        # runtime's and the dependencies' parts arrive and inflate side by side);
        # others one request at a time.
        alone = contextlib.nullcontext() if getattr(self.store, "concurrent", False) \
            else self._lock
        try:
            with alone:
                if self.failed:
                    return None
                transfer = Transfer()
                fetched = fetch_artifact(self.store, self.space, kind, key, transfer)
            with self._lock:
                self.transfer.received += transfer.received
            if fetched is None:
                return None
            if fetched.config.get("name") != name:
                raise ArtifactInvalid("it names another layer")
            layer = materialise(cache, fetched, extra_check, part_only_wanted())
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
        """Push the layers this build made (runtime and dependency layers; not those it
        pulled)."""
        if self.readonly:
            return
        for kind, name, key in cache.published:
            if kind not in SHARED_KINDS or name.startswith("apt-") or name in self.pulled \
                    or self.failed:
                continue  # a layer pulled from the registry is there already
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

    def check_passed(self, digest: str, layer_key: str, modules: list[str]) -> bool:
        """Whether a runner recorded in the registry that the entry-point import check
        ``digest`` (importcheck.py: the dependency layer key and the modules) passed.
        A record that does not match its digest or names other modules is ignored."""
        with self._lock:
            if self.failed:
                return False
            try:
                found = fetch_check(self.store, self.space, digest, self.transfer)
            except ArtifactInvalid:
                return False
            except TRANSFER_ERRORS as exc:
                self._give_up(exc)
                return False
        return found == {"layer_key": layer_key, "modules": modules}

    def record_check(self, digest: str, layer_key: str, modules: list[str]) -> None:
        """Record a passed entry-point import check for other runners (not read-only)."""
        if self.readonly:
            return
        with self._lock:
            if self.failed:
                return
            try:
                push_check(self.store, self.space, digest,
                           {"layer_key": layer_key, "modules": modules}, self.transfer)
            except TRANSFER_ERRORS as exc:
                self._give_up(exc)

    def summary(self) -> dict[str, Any]:
        """For BuildResult.cache_registry: what moved."""
        return {"registry": self.shown, "readonly": self.readonly, "pulled": list(self.pulled),
                "pushed": list(self.pushed), "bytes_received": self.transfer.received,
                "bytes_sent": self.transfer.sent, "failed": self.failed}


def from_settings(reference: str | None, readonly: bool | None, platform_key: str,
                  reporter: Reporter, registry: RegistryOptions | None = None
                  ) -> RemoteCache | None:
    """The build's cache registry: the argument, else SLUGBUILD_CACHE_REGISTRY; None
    without one. A malformed reference, or a user given without a password (or
    the reverse), is an error (a typo must not silently turn the shared cache
    off); an unreachable registry or an auth file or credential helper that
    fails is not (fail open)."""
    reference = reference or os.environ.get(ENV_VAR) or None
    if reference is None:
        return None
    if registry is not None:
        from .oci.credentials import explicit_credentials

        explicit_credentials(registry.user, registry.password)
    if readonly is None:
        readonly = readonly_from_env(os.environ.get(READONLY_ENV_VAR, ""))
    remote = RemoteCache(_Unusable(), reference, namespace(platform_key), reporter, readonly)
    try:
        remote.store = registry_store(reference, registry)
    except errors.RegistryError as exc:  # credentials that cannot be read: fail open
        remote._give_up(exc)
    return remote


def readonly_from_env(value: str) -> bool:
    """Whether SLUGBUILD_CACHE_REGISTRY_READONLY asks for read-only: any value but an
    explicit no (``0``, ``false``, ``no``, ``off``, empty). It guards untrusted builds,
    so a value it does not know (``on``, ``y``, a typo) must not turn pushing on."""
    text = value.strip().lower()
    return bool(text) and text not in FALSE_WORDS


def guarded_store(target: str, run: Callable[[], T], failure: errors.ErrorKind) -> T:
    """Run a command's reads and writes of a store (``cache export``/``import``,
    ``runtime publish``): one that fails is ``failure`` in its ``store-invalid``
    (an entry unlike its digests) or ``store-failed`` variant."""
    try:
        return run()
    except ArtifactInvalid as exc:
        raise failure.error(variant="store-invalid", target=target, reason=str(exc)) from exc
    except TRANSFER_ERRORS as exc:
        raise failure.error(variant="store-failed", target=target,
                            reason=str(exc) or type(exc).__name__) from exc


class _Unusable:
    """The store of a cache registry given up before its first request."""

    def _refuse(self, *_args: object) -> Any:
        raise OSError("the cache registry is not usable")

    has_blob = put_blob = get_blob = get_manifest = put_manifest = tags = stream_part = _refuse


def pull_layer(cache: Cache, kind: str, name: str, key: str, what: str,
               extra_check: Callable[[Path, dict[str, Any]], Any] | None = None,
               reporter: Reporter | None = None) -> Layer | None:
    """On a local miss (the caller holds the layer's build lock): the layer from the
    build's cache registry, if it has one and the entry is right."""
    remote: RemoteCache | None = cache.remote
    if remote is None:
        return None
    return remote.pull(cache, kind, name, key, what, extra_check, reporter)
