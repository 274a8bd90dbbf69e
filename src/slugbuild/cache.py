"""The cache directory: runtime and dependency layers, installer caches, scratch.

Layout (see docs/cache.md)::

    CACHE/
      CACHEDIR.TAG                      marks it a cache (tar --exclude-caches; staging skips it)
      runtimes/<name>/{manifest.json,files.json,tree/}  one relocatable CPython prefix
      layers/<name>/{manifest.json,files.json,tree/}    what an install added to a runtime
      pip/                              pip's own download and wheel cache
      uv/                               uv's cache (installers/uv.py)
      tools/<tool>-<hash>/{...,tree/}   Pipenv, Poetry: build tools (installers/tools.py)
      history/<hash>.json               an app dir's last dependency inputs (dependencies.py)
      downloads/<platform key>/         verified runtime archives (runtime/download.py)
      buildpacks/<name>-<hash>/<app>/   a buildpack's CACHE_DIR, per app dir (buildpack_runner.py)
      locks/                            one lock file per layer being built, links.lock,
                                        leases/<token>.lease (one per running process),
                                        open.lock (shared by every user: hold_open)
      tmp/                              layers, installs and build dirs in progress,
                                        named <token>.<label>.<random> after their owner

Every top-level directory (``TOP_DIRS``) is made when the cache is opened, so
that each one exists, and is sealed, before any step of a build runs (step_jail.py).

A layer is built under tmp/ and renamed into place only after its manifest is
written, so a build killed half way never leaves a layer a later build would
trust. Builds of the same layer are serialised by a lock file.

``files.json`` records, at publish time, each file's size, mtime, mode and
SHA-256 and each symlink's target. ``verify`` checks a layer against it before
any use: sizes, modes and the set of paths always, contents by digest for
every file whose mtime is not the recorded one (so a cache restored by tar or
zip, which drop sub-second times, is hashed once and then trusted again).

Restoring a layer hard-links its files into the build directory only while
the build holds ``locks/links.lock`` (``exclusive_links``): then no other
build has a path to a cached file, and an in-place edit seen after the build
steps (``check_restored``) can only be this build's own. A build that cannot
take it (another build is linking) copies instead, so the files its build
steps can write are never shared with anyone.

Liveness of scratch directories is a ``flock`` on their owner's lease file,
never a process id: builds in other PID namespaces (containers sharing the
cache) see each other's locks, not each other's processes.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from . import errors
from .digests import DIGESTS as DIGESTS
from .digests import Digests as Digests
from .digests import StatKey as StatKey
from .digests import file_sha256 as file_sha256
from .digests import stat_key as stat_key
from .stage import CACHEDIR_SIGNATURE, CACHEDIR_TAG

MANIFEST = "manifest.json"
FILE_INDEX = "files.json"
# Why os.link may fail where a copy works: another filesystem, not permitted,
# too many links to one inode.
_LINK_IMPOSSIBLE = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP}
TREE = "tree"
PACKED_PARTS = "packed"
# A layer pulled or imported from another cache is kept as its verified slug part,
# index and metadata record until a step needs its tree (layer_artifact.ensure_tree):
# this file, beside manifest.json, marks such a part-only layer.
PART_ONLY = "part-only.json"
FORMAT = 1
KINDS = ("runtimes", "layers")
# Every directory slugbuild keeps at the cache's top level (the stores of
# cache_admin.STORES, the kinds it lists, its bookkeeping). All are made when the cache
# is opened, not when first needed: an installer's run keeps the root writable (uv
# hard-links from its cache into the layer under tmp/) and gets read-only binds only on
# the entries the root holds when it starts (step_jail.installer_read_only), so a store
# that did not exist yet was a package build's to make and fill, for the next app.
# The only place they are made: a cache an older version laid out gets the newer ones
# here too (test_every_store_of_the_cache_is_made_when_it_is_opened keeps the stores
# the modules name within it).
TOP_DIRS = (*KINDS, "static", "tools", "pip", "uv", "built-wheels", "npm", "apt", "pyc",
            "checks", "history", "runtime-index", "sticky-python", "downloads",
            "node-index", "buildpacks", "oci", "locks", "tmp")
# What a layer kind may add to the check of its tree (RECORDs, for dependencies).
TreeCheck = Callable[[Path, dict[str, Any]], Iterable[str]]
# files.json: {"format": 2, "files": {rel: [size, mtime_ns, mode, sha256, ctime_ns]},
# "symlinks": {rel: target}}. Older indexes (no digests) are not trusted.
INDEX_FORMAT = 2
LEASE_SUFFIX = ".lease"
# Where finished scratch waits for its detached deleter (Cache.dispose): outside the
# cache (a CI step that archives the cache right after a build must not see files
# vanish), in the temp directory, one private directory per user and cache.
TRASH_PREFIX = "slugbuild-trash-"
# Scratch entry names: <lease token>.<label>.<random>; older versions used <pid>.
_TOKEN = re.compile(r"^[0-9a-f]{16}\.")
_LEGACY = re.compile(r"^\d{1,10}\.")
# Scratch entries of older slugbuild versions (named after a process id) are
# removed once they are this old; their owner cannot be asked any more.
_LEGACY_SCRATCH_AGE = 24 * 3600

# Every user of the cache holds a shared flock on locks/<OPEN_LOCK> (``hold_open``);
# ``Cache.idle`` takes it exclusively.
OPEN_LOCK = "open.lock"


def open_lock(path: Path) -> IO[str]:
    """A lock file of the cache, opened for ``flock`` (created if missing), never
    through a symlink: one planted in a cache restored from elsewhere (a CI cache
    archive) would otherwise have every build create, and stamp the time of, the
    file it names, anywhere the builder may write (ELOOP: the lock is not taken)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o644)
    return open(fd, "a+", closefd=True)  # noqa: SIM115 - the caller's to close


