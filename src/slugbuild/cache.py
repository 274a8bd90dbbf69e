"""The cache directory: runtime and dependency layers, installer caches, scratch.

Layout (see docs/cache.md)::

    CACHE/
      CACHEDIR.TAG                      marks it a cache (tar --exclude-caches; staging skips it)
      runtimes/<name>/{manifest.json,files.json,tree/}  one relocatable CPython prefix
      layers/<name>/{manifest.json,files.json,tree/}    what an install added to a runtime
      pip/                              pip's own download and wheel cache (pip-tools/ inside)
      uv/                               uv's cache (installers/uv.py)
      tools/<tool>-<hash>/{...,tree/}   Pipenv, Poetry: build tools (installers/tools.py)
      history/<hash>.json               an app dir's last dependency inputs (dependencies.py)
      downloads/<platform key>/         verified runtime archives (downloads.py)
      buildpacks/<name>-<hash>/         a buildpack's CACHE_DIR (build.py)
      locks/                            one lock file per layer being built
      tmp/                              layers, installs and build dirs in progress

runtimes/, layers/, pip/, locks/ and tmp/ are made when the cache is opened;
the others by the modules named, when first needed.

A layer is built under tmp/ and renamed into place only after its manifest is
written, so a build killed half way never leaves a layer a later build would
trust. Builds of the same layer are serialised by a lock file.

Restoring a layer hard-links its files into the build directory (a copy
where links are impossible). ``files.json`` records each file's size, mtime
and mode when the layer was published; ``check_restored`` compares them after the
build steps ran, and a layer whose file was changed in place (through the
link) is discarded, so a later build never trusts it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import errors
from .stage import CACHEDIR_SIGNATURE, CACHEDIR_TAG

MANIFEST = "manifest.json"
FILE_INDEX = "files.json"
# Why os.link may fail where a copy works: another filesystem, not permitted,
# too many links to one inode.
_LINK_IMPOSSIBLE = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP}
TREE = "tree"
FORMAT = 1
KINDS = ("runtimes", "layers")


def default_cache_dir() -> Path:
    """SLUGBUILD_CACHE_DIR, else $XDG_CACHE_HOME/slugbuild, else ~/.cache/slugbuild."""
    explicit = os.environ.get("SLUGBUILD_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "slugbuild"


@dataclass(frozen=True)
class Layer:
    """A finished, trusted layer in the cache."""

    path: Path
    manifest: dict[str, Any]

    @property
    def tree(self) -> Path:
        return self.path / TREE


class Cache:
    """A cache directory. Safe to share between concurrent builds."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()
        try:
            for sub in (*KINDS, "pip", "locks", "tmp"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=self.root / "tmp", delete=True)
            probe.close()
            tag = self.root / CACHEDIR_TAG  # never packed, even from inside an app
            if not tag.is_file():
                tag.write_bytes(CACHEDIR_SIGNATURE + b"\n# slugbuild's cache (docs/cache.md)\n")
        except OSError as exc:
            raise errors.CACHE_DIR_UNUSABLE.error(path=self.root, reason=exc.strerror) from exc
        self._remove_abandoned_scratch()

    @property
    def pip_cache(self) -> Path:
        return self.root / "pip"

    def lookup(self, kind: str, name: str, key: str) -> Layer | None:
        """The layer ``kind/name`` if it is complete and was keyed by ``key``."""
        path = self.root / kind / name
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except (OSError, ValueError):
            return None
        if manifest.get("format") != FORMAT or manifest.get("key") != key:
            return None
        if not (path / TREE).is_dir():
            return None
        return Layer(path, manifest)

    @contextlib.contextmanager
    def lock(self, kind: str, name: str) -> Iterator[None]:
        """Hold the build lock of one layer (blocks while another build holds it)."""
        lock_path = self.root / "locks" / f"{kind}-{name}.lock"
        with open(lock_path, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def new_layer(
        self, kind: str, name: str, key: str, inputs: dict[str, Any]
    ) -> Iterator[Path]:
        """Yield an empty tree to fill; on success it becomes layer ``kind/name``.

        On any exception the partial tree is removed and nothing is published.
        The caller holds ``lock(kind, name)``.
        """
        scratch = self.scratch_dir(f"{kind}-{name}")
        tree = scratch / TREE
        tree.mkdir()
        try:
            yield tree
            write_json_atomic(scratch / FILE_INDEX, _file_index(tree))
            manifest = {"format": FORMAT, "kind": kind, "name": name, "key": key,
                        "inputs": inputs}
            write_json_atomic(scratch / MANIFEST, manifest)
            final = self.root / kind / name
            if final.exists():
                # A stale or foreign layer under the same name: move it aside first
                # so the rename below is atomic and the old one is never half-read.
                doomed = self.scratch_dir(f"old-{name}")
                os.rename(final, doomed / "layer")
                os.rename(scratch, final)
                shutil.rmtree(doomed, ignore_errors=True)
            else:
                os.rename(scratch, final)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise

    def restore(self, layer: Layer, target: Path) -> None:
        """Put the layer's files at ``target`` (merged into what is there), as hard links.

        A plain walk: directory times and modes do not matter (the slug
        normalises them), and copytree's per-directory copystat doubled the time.
        """
        linkable = (layer.path / FILE_INDEX).is_file()
        pending = [(str(layer.tree), str(target))]
        while pending:
            source_dir, target_dir = pending.pop()
            os.makedirs(target_dir, exist_ok=True)
            with os.scandir(source_dir) as entries:  # d_type: no stat per entry
                for entry in entries:
                    destination = os.path.join(target_dir, entry.name)
                    if entry.is_symlink():
                        if os.path.lexists(destination):
                            os.unlink(destination)
                        os.symlink(os.readlink(entry.path), destination)
                    elif entry.is_dir():
                        pending.append((entry.path, destination))
                    else:
                        _place(entry.path, destination, linkable)

    def check_restored(self, layer: Layer) -> set[tuple[int, int]] | None:
        """After a build used a restored layer: None if one of its files changed
        since publishing (the layer is then discarded), else the (st_dev, st_ino)
        of its files, which are the build's own hard links to them."""
        if not layer.tree.is_dir():
            return None  # discarded meanwhile by another build sharing the cache
        try:
            recorded = json.loads((layer.path / FILE_INDEX).read_text())
        except (OSError, ValueError):
            return set()  # an older layer: restored by copying, nothing linked
        inodes: set[tuple[int, int]] = set()
        try:
            unchanged = _file_index(layer.tree, inodes) == recorded
        except OSError:  # removed while being read
            return None
        if unchanged:
            return inodes
        doomed = self.scratch_dir(f"tampered-{layer.path.name}")
        try:
            os.rename(layer.path, doomed / "layer")
        except OSError:
            pass
        shutil.rmtree(doomed, ignore_errors=True)
        return None

    def scratch_dir(self, label: str) -> Path:
        """A fresh directory under tmp/, marked with this process's id."""
        return Path(tempfile.mkdtemp(prefix=f"{os.getpid()}.{label}.", dir=self.root / "tmp"))

    def _remove_abandoned_scratch(self) -> None:
        """Delete scratch dirs left by builds whose process no longer runs."""
        for entry in (self.root / "tmp").iterdir():
            pid_text = entry.name.split(".", 1)[0]
            if pid_text.isdigit() and not process_alive(int(pid_text)):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        entry.unlink()


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _place(source: str, destination: str, linkable: bool) -> None:
    """Hard-link ``source`` at ``destination``, or copy it where a link is impossible.

    An existing file there is unlinked first, never written through: it may be
    a link into another cached layer.
    """
    if linkable:
        try:
            os.link(source, destination)
            return
        except FileExistsError:
            os.unlink(destination)
            return _place(source, destination, linkable)
        except OSError as exc:
            if exc.errno not in _LINK_IMPOSSIBLE:
                raise
    if os.path.lexists(destination):
        os.unlink(destination)
    shutil.copy2(source, destination)


def link_or_copy(source: os.PathLike | str, destination: os.PathLike | str) -> None:
    """Hard-link a file to a new path, or copy it (metadata too) where links are impossible.

    Has shutil.copy2's signature, so copytree can use it.
    """
    try:
        os.link(source, destination)
    except OSError as exc:
        if exc.errno not in _LINK_IMPOSSIBLE:
            raise
        shutil.copy2(source, destination)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (slugs and archives can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _file_index(tree: Path, inodes: set[tuple[int, int]] | None = None
                ) -> dict[str, list[int]]:
    """Size, mtime (ns) and mode of every regular file below ``tree``.

    The mode counts: a chmod through a hard link would change every later slug.
    ``inodes``, when given, also collects each file's (st_dev, st_ino).
    """
    index = {}
    pending = [("", str(tree))]
    while pending:
        prefix, directory = pending.pop()
        with os.scandir(directory) as listing:
            for entry in listing:
                if entry.is_dir(follow_symlinks=False):
                    pending.append((prefix + entry.name + "/", entry.path))
                elif entry.is_file(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    index[prefix + entry.name] = [st.st_size, st.st_mtime_ns, st.st_mode]
                    if inodes is not None:
                        inodes.add((st.st_dev, st.st_ino))
    return index


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON under a name of this process, then rename it into place: a reader
    (another build sharing the cache) sees the old file or the new one, never half."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
