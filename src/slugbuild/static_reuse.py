"""collectstatic's output reused when its inputs are unchanged (issue 20).

A warm Django build spent as long in collectstatic as in everything else but
packing. Its output is a function of what it reads: the build directory as
collectstatic finds it (the app's files, static ones included, and its
settings), the Python prefix (the runtime and dependency layers, each cached
under a key of its own), the environment it runs in (config vars, what earlier
buildpacks exported, a fixed base: collectstatic.py) and the command.
The key is all of that, exactly: every file of the build directory outside
``.heroku/python`` by path, execute bit and SHA-256 (so any change to the app
runs collectstatic again), the placed layers' keys, and the environment with
this build's own directories written as placeholders.

Reuse is refused (collectstatic runs, nothing is kept) when the prefix is not
exactly the placed layers (a pre_compile hook or an earlier buildpack may have
changed it), when the build directory holds a file that is neither a regular
file, a directory nor a symlink, and a run's output is not kept when it wrote
into ``.heroku/python`` or names the build's directories (it would not be
what a fresh run writes).

What a run changed (files and symlinks added or changed, directories added,
paths removed) is kept in the cache as a layer of kind ``static``: its tree
holds the changed files at their paths, ``delta.json`` beside it the rest. A
reuse applies it to the build directory: the same bytes, modes and paths, so
the slug is byte-identical to one from a fresh run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cache import (
    FILE_INDEX,
    Cache,
    Layer,
    LayerChanged,
    file_sha256,
    read_index,
    write_json_atomic,
)
from .cache_registry import pull_layer
from .layer_artifact import PYTHON_HOME, delta_directories, in_python_home
from .log import Reporter

STATIC_KIND = "static"
# Changes whenever what a kept output holds, or how it is keyed, changes.
STATIC_FORMAT = 1
DELTA = "delta.json"

# path relative to the build directory -> (kind, inode, size, mtime_ns, ctime_ns, mode)
Stamp = tuple[str, int, int, int, int, int]


@dataclass
class StaticReuse:
    """One build's collectstatic, reused or kept. ``layer_keys``: the placed layers'
    (mount, key), or None when the prefix may hold more than them."""

    build_dir: Path
    scratch: Path
    cache: Cache
    reporter: Reporter
    layer_keys: list[tuple[str, str]] | None
    # Called before collectstatic runs (the build materialises layers shown by a view).
    prepare: Callable[[], None] | None = None
    # Given: a kept output is applied as hard links to the cached files (the build
    # holds the cache's link lock) and the layer is passed to it, for the build to
    # hand the links back at its end (cache.release_links). Else as checked copies.
    on_linked: Callable[[Layer], None] | None = None
    key: str | None = None
    before: dict[str, Stamp] = field(default_factory=dict)
    # Set by before_run when the run sees the prefix through an overlay.
    prefix_written: Callable[[], bool] | None = None

    def apply(self, env: Mapping[str, str], argv: list[str]) -> bool:
        """Put a kept output for these inputs into the build directory; whether one was.
        Otherwise note the build directory as collectstatic will find it (``keep``)."""
        if self.layer_keys is None:
            return False
        try:
            self.before, digest = _scan(self.build_dir, hash_app=True)
        except (OSError, _Unkeyable):
            return False
        key = self._key(digest, env, argv)
        layer, _ = self.cache.lookup_verified(STATIC_KIND, key[:24], key)
        self.key = key
        if layer is None and self.cache.remote is not None:
            layer = self._pull(key)
        if layer is None:
            return False
        try:
            delta = json.loads((layer.path / DELTA).read_text())
            if self.on_linked is not None:
                self.on_linked(layer)  # before any link: released even if this fails
            _apply(layer, delta, self.build_dir, self.cache, links=self.on_linked is not None)
        except (OSError, ValueError, KeyError, TypeError, LayerChanged):
            # Half applied at worst: run collectstatic over it, as on a clean tree it
            # writes every file it owns; the entry is discarded.
            self.cache.discard(layer)
            self.key = None
            return False
        self.reporter.detail(f"Reused the output of an earlier run with the same inputs "
                             f"(the app's files, its packages, the environment; "
                             f"static layer {self.key[:12]})")
        return True

    def _pull(self, key: str) -> Layer | None:
        """On a local miss, the output kept by another machine under the same exact key,
        from the build's cache registry (cache_registry.py: digests checked, its
        delta confined to the build directory; None if it has none or it is wrong)."""
        name = key[:24]
        with contextlib.suppress(OSError), self.cache.lock(STATIC_KIND, name):
            (self.cache.root / STATIC_KIND).mkdir(exist_ok=True)
            layer, _ = self.cache.lookup_verified(STATIC_KIND, name, key)
            return layer or pull_layer(self.cache, STATIC_KIND, name, key,
                                       f"collectstatic output {key[:12]}",
                                       reporter=self.reporter)
        return None

    def before_run(self, prefix_written: Callable[[], bool] | None = None) -> None:
        """Just before collectstatic runs: the layers' files in place, and the build
        directory's stat noted (``keep`` keeps what the run changes).
        ``prefix_written``: the run sees the prefix through an overlay (layer_overlay.py)
        and this says whether it wrote there; the scans then leave the prefix out."""
        if self.prepare is not None:
            self.prepare()
        self.prefix_written = prefix_written
        if self.key is None:
            return
        try:
            self.before = _scan(self.build_dir, hash_app=False,
                                skip_prefix=prefix_written is not None)[0]
        except (OSError, _Unkeyable):
            self.key = None

    def keep(self) -> None:
        """After a run: keep what it changed, for the next build with the same inputs."""
        if self.key is None:
            return
        if self.prefix_written is not None and self.prefix_written():
            return  # it wrote into the Python prefix: not reproducible from the key
        try:
            after, _ = _scan(self.build_dir, hash_app=False,
                             skip_prefix=self.prefix_written is not None)
        except (OSError, _Unkeyable):
            return
        delta = _delta(self.before, after)
        if delta is None:
            return  # it wrote into the Python prefix: not reproducible from the key
        needles = [str(self.build_dir).encode(), str(self.scratch).encode()]
        if any(_names_any(self.build_dir / rel, needles) for rel in delta["files"]):
            return
        name = self.key[:24]
        with contextlib.suppress(OSError), self.cache.lock(STATIC_KIND, name):
            (self.cache.root / STATIC_KIND).mkdir(exist_ok=True)
            if self.cache.lookup(STATIC_KIND, name, self.key) is not None:
                return
            with self.cache.new_layer(STATIC_KIND, name, self.key,
                                      {"format": STATIC_FORMAT}) as tree:
                for rel in delta["files"]:
                    target = tree / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(self.build_dir / rel, target)
                for rel in delta["symlinks"]:
                    target = tree / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.symlink_to(os.readlink(self.build_dir / rel))
                write_json_atomic(tree.parent / DELTA, delta)

    def _key(self, app_digest: str, env: Mapping[str, str], argv: list[str]) -> str:
        places = {str(self.build_dir): "<build>", str(self.scratch): "<scratch>"}

        def neutral(text: str) -> str:
            for path, placeholder in places.items():
                text = text.replace(path, placeholder)
            return text

        inputs = {"format": STATIC_FORMAT, "layers": self.layer_keys, "app": app_digest,
                  "env": sorted((neutral(k), neutral(v)) for k, v in env.items()),
                  "argv": [neutral(arg) for arg in argv]}
        return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


class _Unkeyable(Exception):
    """The build directory holds what the key cannot describe (a FIFO, a socket)."""


def _scan(root: Path, hash_app: bool, prefix: str = "", skip_prefix: bool = True
          ) -> tuple[dict[str, Stamp], str]:
    """Every path below ``root`` (named ``prefix`` + its relative path) with its stat,
    the Python prefix left out with ``skip_prefix``, and (``hash_app``) the SHA-256
    of what collectstatic reads outside the prefix: each path, its kind, a file's
    execute bit and content, a symlink's target."""
    stamps: dict[str, Stamp] = {}
    digest = hashlib.sha256()
    pending = [(prefix, str(root))]
    while pending:
        prefix, directory = pending.pop()
        with os.scandir(directory) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
        for entry in entries:
            rel = prefix + entry.name
            in_prefix = _in_prefix(rel)
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                kind = "d"
                if not (skip_prefix and rel == PYTHON_HOME):
                    pending.append((rel + "/", entry.path))
                content = ""
            elif stat.S_ISLNK(st.st_mode):
                kind, content = "l", os.readlink(entry.path)
            elif stat.S_ISREG(st.st_mode):
                kind = "f"
                content = (f"{st.st_mode & 0o111:o}:{file_sha256(entry.path)}"
                           if hash_app and not in_prefix else "")
            else:
                raise _Unkeyable(rel)
            stamps[rel] = (kind, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                           st.st_mode)
            if hash_app and not in_prefix:
                digest.update(json.dumps([rel, kind, content]).encode() + b"\n")
    return stamps, digest.hexdigest()