def hold_open(root: Path) -> IO[str] | None:
    """A shared ``flock`` on the cache's ``locks/open.lock``, held until the file is
    closed: while it is, ``cache prune`` removes nothing that is read without a
    layer's own use lock (installer caches, image blobs, downloads, indexes). Waits
    only while a prune renames such entries away. Best effort: None when the lock
    cannot be taken (a read-only cache), which leaves the holder unprotected."""
    try:
        (root / "locks").mkdir(parents=True, exist_ok=True)
        handle = open_lock(root / "locks" / OPEN_LOCK)
    except OSError:
        return None
    try:
        fcntl.flock(handle, fcntl.LOCK_SH)
    except OSError:
        handle.close()
        return None
    return handle


def default_cache_dir() -> Path:
    """SLUGBUILD_CACHE_DIR, else $XDG_CACHE_HOME/slugbuild, else ~/.cache/slugbuild."""
    explicit = os.environ.get("SLUGBUILD_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "slugbuild"


@dataclass(frozen=True)
class Layer:
    """A finished, trusted layer in the cache (or a build's private, unpublished one)."""

    path: Path
    manifest: dict[str, Any]
    published: bool = True
    # The directory's inode when it was looked up: discarding it must not remove a
    # fresh layer another build published under the same name meanwhile.
    inode: int = 0
    # Part-only (PART_ONLY): its tree is not written; only callers that asked for
    # ``lookup(lazy=True)`` see such a layer, and write the tree before reading it.
    lazy: bool = False

    @property
    def tree(self) -> Path:
        return self.path / TREE

    @property
    def packed_parts(self) -> Path:
        """Where the layer's compressed slug parts are kept (pack.py): inside the
        layer's directory, so they go when the layer goes."""
        return self.path / PACKED_PARTS


class LayerChanged(Exception):
    """A layer's files changed while they were being read (restored, packed)."""


@dataclass
class Restored:
    """Where a restore put a layer's files. ``copies`` (copy mode only): for each
    file, relative to the layer's tree, the (inode, size, mtime_ns, ctime_ns) of the
    build's own copy just after it was made; None when they are hard links."""

    copies: dict[str, tuple[int, int, int, int]] | None = None
    symlinks: dict[str, str] = field(default_factory=dict)  # copy mode: path -> target
    # Shown by a view (layer_view.py), not placed: neither links nor copies.
    view: bool = False


class _Lease:
    """This process's claim on the scratch entries named ``<token>.*`` in tmp/.

    An exclusive ``flock`` held on ``locks/leases/<token>.lease`` for the life of
    the process: another build (any PID namespace, same kernel) that can take
    it knows the owner is gone.
    """

    def __init__(self, root: Path) -> None:
        token, path, fd = _new_lease(root)
        self.token, self.path, self.fd, self.tmp = token, path, fd, root / "tmp"
        self.pid = os.getpid()

    def release(self) -> None:
        """At exit: remove what is left of this process's scratch, then the lease."""
        if os.getpid() != self.pid:
            return  # a forked child: the lease is its parent's
        with contextlib.suppress(OSError):
            for entry in self.tmp.iterdir():
                if entry.name.startswith(self.token + "."):
                    _remove_entry(entry)
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _new_lease(root: Path) -> tuple[str, Path, int]:
    """A new lease file under ``root``'s locks/leases, locked: its token, path and
    descriptor (whoever holds the descriptor owns the entries named after it)."""
    leases = root / "locks" / "leases"
    leases.mkdir(exist_ok=True)
    while True:
        token = secrets.token_hex(8)
        path = leases / (token + LEASE_SUFFIX)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        # A cleaner may have taken the new file before us and removed it.
        if _same_inode(fd, path):
            return token, path, fd
        os.close(fd)


# Deletes a disposed entry, then its lease, then the cache's trash directory if that
# left it empty, in a process of its own that outlives the build: ``sh`` starts it
# in the background and returns at once.
_DELETER = ('(rm -rf -- "$1"; rm -f -- "$2"; rmdir -- "$3") </dev/null >/dev/null 2>&1 &')


_leases: dict[Path, _Lease] = {}
_leases_lock = threading.Lock()


@atexit.register
def _release_leases() -> None:
    for lease in list(_leases.values()):
        lease.release()


# A forked child takes a lease of its own the first time it opens a cache.
os.register_at_fork(after_in_child=_leases.clear)


def _same_inode(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except OSError:
        return False


class Cache:
    """A cache directory. Safe to share between concurrent builds: threads,
    processes, and containers on one kernel (docs/cache.md#cache-sharing)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()
        try:
            for sub in TOP_DIRS:
                try:
                    (self.root / sub).mkdir(parents=True, exist_ok=True)
                except FileExistsError:  # a link or a file there: the store's to refuse
                    if sub in (*KINDS, "pip", "locks", "tmp"):
                        raise
            probe = tempfile.NamedTemporaryFile(dir=self.root / "tmp", delete=True)
            probe.close()
            tag = self.root / CACHEDIR_TAG  # never packed, even from inside an app
            if not tag.is_file():
                tag.write_bytes(CACHEDIR_SIGNATURE + b"\n# slugbuild's cache (docs/cache.md)\n")
            self.lease = self._lease()
        except OSError as exc:
            raise errors.CACHE_DIR_UNUSABLE.error(path=self.root, reason=exc.strerror) from exc
        # layer path -> (manifest key, files.json mtime) of its last passed check
        self._verified: dict[Path, tuple[str | None, int]] = {}
        self._uses: dict[Path, IO[str]] = {}  # use-lock path -> its open file (hold_use)
        # Shared lock on locks/open.lock while this object may read the stores that
        # only an idle cache may lose (``idle``); dropped by ``release_uses``.
        self._open: IO[str] | None = hold_open(self.root)
        # The cache registry (cache_registry.RemoteCache), when the build has one.
        self.remote: Any = None
        # (kind, name, key) of every layer this cache object published.
        self.published: list[tuple[str, str, str]] = []
        DIGESTS.watch(self.root / "tmp", f"{self.lease.token}.clock.")
        self._remove_abandoned_scratch()

    def _lease(self) -> _Lease:
        with _leases_lock:
            lease = _leases.get(self.root)
            if lease is None or not _same_inode(lease.fd, lease.path):
                lease = _leases[self.root] = _Lease(self.root)
            return lease

    @property
    def pip_cache(self) -> Path:
        return self.root / "pip"

    def lookup(self, kind: str, name: str, key: str, lazy: bool = False) -> Layer | None:
        """The layer ``kind/name`` if it is complete and was keyed by ``key``.

        A part-only layer (its tree not written yet) is returned as such with
        ``lazy``; else its tree is written first (``layer_artifact.ensure_tree``):
        a caller that did not ask for one never sees a layer without a tree. None
        when that tree cannot be made from the part (the layer is then discarded).
        A layer found is held in use (``hold_use``) until ``release_uses``: ``cache
        prune`` never removes it meanwhile."""
        path = self.root / kind / name
        if not (path / MANIFEST).is_file():
            return None
        self.hold_use(kind, name)
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except (OSError, ValueError, RecursionError):
            return None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT \
                or manifest.get("key") != key:
            return None
        try:
            if (path / TREE).is_dir():
                return Layer(path, manifest, inode=path.stat().st_ino)
            if not (path / PART_ONLY).is_file():
                return None
            layer = Layer(path, manifest, inode=path.stat().st_ino, lazy=True)
        except OSError:
            return None
        if lazy:
            return layer
        from .layer_artifact import tree_or_none  # it builds on this module
        return tree_or_none(self, layer)

    def lookup_verified(self, kind: str, name: str, key: str,
                        extra_check: TreeCheck | None = None, lazy: bool = False
                        ) -> tuple[Layer | None, list[str]]:
        """The layer ``kind/name`` if present, keyed by ``key`` and intact; else None
        and, when it was there but damaged (now discarded), what was wrong.
        ``lazy``: as for ``lookup``."""
        layer = self.lookup(kind, name, key, lazy)
        if layer is None:
            return None, []
        problems = self.verify(layer, extra_check)
        if problems:
            self.discard(layer)
            return None, problems
        return layer, []

    def verify(self, layer: Layer, extra_check: TreeCheck | None = None) -> list[str]:
        """What is wrong with a layer's tree compared with its files.json (empty: intact).

        Sizes, modes, symlink targets and the set of paths are always compared;
        a file's content (SHA-256) only when its mtime is not the recorded one,
        after which the new mtime is recorded (best effort) so the next check is
        a stat again. ``extra_check(tree, index)`` adds its own problems (RECORDs),
        unless files.json says the same check passed when the layer was published.
        Remembered per cache object while files.json is unchanged. A part-only
        layer: its kept part against its record (``layer_artifact.part_problems``).
        """
        if layer.lazy:
            from .layer_artifact import part_problems  # it builds on this module
            return part_problems(layer)
        index_path = layer.path / FILE_INDEX
        try:
            index_mtime = index_path.stat().st_mtime_ns
        except OSError:
            return [f"{FILE_INDEX} is missing"]
        if self._verified.get(layer.path) == (layer.manifest.get("key"), index_mtime):
            return []
        index = read_index(index_path)
        if index is None:
            return [f"{FILE_INDEX} is missing, unreadable or from an older slugbuild"]
        try:
            problems, restamped = _compare_tree(layer.tree, index)
        except OSError as exc:
            return [f"its tree could not be read ({exc.strerror or exc})"]
        if not problems and extra_check is not None and not index.get("checked"):
            # A layer whose check passed when it was published, and whose tree is
            # still what files.json says, passes it still: not run again.
            problems = list(extra_check(layer.tree, index))
        if problems:
            return problems
        if restamped:
            restamp(index, restamped)
            with contextlib.suppress(OSError):
                write_json_atomic(index_path, index, compact=True)
        with contextlib.suppress(OSError):
            self._verified[layer.path] = (layer.manifest.get("key"),
                                          index_path.stat().st_mtime_ns)
        return []

    def discard(self, layer: Layer) -> None:
        """Remove a layer from the cache (renamed away first: readers see all or nothing)."""
        self._verified.pop(layer.path, None)
        try:
            if layer.inode and os.stat(layer.path).st_ino != layer.inode:
                return  # already replaced by a fresh layer
        except OSError:
            return  # already gone
        try:
            doomed = self.scratch_dir(f"discarded-{layer.path.name}")
        except OSError:  # bookkeeping never fails a build: a full disk leaves it in place
            return
        try:
            os.rename(layer.path, doomed / "layer")
        except OSError:
            pass
        shutil.rmtree(doomed, ignore_errors=True)

    def hold_use(self, kind: str, name: str) -> None:
        """Hold a shared ``flock`` on ``locks/use-<kind>-<name>.lock`` (and stamp its
        mtime: the layer's last use, for ``cache list`` and ``cache prune``). Taken
        before the layer is read, so a prune, which removes a layer only with the
        exclusive lock, never removes one a build has found. Best effort: a cache
        whose locks cannot be written just goes unprotected from prunes."""
        path = self.root / "locks" / f"use-{kind}-{name}.lock"
        if path in self._uses:
            return
        try:
            handle = open_lock(path)  # held until release_uses (or collected)
        except OSError:
            return
        try:
            fcntl.flock(handle, fcntl.LOCK_SH)
            os.utime(handle.fileno())
        except OSError:
            handle.close()
            return
        self._uses[path] = handle

    def release_uses(self) -> None:
        """Let prunes remove the layers this cache object has held (the build is over)."""
        while self._uses:
            _, handle = self._uses.popitem()
            handle.close()
        if self._open is not None:
            self._open.close()
            self._open = None

    @contextlib.contextmanager
    def idle(self) -> Iterator[bool]:
        """True while no other user has the cache open (no build, lock, image or
        command running on it, in any process): ``cache prune`` may then remove
        what builds read without a layer's use lock (installer caches, image blobs,
        downloads). Builds opening the cache meanwhile wait in ``Cache()`` (or
        ``hold_open``) until it ends, so hold it for renames only. Never waits.
        Drops this object's own open hold first, for good."""
        if self._open is not None:
            self._open.close()
            self._open = None
        with _exclusive_now([self.root / "locks" / OPEN_LOCK]) as free:
            yield free

    @contextlib.contextmanager
    def removal(self, kind: str, name: str) -> Iterator[bool]:
        """True while no build holds layer ``kind/name`` in use or builds it: it may
        be removed then (``cache prune``). Never waits."""
        locks = self.root / "locks"
        with _exclusive_now([locks / f"{kind}-{name}.lock",
                             locks / f"use-{kind}-{name}.lock"]) as free:
            yield free

    @contextlib.contextmanager
    def lock(self, kind: str, name: str) -> Iterator[None]:
        """Hold the build lock of one layer (blocks while another build holds it)."""
        lock_path = self.root / "locks" / f"{kind}-{name}.lock"
        with open_lock(lock_path) as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def exclusive_links(self) -> Iterator[bool]:
        """True while this build alone may hard-link cached files into its build
        directory (another build holds ``locks/links.lock``: False, copy instead)."""
        with open_lock(self.root / "locks" / "links.lock") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def new_layer(
        self, kind: str, name: str, key: str, inputs: dict[str, Any],
        check: TreeCheck | None = None, draft: dict[str, Any] | None = None,
        written: dict[str, tuple[StatKey, str]] | None = None,
    ) -> Iterator[Path]:
        """Yield an empty tree to fill; on success it becomes layer ``kind/name``.

        On any exception the partial tree is removed and nothing is published.
        ``check(tree, index)`` may list why the tree is not complete for its key:
        then it is not published, and ``draft["unpublished"]`` holds the
        problems and ``draft["layer"]`` the build's private Layer (its caller's
        to remove). ``written``: digests the caller already knows (``build_index``).
        The caller holds ``lock(kind, name)``.
        """
        scratch = self.scratch_dir(f"{kind}-{name}")
        tree = scratch / TREE
        tree.mkdir()
        try:
            yield tree
            index = build_index(tree, written)
            problems = list(check(tree, index)) if check is not None else []
            if check is not None and not problems:
                index["checked"] = True
            write_json_atomic(scratch / FILE_INDEX, index, compact=True)
            manifest = {"format": FORMAT, "kind": kind, "name": name, "key": key,
                        "inputs": inputs}
            write_json_atomic(scratch / MANIFEST, manifest)
            if problems:
                assert draft is not None, "a checked layer needs a draft to report to"
                draft["unpublished"] = problems
                draft["layer"] = Layer(scratch, manifest, published=False)
                return
            final = self.publish(scratch, kind, name, key)
            self._verified[final] = (key, (final / FILE_INDEX).stat().st_mtime_ns)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise

    def publish(self, scratch: Path, kind: str, name: str, key: str) -> Path:
        """Rename a finished layer directory (manifest written last) into place as
        ``kind/name``. The caller holds ``lock(kind, name)``."""
        final = self.root / kind / name
        if final.exists():
            # A stale or foreign layer under the same name: move it aside first
            # so the rename below is atomic and the old one is never half-read.
            doomed = self.scratch_dir(f"old-{name}")
            os.rename(final, doomed / "layer")
            try:
                os.rename(scratch, final)
            except OSError:  # (ENOSPC for the directory entry): the old one stays
                with contextlib.suppress(OSError):
                    os.rename(doomed / "layer", final)
                raise
            shutil.rmtree(doomed, ignore_errors=True)
        else:
            os.rename(scratch, final)
        self.published.append((kind, name, key))
        return final

    def restore(self, layer: Layer, target: Path, copy: bool = False) -> Restored:
        """Put the layer's files at ``target`` (merged into what is there).

        As hard links, unless ``copy``: then as the build's own copies, each
        checked afterwards against the layer's files.json (raises LayerChanged
        if a file changed while it was copied: another build's in-place edit).
        A plain walk: directory times and modes do not matter (the slug
        normalises them), and copytree's per-directory copystat doubled the time.
        """
        index = read_index(layer.path / FILE_INDEX) if copy else None
        if copy and index is None:
            raise LayerChanged(f"{layer.path.name}: {FILE_INDEX} is unreadable")
        recorded_files: dict[str, list[Any]] = index["files"] if index is not None else {}
        copies: dict[str, tuple[int, int, int, int]] = {}
        symlinks: dict[str, str] = {}
        placed: list[str] = []
        linked: dict[str, os.stat_result] = {}
        pending = [("", str(layer.tree), str(target))]
        try:
            while pending:
                prefix, source_dir, target_dir = pending.pop()
                os.makedirs(target_dir, exist_ok=True)
                with os.scandir(source_dir) as entries:  # d_type: no stat per entry
                    for entry in entries:
                        destination = os.path.join(target_dir, entry.name)
                        if entry.is_symlink():
                            if os.path.lexists(destination):
                                os.unlink(destination)
                            link_target = os.readlink(entry.path)
                            os.symlink(link_target, destination)
                            symlinks[prefix + entry.name] = link_target
                        elif entry.is_dir():
                            pending.append((prefix + entry.name + "/", entry.path, destination))
                            continue
                        elif copy:
                            rel = prefix + entry.name
                            copies[rel] = _copy_checked(entry.path, destination,
                                                        recorded_files.get(rel), rel)
                        else:
                            _place(entry.path, destination)
                            linked[prefix + entry.name] = os.lstat(entry.path)
                        placed.append(destination)
        except LayerChanged:
            for path in placed:  # the caller restores a fresh layer over a clean prefix
                with contextlib.suppress(OSError):
                    os.unlink(path)
            raise
        if not copy:
            self._record_link_ctimes(layer, linked)
        return Restored(copies, symlinks) if copy else Restored()

    def _record_link_ctimes(self, layer: Layer, linked: dict[str, os.stat_result]) -> None:
        """Linking a file moves its ctime: record the new ones (files still as
        recorded otherwise), so that a later write through a link, mtime set back
        or not, shows as a ctime change. Only the build holding the link lock
        restores by links, so no other build records ctimes meanwhile. Best effort:
        a stale ctime only makes a later check hash that file."""
        index_path = layer.path / FILE_INDEX
        index = read_index(index_path)
        if index is None:
            return
        files = index["files"]
        for rel, st in linked.items():  # one pass: ~5,000 files on a warm Django build
            recorded = files.get(rel)
            if recorded is not None and recorded[0] == st.st_size \
                    and recorded[1] == st.st_mtime_ns and recorded[2] == st.st_mode:
                recorded[4:] = [st.st_ctime_ns]
        with contextlib.suppress(OSError):
            write_json_atomic(index_path, index, compact=True)
            self._verified.pop(layer.path, None)

    def release_links(self, layer: Layer, mounted: Path) -> None:
        """At the end of a build that hard-linked ``layer`` at ``mounted``: remove the
        build's links to the layer's files and record the ctimes that moves.

        Unlinking a file moves its ctime as linking does; unrecorded, every file
        would look changed to the next build's check and be hashed again. A file's
        new ctime is recorded only when the ctime just before the unlink was the
        recorded one (no write since the last record: a write moves it) and its
        size, mtime and mode are still the recorded ones, exactly as at restore.
        Called while the build still holds the link lock. Best effort: what is not
        recorded is hashed by the next check."""
        index_path = layer.path / FILE_INDEX
        index = read_index(index_path)
        if index is None or not layer.published:
            return
        tree, files = str(layer.tree), index["files"]
        changed = False
        for rel, recorded in files.items():
            try:
                placed = os.path.join(mounted, rel)
                mine = os.lstat(placed)
                cached = os.path.join(tree, rel)
                before = os.lstat(cached)
                if not os.path.samestat(mine, before) or len(recorded) < 5 \
                        or before.st_ctime_ns != recorded[4]:
                    continue  # not the build's link, or changed since it was recorded
                os.unlink(placed)
                after = os.lstat(cached)
            except OSError:
                continue
            if (after.st_size, after.st_mtime_ns, after.st_mode) == tuple(recorded[:3]):
                recorded[4] = after.st_ctime_ns
                changed = True
        if changed:
            with contextlib.suppress(OSError):
                write_json_atomic(index_path, index, compact=True)
                self._verified.pop(layer.path, None)

    def check_restored(self, layer: Layer) -> set[tuple[int, int]] | None:
        """After a build used a layer by hard links: None if one of its files changed
        since publishing (the layer is then discarded), else the (st_dev, st_ino)
        of its files, which are the build's own hard links to them."""
        if not layer.tree.is_dir():
            return None  # discarded meanwhile by another build sharing the cache
        index = read_index(layer.path / FILE_INDEX)
        inodes: set[tuple[int, int]] = set()
        try:
            unchanged = index is not None and _stamps_unchanged(layer.tree, index, inodes)
        except OSError:  # removed while being read
            return None
        if unchanged:
            return inodes
        if layer.published:
            self.discard(layer)
        return None

    def still_pristine(self, layer: Layer) -> bool:
        """Every file of the layer still has its recorded size, mtime and mode."""
        index = read_index(layer.path / FILE_INDEX)
        try:
            return index is not None and _stamps_unchanged(layer.tree, index)
        except OSError:
            return False

    def scratch_dir(self, label: str) -> Path:
        """A fresh directory under tmp/, named after this process's lease."""
        return Path(tempfile.mkdtemp(prefix=f"{self.lease.token}.{label}.",
                                     dir=self.root / "tmp"))

    def dispose(self, path: Path) -> None:
        """Remove ``path`` (a directory in the cache) off the build's critical path.

        Deleting a build directory (thousands of directories and files) cost
        more than the rest of a warm build on a busy disk. It is renamed into
        trash/ under a lease of its own, whose lock a detached process inherits
        and holds while it deletes the entry; if that process dies (or never
        starts), the lease is free and the next build that opens the cache
        removes the entry (``_remove_abandoned_scratch``). The trash is outside
        the cache (``trash_dir``), so archiving the cache right after a build
        never sees files vanish; where it is on another filesystem, or no
        process can be started, the entry is deleted by the detached process
        where it is, or here.
        """
        if not os.path.lexists(path):
            return
        trash = self.trash_dir(create=True)
        try:
            token, lease, fd = _new_lease(self.root)
        except OSError:
            shutil.rmtree(path, ignore_errors=True)
            return
        try:
            doomed = trash / f"{token}.{path.name}" if trash is not None else path
            try:
                os.rename(path, doomed)
            except OSError:  # another filesystem: deleted where it is
                doomed = path
            try:
                subprocess.run(["sh", "-c", _DELETER, "sh", str(doomed), str(lease),
                                str(trash) if trash is not None and doomed != path else ""],
                               pass_fds=(fd,), start_new_session=True, check=True,
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
            except (OSError, subprocess.CalledProcessError):
                shutil.rmtree(doomed, ignore_errors=True)
                with contextlib.suppress(OSError):
                    os.unlink(lease)
        finally:
            os.close(fd)

    def trash_dir(self, create: bool = False) -> Path | None:
        """This cache's trash: ``$TMPDIR/slugbuild-trash-<uid>/<cache hash>``, in a
        directory only this user can enter; None when it is not one (a symlink or a
        directory of someone else's planted there) or cannot be made."""
        top = Path(tempfile.gettempdir()) / f"{TRASH_PREFIX}{os.getuid()}"
        try:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(top, 0o700)
            st = os.lstat(top)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() \
                    or st.st_mode & 0o077:
                return None
            mine = top / hashlib.sha256(str(self.root).encode()).hexdigest()[:16]
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(mine, 0o700)
            return mine if mine.is_dir() and not mine.is_symlink() else None
        except OSError:
            return None

    def _remove_abandoned_scratch(self) -> None:
        """Delete scratch and trash entries whose owner's lease is free (the owner is
        gone).

        Entries named after a process id (older slugbuild) go once a day old.
        """
        tmp, leases = self.root / "tmp", self.root / "locks" / "leases"
        try:
            entries = list(tmp.iterdir())
            trash = self.trash_dir()
            if trash is not None:
                with contextlib.suppress(OSError):
                    entries += trash.iterdir()
            tokens = {p.name[:-len(LEASE_SUFFIX)] for p in leases.iterdir()
                      if p.name.endswith(LEASE_SUFFIX)}
        except OSError:
            return
        now = time.time()
        for entry in entries:
            owner = entry.name.split(".", 1)[0]
            if _TOKEN.match(entry.name) and owner not in tokens:
                _remove_entry(entry)  # its owner's lease was removed: the owner is gone
            elif _LEGACY.match(entry.name):
                with contextlib.suppress(OSError):
                    if now - entry.lstat().st_mtime > _LEGACY_SCRATCH_AGE:
                        _remove_entry(entry)
        for token in tokens - {self.lease.token}:
            lease = leases / (token + LEASE_SUFFIX)
            fd = _take_free_lease(lease)
            if fd is None:
                continue
            try:
                for entry in entries:
                    if entry.name.startswith(token + "."):
                        _remove_entry(entry)
                with contextlib.suppress(OSError):
                    os.unlink(lease)  # last: while it exists, its entries are looked for
            finally:
                os.close(fd)


@contextlib.contextmanager
def _exclusive_now(paths: list[Path]) -> Iterator[bool]:
    """True while exclusive ``flock``s on every one of ``paths`` are held, taken without
    waiting; False when one is held elsewhere (or cannot be opened)."""
    handles = []
    try:
        for path in paths:
            try:
                handle = open_lock(path)  # closed below
            except OSError:
                yield False
                return
            handles.append(handle)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                yield False
                return
        yield True
    finally:
        for handle in handles:
            handle.close()


def _take_free_lease(path: Path) -> int | None:
    """A locked descriptor of the lease at ``path`` if nobody holds it (its owner is
    gone), else None."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    if not _same_inode(fd, path):  # removed and gone meanwhile
        os.close(fd)
        return None
    return fd


def _remove_entry(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            entry.unlink()


def _place(source: str, destination: str) -> None:
    """Hard-link ``source`` at ``destination``, or copy it where a link is impossible.

    An existing file there is unlinked first, never written through: it may be
    a link into another cached layer.
    """
    try:
        os.link(source, destination)
        return
    except FileExistsError:
        os.unlink(destination)
        return _place(source, destination)
    except OSError as exc:
        if exc.errno not in _LINK_IMPOSSIBLE:
            raise
    if os.path.lexists(destination):
        os.unlink(destination)
    shutil.copy2(source, destination)


def _copy_checked(source: str, destination: str, recorded: list[Any] | None, rel: str
                  ) -> tuple[int, int, int, int]:
    """Copy a layer file to a new inode at ``destination``; its stamp as copied.

    The source must have its recorded size, mtime and mode after the copy
    (else another build edited the cached file meanwhile: LayerChanged).
    """
    if os.path.lexists(destination):
        os.unlink(destination)
    shutil.copyfile(source, destination)
    st = os.lstat(source)
    if recorded is None or (st.st_size, st.st_mtime_ns, st.st_mode) != tuple(recorded[:3]):
        with contextlib.suppress(OSError):
            os.unlink(destination)
        raise LayerChanged(rel)
    os.chmod(destination, stat.S_IMODE(st.st_mode))
    mine = os.lstat(destination)
    return (mine.st_ino, mine.st_size, mine.st_mtime_ns, mine.st_ctime_ns)


def link_or_copy(source: os.PathLike[str] | str, destination: os.PathLike[str] | str) -> None:
    """Hard-link a file to a new path, or copy it (metadata too) where links are impossible.

    Has shutil.copy2's signature, so copytree can use it.
    """
    try:
        os.link(source, destination)
    except OSError as exc:
        if exc.errno not in _LINK_IMPOSSIBLE:
            raise
        shutil.copy2(source, destination)




def _walk(tree: Path) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """(relative path, entry) of every non-directory below ``tree``."""
    pending = [("", str(tree))]
    while pending:
        prefix, directory = pending.pop()
        with os.scandir(directory) as listing:
            for entry in listing:
                if entry.is_dir(follow_symlinks=False):
                    pending.append((prefix + entry.name + "/", entry.path))
                else:
                    yield prefix + entry.name, entry


def build_index(tree: Path, written: dict[str, tuple[StatKey, str]] | None = None
                ) -> dict[str, Any]:
    """files.json for ``tree``: size, mtime (ns), mode and SHA-256 of every regular
    file, the target of every symlink. The mode counts: a chmod through a hard link
    would change every later slug. Raises LayerChanged for anything else (a fifo).
    ``written``: digests of files the caller wrote into the tree itself (a layer
    pulled from a registry), by path and the stat they had just after: used while
    a file's stat is still that one (the files exist meanwhile: no inode reuse)."""
    files: dict[str, list[Any]] = {}
    symlinks: dict[str, str] = {}
    written = written or {}
    for rel, entry in _walk(tree):
        if entry.is_symlink():
            symlinks[rel] = os.readlink(entry.path)
        elif entry.is_file(follow_symlinks=False):
            before = entry.stat(follow_symlinks=False)
            mine = written.get(rel)
            digest = mine[1] if mine is not None and mine[0] == stat_key(before) \
                else DIGESTS.known(before)  # hashed already by the RECORD check
            after = before
            if digest is None:
                clock = DIGESTS.clock(before.st_dev)
                digest = file_sha256(entry.path)
                after = os.lstat(entry.path)
                if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
                    raise LayerChanged(rel)  # written while it was hashed
                if stat_key(after) == stat_key(before):
                    DIGESTS.remember(after, digest, clock)
            files[rel] = [after.st_size, after.st_mtime_ns, after.st_mode, digest,
                          after.st_ctime_ns]
        else:
            raise LayerChanged(f"{rel} is not a regular file, directory or symlink")
    return {"format": INDEX_FORMAT, "files": files, "symlinks": symlinks}


def read_index(path: Path) -> dict[str, Any] | None:
    """A files.json of the current format, else None."""
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT \
            or not isinstance(index.get("files"), dict) \
            or not isinstance(index.get("symlinks"), dict):
        return None
    return index


def _recorded_ctime(recorded: list[Any]) -> int | None:
    """The ctime files.json holds for a file (None in an index written before it did)."""
    return recorded[4] if len(recorded) > 4 else None


def restamp(index: dict[str, Any], stamps: dict[str, tuple[int, int]]) -> None:
    """Record new (mtime, ctime) stamps of files whose content is as recorded."""
    for rel, (mtime, ctime) in stamps.items():
        entry = index["files"].get(rel)
        if entry is not None:
            entry[1] = mtime
            entry[4:] = [ctime]


def _compare_tree(tree: Path, index: dict[str, Any]
                  ) -> tuple[list[str], dict[str, tuple[int, int]]]:
    """Problems found comparing ``tree`` with ``index``, and the new mtimes of files
    whose content was hashed and found as recorded."""
    files, symlinks = index["files"], index["symlinks"]
    problems: list[str] = []
    restamped: dict[str, tuple[int, int]] = {}
    seen = 0
    for rel, entry in _walk(tree):
        if entry.is_symlink():
            if symlinks.get(rel) != os.readlink(entry.path):
                problems.append(f"{rel}: not the recorded symlink")
            else:
                seen += 1
            continue
        recorded = files.get(rel)
        if recorded is None or not entry.is_file(follow_symlinks=False):
            problems.append(f"{rel}: not in the layer when it was made")
            continue
        seen += 1
        st = entry.stat(follow_symlinks=False)
        size, mtime, mode, digest = recorded[:4]
        if st.st_size != size:
            problems.append(f"{rel}: size changed")
        elif st.st_mode != mode:
            problems.append(f"{rel}: mode changed")
        elif st.st_mtime_ns != mtime or st.st_ctime_ns != _recorded_ctime(recorded):
            # A write through any hard link moves the ctime, which no one can set
            # back (an mtime can be): the content is then compared.
            if file_sha256(entry.path) != digest:
                problems.append(f"{rel}: content changed")
            else:
                restamped[rel] = (st.st_mtime_ns, st.st_ctime_ns)
        if len(problems) > 20:
            break
    if not problems and seen != len(files) + len(symlinks):
        missing = sorted(set(files) | set(symlinks))
        present = {rel for rel, _ in _walk(tree)}
        problems += [f"{rel}: missing" for rel in missing if rel not in present][:20]
    return problems, restamped


def _stamps_unchanged(tree: Path, index: dict[str, Any],
                      inodes: set[tuple[int, int]] | None = None) -> bool:
    """Every file of ``tree`` has its recorded size, mtime and mode; no path came or
    went. ``inodes``, when given, also collects each file's (st_dev, st_ino)."""
    files, symlinks = index["files"], index["symlinks"]
    seen = 0
    for rel, entry in _walk(tree):
        if entry.is_symlink():
            if symlinks.get(rel) != os.readlink(entry.path):
                return False
        else:
            recorded = files.get(rel)
            if recorded is None or not entry.is_file(follow_symlinks=False):
                return False
            st = entry.stat(follow_symlinks=False)
            if (st.st_size, st.st_mtime_ns, st.st_mode) != tuple(recorded[:3]):
                return False
            if st.st_ctime_ns != _recorded_ctime(recorded) \
                    and file_sha256(entry.path) != recorded[3]:
                return False  # written in place, its mtime set back
            if inodes is not None:
                inodes.add((st.st_dev, st.st_ino))
        seen += 1
    return seen == len(files) + len(symlinks)


def write_json_atomic(path: Path, data: Any, compact: bool = False) -> None:
    """Write JSON under a name no other writer uses, then rename it into place: a
    reader (another build sharing the cache) sees the old file or the new one, never
    half. The name is random, not a process id: containers sharing the cache
    have the same process ids. ``compact``: one line, for large machine-read files
    (files.json), which json writes with its C encoder, 3 times faster."""
    text = (json.dumps(data, sort_keys=True, separators=(",", ":")) if compact
            else json.dumps(data, indent=2, sort_keys=True))
    write_bytes_atomic(path, (text + "\n").encode())


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` under a random temporary name beside ``path``, then rename it
    into place: readers see all or nothing (see write_json_atomic)."""
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
