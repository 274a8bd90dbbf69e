"""Build steps that run code slugbuild did not write, with the shared cache sealed.

A hook, a buildpack, collectstatic (the app's settings), the entry-point import
check and npm's scripts run as the builder, in the build directory, which lives
inside the cache (``CACHE/tmp/<token>.build.*/app``). Every file of the cache was
theirs to write: a planted kept part and its sidecar in another layer's
``packed/``, a rewritten ``files.json``, a cached runtime file; the checks after
the fact (sizes, mtimes, ctimes) can be forged consistently by a writer with the
builder's rights. So such a step runs in a private mount namespace in which the
cache root is bind-mounted read-only, except what the step must write: the build's
own scratch directory (the build directory in it) and what the caller names (a
buildpack's ``CACHE_DIR``, npm's cache).

The namespace is made by layer_overlay.py's mechanisms (``unshare --mount`` as
root, an unprivileged user namespace otherwise), and the step always runs in a
user namespace of its own nested in the mounting one, as the builder's own uid and
gid: it holds no capability over the mounts (it cannot unmount or remount the
binds, and any namespace it makes gets them locked), nor over processes outside its
namespace (``/proc/PID/root`` of a process in the builder's mount namespace, or
``ptrace``, need CAP_SYS_PTRACE over that process's user namespace). A step that
runs a program of the slug gets the seal and the layers' overlay in one namespace
(``context.StepLayers``).

The wrapper's status file (its own errors, then the mark that the step started) is
in a scratch directory of the seal's own, read-only in the namespace: the step can
neither forge nor erase the mark, so it cannot make the build believe the namespace
failed and run it again unsealed. A namespace that cannot be set up never fails the
build: the step runs unsealed, and the log says once that build steps can write the
shared cache (also where no namespace can be had at all, or with
``SLUGBUILD_SEAL_CACHE=0``).
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from . import errors
from .envflag import env_flag
from .layer_overlay import (
    UNSAFE_OPTION_CHARS,
    Mechanism,
    SealMounts,
    first_working,
    mechanism,
    probe_passes,
    remove_scratch,
    setup_failure,
    step_started,
)
from .log import Reporter

T = TypeVar("T")
SEAL_ENV = "SLUGBUILD_SEAL_CACHE"
# What an installer's run may write at the cache's top level: the installers' own
# caches (uv's, pip's, the per-environment built wheels) and tmp/ (only this build's and
# the install's own scratch entries there: the others are bound read-only).
INSTALLER_WRITES = frozenset({"uv", "pip", "built-wheels", "tmp"})
_found: dict[str, Mechanism | None] = {}


class StepRunner(Protocol):
    """How a step's command is started: ``start`` for ``argv``, wrapped as needed."""

    def run_step(self, argv: Sequence[str | Path], start: Callable[[list[str | Path]], T]) -> T:
        ...


class Unsealed:
    """A ``StepRunner`` that starts the command as it is: no build's cache to seal."""

    def run_step(self, argv: Sequence[str | Path], start: Callable[[list[str | Path]], T]) -> T:
        return start(list(argv))


def seal_wanted() -> bool:
    """SLUGBUILD_SEAL_CACHE=0 lets build steps write the cache, as before; a word it
    does not know keeps the seal (the safe side)."""
    return env_flag(SEAL_ENV, unset=True, unknown=True, empty=True)


def sealing_mechanism(scratch: Path) -> Mechanism | None:
    """The first mechanism that seals a directory here (a read-only bind with a
    writable one below it, the step dropped into a nested user namespace), tried once
    per process in ``scratch``; None when none works."""
    return first_working(_found, lambda candidate: _seals(candidate, scratch))


def _seals(candidate: Mechanism, scratch: Path) -> bool:
    base = Path(tempfile.mkdtemp(prefix="seal-probe.", dir=scratch))
    try:
        (base / "sealed" / "open").mkdir(parents=True)
        sealed, opened = base / "sealed", base / "sealed" / "open"
        probe = (f'echo > "{opened}/x" && ! (echo > "{sealed}/y") 2>/dev/null '
                 f'&& ! mount -o remount,rw "{sealed}" 2>/dev/null')
        command = candidate.command(base / "status", ["", "", str(sealed)],
                                    ["sh", "-c", probe], writable=[str(opened)], drop=True)
        return probe_passes(command) and (opened / "x").is_file() \
            and not (sealed / "y").exists()
    except OSError:
        return False
    finally:
        shutil.rmtree(base, ignore_errors=True)


