"""``slugbuild cache``: list, prune, export and import the cache's layers.

``list`` shows each runtime, dependency and tool layer with its size and last
use (the mtime of its ``locks/use-*.lock``, stamped by every build that finds
it). ``prune`` removes layers by age and/or down to a total size, least
recently used first, and never one a running build holds (``Cache.removal``).
``export``/``import`` carry layers as OCI artifacts (layer_artifact.py) to and
from an OCI image layout directory or a registry, so a plain CI cache action
(which saves and restores a directory) or a shared registry can move them
between machines; an import publishes each layer through the cache's verified
path, exactly as the registry level of a build does (docs/cache.md).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from . import errors, platform_info, records
from .cache import MANIFEST, Cache
from .layer_artifact import (
    ArtifactInvalid,
    LayoutStore,
    Store,
    Transfer,
    fetch_artifact,
    is_layer_dir,
    layer_size,
    layer_tag,
    make_artifact,
    materialise,
    namespace,
    push_artifact,
)
from .slug_size import human

LISTED_KINDS = ("runtimes", "layers", "tools")
SHARED_KINDS = ("runtimes", "layers")  # what export/import and the registry carry
REGISTRY_SCHEME = "docker://"


@dataclass(frozen=True)
class LocalLayer:
    """One layer directory of the cache."""

    kind: str
    name: str
    key: str
    path: Path
    size: int
    last_used: float  # epoch seconds

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "key": self.key, "size": self.size,
                "last_used": _iso(self.last_used), "path": str(self.path)}


def _iso(moment: float) -> str:
    return _dt.datetime.fromtimestamp(moment, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def local_layers(cache: Cache, kinds: tuple[str, ...] = LISTED_KINDS) -> list[LocalLayer]:
    """The cache's finished layers, least recently used first."""
    found = []
    for kind in kinds:
        try:
            entries = sorted((cache.root / kind).iterdir())
        except OSError:
            continue
        for path in entries:
            if not is_layer_dir(path):
                continue
            try:
                manifest = json.loads((path / MANIFEST).read_text())
                key = str(manifest["key"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            found.append(LocalLayer(kind, path.name, key, path, layer_size(path),
                                    _last_use(cache, kind, path)))
    found.sort(key=lambda layer: (layer.last_used, layer.kind, layer.name))
    return found


def _last_use(cache: Cache, kind: str, path: Path) -> float:
    """When a build last found the layer, else when it was published."""
    for candidate in (cache.root / "locks" / f"use-{kind}-{path.name}.lock", path / MANIFEST):
        try:
            return candidate.stat().st_mtime
        except OSError:
            continue
    return 0.0


def list_command(cache: Cache, as_json: bool, out: TextIO) -> int:
    layers = local_layers(cache)
    if as_json:
        out.write(json.dumps({"cache_dir": str(cache.root),
                              "layers": [layer.as_dict() for layer in layers]}, indent=2) + "\n")
        return 0
    if not layers:
        out.write(f"No layers in {cache.root}\n")
        return 0
    out.write(f"{'KIND':<9} {'NAME':<52} {'SIZE':>9}  LAST USE\n")
    for layer in reversed(layers):  # most recent first, as people read a list
        out.write(f"{layer.kind:<9} {layer.name:<52} {human(layer.size):>9}  "
                  f"{_iso(layer.last_used)}\n")
    total = sum(layer.size for layer in layers)
    out.write(f"{len(layers)} layer(s), {human(total)} in {cache.root}\n")
    return 0


@dataclass
class PruneResult:
    removed: list[LocalLayer]
    in_use: list[LocalLayer]
    kept_bytes: int


def prune(cache: Cache, older_than_days: float | None, max_size: int | None,
          dry_run: bool = False, now: float | None = None) -> PruneResult:
    """Remove layers last used more than ``older_than_days`` ago, then the least
    recently used ones until the rest take at most ``max_size`` bytes. A layer a
    running build holds (found, or being built) is never removed."""
    now = time.time() if now is None else now
    layers = local_layers(cache)
    total = sum(layer.size for layer in layers)
    removed: list[LocalLayer] = []
    in_use: list[LocalLayer] = []
    for layer in layers:  # least recently used first
        too_old = older_than_days is not None and now - layer.last_used > older_than_days * 86400
        too_big = max_size is not None and total > max_size
        if not (too_old or too_big):
            continue
        if dry_run:
            removed.append(layer)
            total -= layer.size
            continue
        with cache.removal(layer.kind, layer.name) as free:
            if not free:
                in_use.append(layer)
                continue
            doomed = cache.scratch_dir(f"pruned-{layer.name}")
            try:
                os.rename(layer.path, doomed / "layer")
            except OSError:
                shutil.rmtree(doomed, ignore_errors=True)
                continue
        shutil.rmtree(doomed, ignore_errors=True)
        removed.append(layer)
        total -= layer.size
    return PruneResult(removed, in_use, total)


def prune_command(cache: Cache, older_than_days: float | None, max_size: int | None,
                  dry_run: bool, out: TextIO) -> int:
    if older_than_days is None and max_size is None:
        raise errors.CACHE_COMMAND_FAILED.error(variant="prune-nothing")
    result = prune(cache, older_than_days, max_size, dry_run)
    verb = "Would remove" if dry_run else "Removed"
    for layer in result.removed:
        out.write(f"{verb} {layer.kind}/{layer.name} ({human(layer.size)}, last used "
                  f"{_iso(layer.last_used)})\n")
    for layer in result.in_use:
        out.write(f"Kept {layer.kind}/{layer.name}: a running build is using it\n")
    freed = sum(layer.size for layer in result.removed)
    out.write(f"{verb} {len(result.removed)} layer(s), {human(freed)}; "
              f"{human(result.kept_bytes)} left\n")
    return 0


# --- export / import -------------------------------------------------------------------------

def open_store(target: str, create: bool) -> Store:
    """The store ``target`` names: ``docker://HOST[:PORT]/REPO`` or a directory."""
    if target.startswith(REGISTRY_SCHEME):
        from .cache_registry import registry_store

        return registry_store(target)
    root = Path(target)
    if create:
        try:
            return LayoutStore(root, create=True)
        except OSError as exc:
            raise errors.CACHE_COMMAND_FAILED.error(
                variant="unwritable", target=target, reason=exc.strerror or str(exc)) from exc
    if not (root / LayoutStore.INDEX).is_file():
        raise errors.CACHE_COMMAND_FAILED.error(variant="not-a-layout", target=target)
    return LayoutStore(root)


def layer_check(kind: str) -> Callable[[Path, dict[str, Any]], Any] | None:
    """What a layer of ``kind`` must pass beyond its file index (dependency layers:
    every distribution's RECORD satisfied by the layer itself)."""
    return records.layer_problems if kind == "layers" else None


def export_layers(cache: Cache, store: Store, space: str, transfer: Transfer,
                  report: Callable[[str], None]) -> tuple[int, int]:
    """Push every shareable local layer; (pushed, skipped without a kept part)."""
    pushed = skipped = 0
    for layer in local_layers(cache, SHARED_KINDS):
        found = cache.lookup(layer.kind, layer.name, layer.key)
        if found is None or cache.verify(found, layer_check(layer.kind)):
            continue  # gone or damaged meanwhile: not for sharing
        artifact = make_artifact(found, space)
        if artifact is None:
            skipped += 1
            report(f"Skipped {layer.kind}/{layer.name}: no slug part kept (a build "
                   f"using it makes one)")
            continue
        if push_artifact(store, artifact, transfer):
            report(f"Exported {layer.kind}/{layer.name}")
        pushed += 1
    return pushed, skipped


def import_layers(cache: Cache, store: Store, tags: list[str], space: str,
                  transfer: Transfer, report: Callable[[str], None]) -> tuple[int, int]:
    """Materialise the store's entries of this namespace that the cache lacks;
    (imported, refused)."""
    imported = refused = 0
    for kind, key in _entries(tags, space):
        if any(layer.key == key for layer in local_layers(cache, (kind,))):
            continue
        try:
            fetched = fetch_artifact(store, space, kind, key, transfer)
            if fetched is None:
                continue
            name = str(fetched.config.get("name"))
            if key[:12] not in name:
                raise ArtifactInvalid("its name does not match its key")
            with cache.lock(kind, name):
                if cache.lookup(kind, name, key) is None:
                    materialise(cache, fetched, layer_check(kind))
                    imported += 1
                    report(f"Imported {kind}/{name}")
        except ArtifactInvalid as exc:
            refused += 1
            report(f"Refused {kind} {key[:12]}: {exc}")
    return imported, refused


def _entries(tags: list[str], space: str) -> Iterator[tuple[str, str]]:
    """(kind, key) of the tags of namespace ``space``."""
    for kind in SHARED_KINDS:
        prefix = layer_tag(space, kind, "")
        for tag in tags:
            key = tag[len(prefix):]
            if tag.startswith(prefix) and len(key) == 64 and all(
                    c in "0123456789abcdef" for c in key):
                yield kind, key


def export_command(cache: Cache, target: str, out: TextIO) -> int:
    store = open_store(target, create=True)
    transfer = Transfer()
    pushed, skipped = _guarded_transfer(target, lambda: export_layers(
        cache, store, namespace(platform_info.current().key), transfer, _line(out)))
    out.write(f"{pushed} layer(s) in {target} ({human(transfer.sent)} sent)"
              + (f"; {skipped} without a kept part skipped" if skipped else "") + "\n")
    return 0


def import_command(cache: Cache, source: str, out: TextIO) -> int:
    store = open_store(source, create=False)
    transfer = Transfer()
    space = namespace(platform_info.current().key)

    def run() -> tuple[int, int]:
        tags = store.tags()
        return import_layers(cache, store, tags, space, transfer, _line(out))

    imported, refused = _guarded_transfer(source, run)
    out.write(f"Imported {imported} layer(s) from {source} ({human(transfer.received)} "
              f"received)" + (f"; {refused} refused (see above)" if refused else "") + "\n")
    return 1 if refused else 0


def _guarded_transfer(target: str, run: Callable[[], tuple[int, int]]) -> tuple[int, int]:
    """Run an export or import; a store that fails is one clear error."""
    from .cache_registry import TRANSFER_ERRORS

    try:
        return run()
    except ArtifactInvalid as exc:
        raise errors.CACHE_COMMAND_FAILED.error(
            variant="store-invalid", target=target, reason=str(exc)) from exc
    except TRANSFER_ERRORS as exc:
        raise errors.CACHE_COMMAND_FAILED.error(
            variant="store-failed", target=target, reason=str(exc) or type(exc).__name__
        ) from exc


def _line(out: TextIO) -> Callable[[str], None]:
    def write(message: str) -> None:
        out.write(message + "\n")
        out.flush()
    return write


def dispatch(args: Any) -> int:
    """Run ``slugbuild cache <action>`` (cli.py's parser block)."""
    from .cache import default_cache_dir

    cache = Cache(args.cache_dir if args.cache_dir is not None else default_cache_dir())
    out = sys.stdout
    try:
        if args.cache_action == "list":
            return list_command(cache, args.json, out)
        if args.cache_action == "prune":
            return prune_command(cache, args.older_than, args.max_size, args.dry_run, out)
        if args.cache_action == "export":
            return export_command(cache, args.target, out)
        return import_command(cache, args.source, out)
    finally:
        cache.release_uses()