def _delta(before: dict[str, Stamp], after: dict[str, Stamp]) -> dict[str, Any] | None:
    """What changed between two scans, or None if anything in the Python prefix did."""
    files, links, directories = [], [], []
    for rel, stamp in after.items():
        if before.get(rel) == stamp or (stamp[0] == "d" and before.get(rel, ("",))[0] == "d"):
            continue
        if _in_prefix(rel):
            return None
        if stamp[0] == "d":
            directories.append(rel)
        elif stamp[0] == "l":
            links.append(rel)
        else:
            files.append(rel)
    removed = [rel for rel, stamp in before.items()
               if rel not in after or after[rel][0] != stamp[0]]
    if any(_in_prefix(rel) for rel in removed):
        return None
    return {"files": sorted(files), "symlinks": sorted(links), "directories": sorted(directories),
            "removed": sorted(removed)}


def _in_prefix(rel: str) -> bool:
    return rel == PYTHON_HOME or rel.startswith(PYTHON_HOME + "/")


def _names_any(path: Path, needles: list[bytes]) -> bool:
    try:
        if path.is_symlink():
            return any(needle in os.readlink(path).encode() for needle in needles)
        data = path.read_bytes()
    except OSError:
        return True
    return any(needle in data for needle in needles)


def _tree_is_delta(layer: Layer, delta: dict[str, Any]) -> bool:
    """Whether the kept tree holds exactly the delta's files and symlinks (its
    files.json, which the lookup compared with the tree, lists them) and only
    directories the delta makes or names a path below: ``cache.restore`` places the
    tree's paths and makes every directory of it, and only the delta's were checked by
    ``_confined``. files.json lists no directories, so the tree's are walked."""
    index = read_index(layer.path / FILE_INDEX)
    if index is None or sorted(index["files"]) != sorted(delta["files"]) \
            or sorted(index["symlinks"]) != sorted(delta["symlinks"]):
        return False
    allowed = delta_directories(delta)
    pending = [("", str(layer.tree))]
    while pending:
        prefix, directory = pending.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    rel = prefix + entry.name
                    if rel not in allowed:
                        return False
                    pending.append((rel + "/", entry.path))
    return True