@dataclass
class CacheSeal:
    """The seal of one build's cache: what its untrusted steps may write, how they are
    wrapped, and whether the log has said that they run unsealed."""

    root: Path  # the cache root: read-only for the step
    scratch: Path  # the build's scratch directory (the build directory in it): writable
    status_dir: Callable[[], Path]  # a new directory outside ``scratch`` (cache.scratch_dir)
    reporter: Reporter
    # Set when a namespace could not be set up at a step: the later steps run unsealed.
    failed: bool = False
    said_unsealed: bool = False
    _status_base: Path | None = None
    _runs: itertools.count[int] = field(default_factory=itertools.count)
    # The install runs in a thread of its own while the build's other steps run.
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # Set when the installer caches cannot be shown privately (``private_caches``).
    said_unguarded: bool = False
    guard_failed: bool = False
    # Install scratch directories whose wheel-only run failed: their later runs are
    # guarded at once (installers/common.py).
    building: set[Path] = field(default_factory=set)
    # The private caches of each install (by its scratch directory): its guarded runs
    # share them (a dry run's build serves the install), discarded when it ends.
    _private: dict[Path, PrivateCaches] = field(default_factory=dict)

    def mounts(self, writable: Sequence[Path] = ()) -> SealMounts | None:
        """The seal for one step (``writable``: what it may write besides the build's
        scratch), or None when steps run unsealed here (the log has said so)."""
        if seal_wanted() and not self.failed \
                and sealing_mechanism(self.scratch) is not None:
            with self._lock:
                if self._status_base is None:
                    self._status_base = self.status_dir()
                status = self._status_base / f"status.{next(self._runs)}"
            return SealMounts((str(self.root),),
                              tuple(str(path) for path in (self.scratch, *writable)), status)
        self.say_unsealed()
        return None

    def say_unsealed(self) -> None:
        """Once per build: the steps run with the builder's rights over the cache."""
        with self._lock:
            said, self.said_unsealed = self.said_unsealed, True
        if not said:
            why = (f"{SEAL_ENV} turned it off" if not seal_wanted() else
                   "no private mount namespace could be set up here")
            self.reporter.warn(
                f"Build steps can write the shared cache ({why}): a hook, buildpack or "
                f"app code of this build could change what other apps' builds restore. "
                f"Use one cache per app here (docs/security.md).")

    def command(self, argv: Sequence[str | Path], writable: Sequence[Path] = (),
                installer: bool = False, caches: PrivateCaches | None = None
                ) -> tuple[list[str | Path], Path] | None:
        """``argv`` wrapped to run sealed, and its status file; None: unsealed.
        ``installer``: sealed as an install (``installer_read_only``; ``writable``: the
        install's own scratch entries); ``caches``: the installer caches shown through
        private overlays (``private_caches``)."""
        seal = self.mounts(writable)
        found = sealing_mechanism(self.scratch)
        if seal is None or found is None:
            return None
        read_only, opened = ((self.installer_read_only(writable), ()) if installer
                             else (list(seal.read_only), seal.writable))
        if caches is not None:
            read_only += caches.read_only
        command = found.command(seal.status, ["", "", *read_only], argv, writable=opened,
                                drop=True, overlays=caches.overlays if caches else ())
        return (command, seal.status) if command is not None else None

    def guard_available(self) -> bool:
        """Whether an install run can be shown the installer caches through private
        overlays here (``private_caches``); the log says once when not."""
        found = sealing_mechanism(self.scratch) if seal_wanted() and not self.failed else None
        if found is not None and not self.guard_failed and mechanism(self.scratch) is found:
            return True
        self.say_unguarded("no private overlay can be mounted here")
        return False

    def private_caches(self, views: Sequence[PrivateView], scratch: Path,
                       read_only: Sequence[Path]) -> PrivateCaches | None:
        """``views`` for one install run, each an overlay mounted on its target: its
        lower directories (made if missing) read as they are, what the run writes
        taken by an upper and work directory in a new directory of ``scratch`` (the
        install's), discarded after the run (``PrivateCaches.discard``); ``read_only``
        bound read-only besides. None (said once) when overlays cannot be had here,
        a path cannot be given to one, or an entry cannot be hidden."""
        if not self.guard_available():
            return None
        found = sealing_mechanism(self.scratch)
        assert found is not None  # guard_available found it
        base = Path(tempfile.mkdtemp(prefix="cache-guard.", dir=scratch))
        overlays = []
        try:
            for number, view in enumerate(views):
                lowers = list(view.lowers)
                for lower in lowers:
                    lower.mkdir(parents=True, exist_ok=True)
                hidden = [name for name in view.hidden
                          if any((lower / name).exists() for lower in lowers[1:])]
                if hidden:  # empty opaque directories over the lowers after the first
                    hider = base / f"hide.{number}"
                    for name in hidden:
                        (hider / name).mkdir(parents=True)
                        os.setxattr(hider / name, f"{found.xattrs}opaque", b"y")
                    lowers.insert(1, hider)
                upper, work = base / f"upper.{number}", base / f"work.{number}"
                upper.mkdir()
                work.mkdir()
                view.target.mkdir(parents=True, exist_ok=True)
                overlays.append((str(view.target),
                                 f"lowerdir={':'.join(map(str, lowers))},upperdir={upper},"
                                 f"workdir={work}{found.options}"))
        except OSError as failure:
            remove_scratch(base)
            self.say_unguarded(f"the private caches could not be prepared: {failure}")
            return None
        named = [str(base), *(str(path) for view in views
                              for path in (view.target, *view.lowers))]
        if any(char in UNSAFE_OPTION_CHARS for path in named for char in path):
            remove_scratch(base)
            self.say_unguarded("a cache path holds a character an overlay cannot take")
            return None
        return PrivateCaches(base, tuple(overlays), tuple(map(str, read_only)))

    def install_caches(self, views: Sequence[PrivateView], scratch: Path,
                       read_only: Sequence[Path]) -> PrivateCaches | None:
        """``private_caches`` made once per install (``scratch``): its later guarded
        runs see what its earlier ones wrote (this app's own package code only);
        ``discard_install_caches`` when it ends."""
        with self._lock:
            made = self._private.get(scratch)
        if made is None:
            made = self.private_caches(views, scratch, read_only)
            if made is not None:
                with self._lock:
                    self._private[scratch] = made
        return made

    def discard_install_caches(self, scratch: Path) -> None:
        """What the guarded runs of the install in ``scratch`` wrote in the caches, gone."""
        with self._lock:
            made = self._private.pop(scratch, None)
        if made is not None:
            made.discard()

    def say_unguarded(self, why: str) -> None:
        """Once per build: an install's package builds run with the installer caches
        writable, as the seal alone leaves them (unsaid when the seal itself is off:
        ``say_unsealed`` covers it)."""
        with self._lock:
            said, self.said_unguarded = self.said_unguarded, True
        if not said and seal_wanted() and not self.failed:
            self.reporter.warn(
                f"Package builds during the install can write the shared installer caches "
                f"({why}): an sdist's setup.py could change what other apps' installs "
                f"take from them. Use one cache per app here (docs/security.md).")

    def guard_setup_failed(self, step: str, status: Path) -> None:
        """The overlays of the installer caches failed before ``step`` started: said,
        and the install's runs are sealed as before without them."""
        self.guard_failed = True
        self.say_unguarded(f"the overlays failed for {step}: {setup_failure(status)}")

    def installer_read_only(self, own: Sequence[Path] = ()) -> list[str]:
        """What an install run gets read-only: every entry of the cache root but the
        installers' caches and tmp/, and every entry of tmp/ but this build's scratch
        and the entries holding ``own`` (the install's scratch, the layer it makes).
        Not every entry of this process:
        builds run by one process (threads) share its lease token, and one app's
        package build could write another's build directory and the layer it makes.
        The root itself stays writable on its own mount: uv hard-links files from its
        cache into the layer being made under tmp/, which a bind between them would
        turn into copies (EXDEV); so every top-level store exists before any step runs
        (cache.TOP_DIRS, made when the cache is opened), or a package build could make
        it and plant what the next app's build takes (a tool under its known key)."""
        tmp = self.root / "tmp"
        mine = {self.scratch.name, *(path.relative_to(tmp).parts[0] for path in own
                                     if path.is_relative_to(tmp) and path != tmp)}
        entries = [entry for entry in _entries(self.root) if entry.name not in INSTALLER_WRITES]
        entries += [entry for entry in _entries(self.root / "tmp") if entry.name not in mine]
        return [str(entry) for entry in entries]

    def step(self, name: str, writable: Sequence[Path] = ()) -> SealedStep:
        """A ``StepRunner`` for the step ``name`` (``writable``: as for ``mounts``)."""
        return SealedStep(self, name, tuple(writable))

    def install_step(self, name: str, own: Sequence[Path] = (),
                     caches: PrivateCaches | None = None) -> SealedStep:
        """A ``StepRunner`` for an installer's run (uv, pip), which may run a
        package's build (setup.py): the layers, runtimes and stores of the cache and
        other builds' scratch read-only (``installer_read_only``; ``own``: the
        install's scratch entries, writable with the build's); with ``caches``, the
        installer caches shown through private overlays (``private_caches``)."""
        return SealedStep(self, name, tuple(own), installer=True, caches=caches)

    def explain_read_only(self, step: str, failure: Exception) -> None:
        """A step that failed on EROFS is told why before its error: it sees only the
        seal's "Read-only file system", and a legitimate write into the cache (a tool's
        cache under XDG_CACHE_HOME when --cache-dir is that directory) reads as a bug."""
        output = getattr(failure, "output", None)
        if not self.said_unsealed and isinstance(output, str) and ("Read-only file system" in output
                                        or "[Errno 30]" in output):
            self.reporter.warn(
                f"{step} met a read-only file system: build steps see slugbuild's cache "
                f"{self.root} read-only, except their own build directory (the seal, "
                f"docs/security.md). Have it write in the app directory or a temporary "
                f"directory, or give slugbuild a cache (--cache-dir) outside what it writes.")

    def setup_failed(self, step: str, status: Path) -> None:
        """The namespace failed before ``step`` started: said, and not tried again."""
        self.failed = True
        self.reporter.warn(f"The cache could not be sealed for {step} "
                           f"({setup_failure(status)}); it runs without the seal.")
        self.say_unsealed()

    def close(self) -> None:
        """The status files gone (the build's other scratch is disposed of apart), and
        any install's private caches."""
        for scratch in list(self._private):
            self.discard_install_caches(scratch)
        if self._status_base is not None:
            shutil.rmtree(self._status_base, ignore_errors=True)


