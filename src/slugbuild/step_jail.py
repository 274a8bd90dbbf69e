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
    Mechanism,
    SealMounts,
    first_working,
    probe_passes,
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
                installer: bool = False) -> tuple[list[str | Path], Path] | None:
        """``argv`` wrapped to run sealed, and its status file; None: unsealed.
        ``installer``: sealed as an install (``installer_read_only``; ``writable``: the
        install's own scratch entries)."""
        seal = self.mounts(writable)
        found = sealing_mechanism(self.scratch)
        if seal is None or found is None:
            return None
        read_only, opened = ((self.installer_read_only(writable), ()) if installer
                             else (seal.read_only, seal.writable))
        command = found.command(seal.status, ["", "", *read_only], argv, writable=opened,
                                drop=True)
        return (command, seal.status) if command is not None else None

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
        (cache.TOP_DIRS), or a package build could make it."""
        tmp = self.root / "tmp"
        mine = {self.scratch.name, *(path.relative_to(tmp).parts[0] for path in own
                                     if path.is_relative_to(tmp) and path != tmp)}
        entries = [entry for entry in _entries(self.root) if entry.name not in INSTALLER_WRITES]
        entries += [entry for entry in _entries(self.root / "tmp") if entry.name not in mine]
        return [str(entry) for entry in entries]

    def step(self, name: str, writable: Sequence[Path] = ()) -> SealedStep:
        """A ``StepRunner`` for the step ``name`` (``writable``: as for ``mounts``)."""
        return SealedStep(self, name, tuple(writable))

    def install_step(self, name: str, own: Sequence[Path] = ()) -> SealedStep:
        """A ``StepRunner`` for an installer's run (uv, pip), which may run a
        package's build (setup.py): the layers, runtimes and stores of the cache and
        other builds' scratch read-only (``installer_read_only``; ``own``: the
        install's scratch entries, writable with the build's)."""
        return SealedStep(self, name, tuple(own), installer=True)

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
        """The status files gone (the build's other scratch is disposed of apart)."""
        if self._status_base is not None:
            shutil.rmtree(self._status_base, ignore_errors=True)


@dataclass(frozen=True)
class SealedStep:
    """One untrusted step run sealed (``CacheSeal.step``)."""

    seal: CacheSeal
    name: str
    writable: tuple[Path, ...]
    installer: bool = False

    def run_step(self, argv: Sequence[str | Path], start: Callable[[list[str | Path]], T]) -> T:
        """``start`` for ``argv`` sealed; unsealed when the namespace could not be set
        up before the step started (told by the wrapper's mark, never by the exit
        code: the step may exit 125 too)."""
        wrapped = self.seal.command(argv, self.writable, self.installer)
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
        self.seal.setup_failed(self.name, status)
        return start(list(argv))


def _entries(directory: Path) -> list[Path]:
    """The entries of ``directory`` a bind can be put on (no symlink: a bind follows
    it), sorted; none when it cannot be listed."""
    try:
        return sorted(entry for entry in directory.iterdir() if not entry.is_symlink())
    except OSError:
        return []