class DeltaOutside(ValueError):
    """A kept output names a path it may not change (``_confined``)."""


def _confined(build_dir: Path, delta: dict[str, Any]) -> None:
    """Refuse, before anything is changed, a delta naming a path in the Python prefix
    or below a symlink of the build directory. A run's own delta never does (``_delta``
    refuses the prefix, ``_scan`` never goes below a link), but one pulled from a cache
    registry may, and at this point the layers are shown by a view: links to the cached
    trees, through which a removal or a write would change another app's layer."""
    for kind in ("removed", "directories", "symlinks", "files"):
        for rel in delta[kind]:
            if not isinstance(rel, str) or not rel or rel.startswith("/") or any(
                    part in ("", ".", "..") for part in rel.split("/")) or in_python_home(rel):
                raise DeltaOutside(rel)
            parent = build_dir
            for part in rel.split("/")[:-1]:
                parent = parent / part
                try:
                    st = os.lstat(parent)
                except FileNotFoundError:
                    break  # made by the delta itself, as a plain directory
                if not stat.S_ISDIR(st.st_mode):
                    raise DeltaOutside(rel)


def _apply(layer: Layer, delta: dict[str, Any], build_dir: Path, cache: Cache | None = None,
           links: bool = False) -> None:
    """Make the build directory what the kept run left: removals, directories,
    symlinks (their targets read from the kept tree), files copied with their modes.
    Every path is checked first (``_confined``): nothing outside the app's own files
    is touched, and nothing is when one path is wrong.

    With the ``cache``, its files and symlinks (the kept tree holds exactly those of
    the delta, checked by ``_confined``) are placed by ``cache.restore``: hard links
    with ``links`` (a warm Django build copied hundreds of files; a step that writes
    one in place moves its ctime, so the cache's next check hashes it and discards
    the output if it changed), else copies checked against the layer's files.json
    (a build holding the link lock may be writing one)."""
    _confined(build_dir, delta)
    for rel in sorted(delta["removed"], reverse=True):
        path = build_dir / rel
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    for rel in delta["directories"]:
        (build_dir / rel).mkdir(parents=True, exist_ok=True)
    if cache is not None and _tree_is_delta(layer, delta):
        cache.restore(layer, build_dir, copy=not links)
        return
    for rel in delta["symlinks"]:
        target = build_dir / rel
        if target.is_symlink() or target.is_file():
            target.unlink()
        target.symlink_to(os.readlink(layer.tree / rel))
    for rel in delta["files"]:
        target = build_dir / rel
        if target.is_symlink() or target.exists():
            target.unlink()
        shutil.copy2(layer.tree / rel, target)