@dataclass(frozen=True)
class SealedStep:
    """One untrusted step run sealed (``CacheSeal.step``)."""

    seal: CacheSeal
    name: str
    writable: tuple[Path, ...]
    installer: bool = False
    caches: PrivateCaches | None = None

    def run_step(self, argv: Sequence[str | Path], start: Callable[[list[str | Path]], T]) -> T:
        """``start`` for ``argv`` sealed; unsealed when the namespace could not be set
        up before the step started (told by the wrapper's mark, never by the exit
        code: the step may exit 125 too). A run with private caches whose namespace
        failed runs again sealed without them."""
        wrapped = self.seal.command(argv, self.writable, self.installer, self.caches)
        if wrapped is None:
            return start(list(argv))
        command, status = wrapped
        try:
            result = start(command)
        except Exception as failure:
            if step_started(status):
                self.seal.explain_read_only(self.name, failure)
                raise
            if isinstance(failure, errors.SlugbuildError):
                raise
        else:
            if step_started(status):
                return result
        if self.caches is not None:
            self.seal.guard_setup_failed(self.name, status)
            return SealedStep(self.seal, self.name, self.writable,
                              self.installer).run_step(argv, start)
        self.seal.setup_failed(self.name, status)
        return start(list(argv))


@dataclass(frozen=True)
class PrivateView:
    """A directory an install run sees through an overlay (``CacheSeal.private_caches``):
    its ``lowers`` merged (the first on top), less the ``hidden`` entries of the lowers
    after the first."""

    target: Path
    lowers: tuple[Path, ...]
    hidden: tuple[str, ...] = ()


@dataclass(frozen=True)
class PrivateCaches:
    """The installer caches as one install run sees them (``CacheSeal.private_caches``):
    the overlays (target, options), what the run writes kept in ``base``, and the
    shared directories bound read-only."""

    base: Path
    overlays: tuple[tuple[str, str], ...]
    read_only: tuple[str, ...]

    def discard(self) -> None:
        """What the run wrote in the caches, gone (the shared ones never changed)."""
        remove_scratch(self.base)


def _entries(directory: Path) -> list[Path]:
    """The entries of ``directory`` a bind can be put on (no symlink: a bind follows
    it), sorted; none when it cannot be listed."""
    try:
        return sorted(entry for entry in directory.iterdir() if not entry.is_symlink())
    except OSError:
        return []
